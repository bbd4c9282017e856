//! The admin HTTP API: experiments over HTTP, for a service to mount or to
//! serve on loopback.
//!
//! | request | answer |
//! |---|---|
//! | `GET /experiments` | `200`, the running experiments ([`ExperimentStatus`] list) |
//! | `POST /experiments` (an [experiment document](crate::experiment)) | `201`, its status |
//! | `GET /experiments/{name}` | `200`, its status; `404` |
//! | `DELETE /experiments/{name}` | `200`, its status as it stopped; `404` |
//! | `POST /halt` | `200`, `{"halted": [names]}` |
//! | `GET /audit` | `200`, the audit records kept in memory ([`AuditRecord`] list) |
//!
//! Every mutating call (`POST`, `DELETE`) needs `Authorization: Bearer
//! <token>` when the API has a token: `401` without one, `403` with a wrong
//! one. [`Admin::serve`] refuses to listen on a non-loopback address
//! without a token ([`ServeError::InsecureBind`]); a [`Router`] from
//! [`Admin::router`] without a token accepts mutations from anyone who can
//! reach it, so mount such a router only where only operators can.
//!
//! Errors are JSON, `{"error": "<code>", "message": "…", "field": "…"}`:
//!
//! | status | `error` |
//! |---|---|
//! | 400 | `invalid_experiment` (with `field`), `unknown_fault` (with `field` and `fault_type`), `bad_request` |
//! | 401 | `unauthorized` |
//! | 403 | `forbidden` |
//! | 404 | `not_found` |
//! | 409 | `already_running`, `too_many_experiments` |
//! | 413 | `payload_too_large` (bodies over [`Admin::body_limit`], 64 KiB by default) |
//!
//! No input makes a handler panic or answer a 5xx.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::audit::{AuditRecord, Origin};
use crate::controller::{ChaosController, ExperimentStatus};
use crate::error::{ExperimentError, StartError};
use crate::experiment::Experiment;

const TARGET: &str = "watertight_chaos";

/// The default largest request body.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Builds the admin API of one controller; see the [module docs](self).
///
/// ```no_run
/// use watertight_chaos::admin::Admin;
/// use watertight_chaos::ChaosController;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let chaos = ChaosController::new();
/// let server = Admin::new(chaos.clone())
///     .token(std::env::var("CHAOS_TOKEN")?)
///     .serve("127.0.0.1:9555".parse()?)
///     .await?;
/// println!("chaos admin API on {}", server.local_addr());
/// # Ok(()) }
/// ```
///
/// # Clone
///
/// Clones serve the same controller with the same settings.
#[derive(Clone)]
pub struct Admin {
    controller: ChaosController,
    token: Option<Arc<str>>,
    body_limit: usize,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("controller", &self.controller.name())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("body_limit", &self.body_limit)
            .finish()
    }
}

impl Admin {
    /// The API of `controller`, without a token, with a body limit of
    /// 64 KiB.
    pub fn new(controller: ChaosController) -> Self {
        Admin {
            controller,
            token: None,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// The bearer token every mutating call must carry. An empty token is
    /// no token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token: String = token.into();
        self.token = (!token.is_empty()).then(|| token.into());
        self
    }

    /// The largest request body accepted; larger ones get `413`.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The API as a router to mount (`Router::nest("/chaos", …)`).
    pub fn router(&self) -> Router {
        let api = Arc::new(self.clone());
        Router::new()
            .route("/experiments", get(list).post(start))
            .route("/experiments/{name}", get(show).delete(stop))
            .route("/halt", post(halt))
            .route("/audit", get(audit))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(self.body_limit))
            .with_state(api)
    }

    /// Listens on `addr` and serves the API in a task on the current
    /// runtime until the returned server is shut down or dropped.
    ///
    /// # Errors
    ///
    /// [`ServeError::InsecureBind`] for a non-loopback address without a
    /// token; [`ServeError::Io`] when the address cannot be bound.
    pub async fn serve(self, addr: SocketAddr) -> Result<AdminServer, ServeError> {
        if self.token.is_none() && !addr.ip().is_loopback() {
            return Err(ServeError::InsecureBind(addr));
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(ServeError::Io)?;
        let local_addr = listener.local_addr().map_err(ServeError::Io)?;
        let (tx, rx) = oneshot::channel::<()>();
        let router = self.router();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(target: TARGET, %error, "chaos admin API stopped");
            }
        });
        tracing::info!(
            target: TARGET,
            name = %self.controller.name(),
            addr = %local_addr,
            token = self.token.is_some(),
            "chaos admin API listening"
        );
        Ok(AdminServer {
            local_addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The refusal of a mutating call, if it is refused.
    fn refuse(&self, headers: &HeaderMap) -> Option<Response> {
        let token = self.token.as_ref()?;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        match given {
            None => {
                let mut res = error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this call needs `Authorization: Bearer <token>`",
                );
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                Some(res)
            }
            Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => None,
            Some(_) => Some(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the bearer token is wrong",
            )),
        }
    }
}

/// Compares without stopping at the first difference, so the time taken
/// says nothing about how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// A running admin API from [`Admin::serve`]. Dropping it stops the
/// server.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// The address it listens on (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and waits for those open to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Why [`Admin::serve`] did not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// The address is not a loopback address and the API has no token.
    InsecureBind(SocketAddr),
    /// The address could not be bound.
    Io(io::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::InsecureBind(addr) => write!(
                f,
                "refusing to serve the chaos admin API on non-loopback address {addr} without a token"
            ),
            ServeError::Io(e) => write!(f, "cannot bind the chaos admin API: {e}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServeError::Io(e) => Some(e),
            ServeError::InsecureBind(_) => None,
        }
    }
}

type Api = State<Arc<Admin>>;

fn error(status: StatusCode, code: &str, message: impl fmt::Display) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.to_string() })),
    )
        .into_response()
}

fn experiment_error(e: &ExperimentError) -> Response {
    let body = match e {
        ExperimentError::UnknownFault(u) => json!({
            "error": "unknown_fault",
            "field": u.field(),
            "fault_type": u.fault_type(),
            "message": e.to_string(),
        }),
        ExperimentError::Invalid(i) => json!({
            "error": "invalid_experiment",
            "field": i.field(),
            "message": e.to_string(),
        }),
    };
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn start_error(e: StartError) -> Response {
    match &e {
        StartError::Invalid(i) => experiment_error(&ExperimentError::Invalid(i.clone())),
        StartError::AlreadyRunning(_) => error(StatusCode::CONFLICT, "already_running", e),
        StartError::TooManyExperiments(_) => error(StatusCode::CONFLICT, "too_many_experiments", e),
        // Handlers run on a runtime; kept total for the type's sake.
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e),
    }
}

async fn list(State(api): Api) -> Json<Vec<ExperimentStatus>> {
    Json(api.controller.experiments())
}

async fn show(State(api): Api, Path(name): Path<String>) -> Response {
    match api.controller.experiment(&name) {
        Some(status) => Json(status).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format_args!("no experiment named `{name}` is running"),
        ),
    }
}

async fn start(
    State(api): Api,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(res) = api.refuse(&headers) {
        return res;
    }
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "payload_too_large"
            } else {
                "bad_request"
            };
            return error(status, code, rejection.body_text());
        }
    };
    let experiment = match Experiment::from_json(&body) {
        Ok(e) => e,
        Err(e) => return experiment_error(&e),
    };
    match api.controller.start_as(experiment, Origin::Admin) {
        Ok(status) => (StatusCode::CREATED, Json(status)).into_response(),
        Err(e) => start_error(e),
    }
}

async fn stop(State(api): Api, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(res) = api.refuse(&headers) {
        return res;
    }
    match api.controller.stop_as(&name, Origin::Admin) {
        Ok(status) => Json(status).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, "not_found", e),
    }
}

async fn halt(State(api): Api, headers: HeaderMap) -> Response {
    if let Some(res) = api.refuse(&headers) {
        return res;
    }
    let halted = api.controller.halt_as(Origin::Admin);
    Json(json!({ "halted": halted })).into_response()
}

async fn audit(State(api): Api) -> Json<Vec<AuditRecord>> {
    Json(api.controller.audit())
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
