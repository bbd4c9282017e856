//! The admin HTTP API over a real socket: authentication, validation,
//! limits, and random input.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use watertight_chaos::admin::{Admin, AdminServer, ServeError};
use watertight_chaos::{Action, ChaosController, Origin};

use support::*;

const TOKEN: &str = "s3cret-token";
/// How long one exchange with the local server may take.
const WAIT: Duration = Duration::from_secs(20);

struct Api {
    server: AdminServer,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    async fn start(chaos: &ChaosController) -> Api {
        let server = Admin::new(chaos.clone())
            .token(TOKEN)
            .body_limit(4096)
            .serve("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        Api {
            server,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: impl Into<Bytes>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr()));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(body.into())).unwrap();
        let exchange = async {
            let res = self.client.request(req).await.unwrap();
            let status = res.status();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, value)
        };
        tokio::time::timeout(WAIT, exchange)
            .await
            .expect("the admin API answers in time")
    }

    async fn post(&self, path: &str, body: impl Into<Bytes>) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(TOKEN), body).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None, Bytes::new()).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(TOKEN), Bytes::new())
            .await
    }
}

fn doc(name: &str) -> String {
    json!({
        "name": name,
        "duration": "10m",
        "target": {"path_prefix": "/api"},
        "faults": [{"type": "abort", "percent": 5, "status": 503}]
    })
    .to_string()
}

#[tokio::test]
async fn mutating_calls_need_a_bearer_token() {
    let chaos = controller();
    let api = Api::start(&chaos).await;
    for (method, path, body) in [
        (Method::POST, "/experiments", doc("e1")),
        (Method::DELETE, "/experiments/e1", String::new()),
        (Method::POST, "/halt", String::new()),
    ] {
        let (status, body_json) = api.call(method.clone(), path, None, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(body_json["error"], "unauthorized");
        let (status, body_json) = api.call(method.clone(), path, Some("guess"), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(body_json["error"], "forbidden");
    }
    assert!(chaos.experiments().is_empty(), "nothing was started");
    assert!(chaos.audit().is_empty(), "nothing happened");
    // Another scheme is no bearer token.
    let req = Request::post(format!("http://{}/halt", api.addr()))
        .header("authorization", format!("Basic {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = api.client.request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn experiments_are_started_listed_shown_and_stopped() {
    let chaos = controller();
    let api = Api::start(&chaos).await;
    let (status, body) = api.post("/experiments", doc("api-e")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["experiment"]["name"], "api-e");
    assert_eq!(body["origin"], "admin");
    assert!(chaos.experiment("api-e").is_some());

    let (status, body) = api.get("/experiments").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().unwrap().len(), 1);
    let (status, body) = api.get("/experiments/api-e").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["experiment"]["faults"][0]["status"], 503);

    let (status, body) = api.post("/experiments", doc("api-e")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "already_running");

    let (status, _) = api.delete("/experiments/api-e").await;
    assert_eq!(status, StatusCode::OK);
    assert!(chaos.experiments().is_empty());
    let (status, body) = api.get("/experiments/api-e").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    let (status, _) = api.delete("/experiments/api-e").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = api.get("/audit").await;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<(&str, &str)> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), r["by"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("start", "admin"), ("stop", "admin")]);
}

#[tokio::test]
async fn halt_over_http_stops_everything() {
    let chaos = controller();
    let api = Api::start(&chaos).await;
    for name in ["h1", "h2"] {
        assert_eq!(
            api.post("/experiments", doc(name)).await.0,
            StatusCode::CREATED
        );
    }
    let (status, body) = api.post("/halt", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["halted"], json!(["h1", "h2"]));
    assert!(chaos.experiments().is_empty());
    let last = chaos.audit().pop().unwrap();
    assert_eq!((last.action, last.by), (Action::Halt, Origin::Admin));
}

#[tokio::test]
async fn validation_errors_are_400_naming_the_field() {
    let chaos = controller();
    let api = Api::start(&chaos).await;
    let cases = [
        (json!({"duration": "1m", "faults": []}), "name"),
        (
            json!({"name": "x", "faults": [{"type": "hang", "percent": 1}]}),
            "duration",
        ),
        (
            json!({"name": "x", "duration": "1m", "faults": [{"type": "hang", "percent": 500}]}),
            "faults[0].percent",
        ),
        (
            json!({"name": "x", "duration": "1m", "faults": [{"type": "abort", "percent": 1, "status": 99}]}),
            "faults[0].status",
        ),
        (
            json!({"name": "x", "duration": "2h", "faults": [{"type": "hang", "percent": 1}]}),
            "duration",
        ),
        (
            json!({"name": "x", "duration": "1m", "faults": [{"type": "hang", "percent": 1}],
                   "abort_when": {"error_rate_above": 2}}),
            "abort_when.error_rate_above",
        ),
        (json!([1, 2]), "."),
    ];
    for (body, field) in cases {
        let (status, answer) = api.post("/experiments", body.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["error"], "invalid_experiment", "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
        assert!(answer["message"]
            .as_str()
            .unwrap()
            .contains("invalid experiment"));
    }
    let (status, answer) = api.post("/experiments", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["field"], ".");
}

#[tokio::test]
async fn unknown_fault_types_are_400() {
    let chaos = controller();
    let api = Api::start(&chaos).await;
    let body = json!({"name": "x", "duration": "1m",
                      "faults": [{"type": "meteor", "percent": 1}]});
    let (status, answer) = api.post("/experiments", body.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "unknown_fault");
    assert_eq!(answer["field"], "faults[0].type");
    assert_eq!(answer["fault_type"], "meteor");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let chaos = controller();
    let api = Api::start(&chaos).await;
    let big = format!(
        r#"{{"name": "big", "duration": "1m", "faults": [{{"type": "hang", "percent": 1}}], "target": {{"path_prefix": "/{}"}}}}"#,
        "a".repeat(5000)
    );
    let (status, answer) = api.post("/experiments", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"], "payload_too_large");
    assert!(chaos.experiments().is_empty());
}

#[tokio::test]
async fn unknown_routes_are_404() {
    let chaos = controller();
    let api = Api::start(&chaos).await;
    let (status, answer) = api.get("/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"], "not_found");
}

#[tokio::test]
async fn serve_refuses_a_non_loopback_address_without_a_token() {
    let err = Admin::new(ChaosController::new())
        .serve("0.0.0.0:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::InsecureBind(_)), "{err}");
    assert!(err.to_string().contains("without a token"));
    let err = Admin::new(ChaosController::new())
        .token("")
        .serve("0.0.0.0:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServeError::InsecureBind(_)),
        "an empty token is no token"
    );
    // Loopback without a token, and any address with one, are allowed.
    let local = Admin::new(ChaosController::new())
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    local.shutdown().await;
    let open = Admin::new(ChaosController::new())
        .token(TOKEN)
        .serve("0.0.0.0:0".parse().unwrap())
        .await
        .unwrap();
    open.shutdown().await;
}

#[tokio::test]
async fn without_a_token_a_loopback_api_accepts_mutations() {
    let chaos = controller();
    let server = Admin::new(chaos.clone())
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{}/experiments", server.local_addr()))
        .body(Full::new(Bytes::from(doc("open"))))
        .unwrap();
    let res = tokio::time::timeout(WAIT, client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(chaos.experiment("open").is_some());
}

/// Any JSON value, with keys an experiment uses and some it does not.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("name".to_owned()),
        Just("duration".to_owned()),
        Just("faults".to_owned()),
        Just("target".to_owned()),
        Just("abort_when".to_owned()),
        Just("type".to_owned()),
        Just("percent".to_owned()),
        Just("status".to_owned()),
        Just("fixed".to_owned()),
        Just("median".to_owned()),
        Just("p99".to_owned()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop_oneof![
            Just("latency".to_owned()),
            Just("abort".to_owned()),
            Just("10ms".to_owned()),
            Just("99999999h".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid experiment with one field replaced by anything.
fn mutated_experiment() -> impl Strategy<Value = Vec<u8>> {
    let fields = prop_oneof![
        Just("name"),
        Just("duration"),
        Just("faults"),
        Just("target"),
        Just("abort_when")
    ];
    (fields, json_value()).prop_map(|(field, value)| {
        let mut exp = json!({
            "name": "fuzz",
            "duration": "1m",
            "faults": [{"type": "latency", "percent": 1, "fixed": "5ms"}],
        });
        exp[field] = value;
        exp.to_string().into_bytes()
    })
}

#[test]
fn random_and_malformed_bodies_never_get_a_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let chaos = ChaosController::builder()
        .audit_capacity(0)
        .audit_sink(watertight_chaos::AuditSink::writer(std::io::sink()))
        .build()
        .unwrap();
    let api = rt.block_on(Api::start(&chaos));
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        mutated_experiment(),
        mutated_experiment().prop_map(|mut b| {
            b.truncate(b.len() / 2);
            b
        }),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 192,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&bodies, |body| {
            let (status, answer) = rt.block_on(api.post("/experiments", body));
            prop_assert!(
                [
                    StatusCode::CREATED,
                    StatusCode::BAD_REQUEST,
                    StatusCode::PAYLOAD_TOO_LARGE
                ]
                .contains(&status),
                "status {status}: {answer}"
            );
            if status == StatusCode::BAD_REQUEST {
                prop_assert!(answer["field"].is_string(), "{answer}");
            }
            chaos.halt_all();
            Ok(())
        })
        .unwrap();
    // Random paths and methods are no more trouble.
    let paths = "/[a-z%{}./]{0,20}";
    runner
        .run(&(paths, 0..4usize), |(path, m)| {
            let method = [Method::GET, Method::POST, Method::DELETE, Method::PUT][m].clone();
            if http::Uri::try_from(format!("http://{}{path}", api.addr())).is_err() {
                return Ok(());
            }
            let (status, _) = rt.block_on(api.call(method, &path, Some(TOKEN), Bytes::new()));
            prop_assert!(!status.is_server_error(), "{path}: {status}");
            chaos.halt_all();
            Ok(())
        })
        .unwrap();
}
