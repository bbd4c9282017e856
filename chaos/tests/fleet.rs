//! Fleet mode against a real etcd: experiments written by the CLI reach
//! every instance, outlive their writer, and go when their lease expires.

mod support;

use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::time::Instant;
use watertight_chaos::fleet::{etcd_client, prefix, Fleet, FleetClient, FleetWatch};
use watertight_chaos::{Abort, Action, ChaosController, Experiment, Fault, Origin, Target};
use watertight_core::Backoff;
use watertight_testkit::etcd::EtcdServer;

use support::*;

/// How long a test waits for what a local etcd does in well under a
/// second (lease expiry: within a second of the TTL).
const WAIT: Duration = Duration::from_secs(20);

/// Polls `cond` every 20 ms until it holds, failing after [`WAIT`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn instance(name: &str, zone: &str) -> ChaosController {
    ChaosController::builder()
        .name(name)
        .seed(1)
        .instance(endpoint("10.0.0.1:80", zone, "v1"))
        .audit_sink(watertight_chaos::AuditSink::writer(std::io::sink()))
        .build()
        .unwrap()
}

fn watch(etcd: &EtcdServer, chaos: &ChaosController) -> FleetWatch {
    Fleet::builder([etcd.endpoint()], "api")
        .reconnect_backoff(
            Backoff::equal_jitter(Duration::from_millis(50), Duration::from_millis(500)).unwrap(),
        )
        .seed(3)
        .watch(chaos)
        .unwrap()
}

async fn is_aborted(chaos: &ChaosController) -> bool {
    is_hit(chaos, Req::get("/")).await
}

/// Writes an experiment `name` aborting every request to the fleet of
/// service `api`, through a client of its own.
async fn start_in_fleet(etcd: &EtcdServer, name: &str) {
    FleetClient::connect([etcd.endpoint()], "api")
        .await
        .unwrap()
        .start(&always(name, 60, Fault::Abort(Abort::Error)))
        .await
        .unwrap();
}

/// Runs the tool on the fleet of service `api`.
async fn fleet_cli(etcd: &EtcdServer, args: &[&str]) -> Output {
    let endpoint = etcd.endpoint();
    let mut all = vec!["--etcd", endpoint.as_str(), "--service", "api"];
    all.extend_from_slice(args);
    chaos_cli(&all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_written_by_the_cli_reaches_every_instance_and_expires_with_its_lease() {
    let etcd = EtcdServer::start().await.unwrap();
    let in_a = instance("in-a", "a");
    let in_b = instance("in-b", "b");
    let (wa, wb) = (watch(&etcd, &in_a), watch(&etcd, &in_b));
    until("both watches are established", || {
        wa.is_connected() && wb.is_connected()
    })
    .await;

    // The writer follows its experiment (`--wait`) until it is killed.
    let endpoint = etcd.endpoint();
    let mut writer = tokio::process::Command::new(env!("CARGO_BIN_EXE_watertight-chaos"))
        .args([
            "--etcd",
            &endpoint,
            "--service",
            "api",
            "start",
            "--name",
            "zone-a-abort",
            "--duration",
            "3s",
            "--abort-error",
            "--zone",
            "a",
            "--wait",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    until("both instances run the experiment", || {
        in_a.experiment("zone-a-abort").is_some() && in_b.experiment("zone-a-abort").is_some()
    })
    .await;
    let key = format!("{}zone-a-abort", prefix("api"));
    let mut client = etcd.client().await.unwrap();
    let stored = client.get(key.as_str(), None).await.unwrap();
    let lease = stored.kvs()[0].lease();
    assert_ne!(lease, 0, "stored under a lease");
    let ttl = client.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(
        ttl.granted_ttl(),
        3,
        "the lease is the experiment's duration"
    );

    // Both instances run it; the target decides where it bites.
    assert!(is_aborted(&in_a).await, "zone a is targeted");
    assert!(!is_aborted(&in_b).await, "zone b is not");

    // The writer dies without a goodbye; the experiment still expires.
    writer.start_kill().unwrap();
    let status = writer.wait().await.unwrap();
    assert!(!status.success(), "killed, not finished");
    until("the lease removes the key", || {
        in_a.experiment("zone-a-abort").is_none() && in_b.experiment("zone-a-abort").is_none()
    })
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let left = client.get(key.as_str(), None).await.unwrap();
        if left.kvs().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the key outlived its lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!is_aborted(&in_a).await);
    for chaos in [&in_a, &in_b] {
        let audit = chaos.audit();
        assert_eq!(audit[0].action, Action::Start);
        assert_eq!(audit[0].by, Origin::Etcd);
        assert!(
            matches!(
                (audit[1].action, audit[1].by),
                (Action::Stop, Origin::Etcd) | (Action::Expire, Origin::Controller)
            ),
            "{audit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_stops_and_halts_a_fleet() {
    let etcd = EtcdServer::start().await.unwrap();
    let in_a = instance("in-a", "a");
    let wa = watch(&etcd, &in_a);
    until("the watch is established", || wa.is_connected()).await;
    let start = |name| {
        [
            "start",
            "--name",
            name,
            "--duration",
            "10m",
            "--hang",
            "--percent",
            "1",
        ]
    };
    for name in ["one", "two"] {
        let out = fleet_cli(&etcd, &start(name)).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = fleet_cli(&etcd, &start("one")).await;
    assert_eq!(out.status.code(), Some(1), "a second `one` is refused");
    assert!(
        stderr(&out).contains("already stored in etcd"),
        "{}",
        stderr(&out)
    );
    until("the instance runs both", || in_a.experiments().len() == 2).await;

    let out = fleet_cli(&etcd, &["--json", "list"]).await;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "two"]);
    let remaining = humantime::parse_duration(list[0]["remaining"].as_str().unwrap()).unwrap();
    assert!(remaining <= Duration::from_secs(600) && remaining > Duration::from_secs(500));

    let out = fleet_cli(&etcd, &["stop", "one"]).await;
    assert!(out.status.success());
    until("`one` stops", || in_a.experiment("one").is_none()).await;
    assert!(in_a.experiment("two").is_some());

    let out = fleet_cli(&etcd, &["halt"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "halted: two\n");
    until("`two` stops", || in_a.experiments().is_empty()).await;

    let out = fleet_cli(&etcd, &["audit"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "the audit lives on each instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_resumes_after_etcd_restarts_and_leaves_halted_experiments_halted() {
    let mut etcd = EtcdServer::start().await.unwrap();
    let in_a = instance("in-a", "a");
    let wa = watch(&etcd, &in_a);
    until("the watch is established", || wa.is_connected()).await;
    // An experiment this instance stops locally while its key stays.
    start_in_fleet(&etcd, "halted-here").await;
    until("the watch applies it", || {
        in_a.experiment("halted-here").is_some()
    })
    .await;
    in_a.stop("halted-here").unwrap();

    etcd.kill();
    until("the watch notices", || !wa.is_connected()).await;
    etcd.restart().await.unwrap();
    until("the watch is back", || wa.is_connected()).await;

    start_in_fleet(&etcd, "after-restart").await;
    until("the resumed watch applies it", || {
        in_a.experiment("after-restart").is_some()
    })
    .await;
    assert!(
        in_a.experiment("halted-here").is_none(),
        "a reconnection does not restart what was halted"
    );
    assert!(is_aborted(&in_a).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fleet_entries_are_refused_with_an_audit_record() {
    let etcd = EtcdServer::start().await.unwrap();
    let in_a = instance("in-a", "a");
    in_a.start(experiment("local", 60, Fault::Hang, 1.0, Target::all()))
        .unwrap();
    let wa = watch(&etcd, &in_a);
    until("the watch is established", || wa.is_connected()).await;
    let mut client = etcd.client().await.unwrap();
    let p = prefix("api");
    let lease = client.lease_grant(60, None).await.unwrap().id();
    let with_lease = Some(etcd_client::PutOptions::new().with_lease(lease));
    // Not JSON; no lease; another name than the key; a name clash.
    client
        .put(format!("{p}garbage"), "{", with_lease.clone())
        .await
        .unwrap();
    let valid = |name: &str| experiment(name, 60, Fault::Hang, 1.0, Target::all()).to_json();
    client
        .put(format!("{p}no-lease"), valid("no-lease"), None)
        .await
        .unwrap();
    client
        .put(format!("{p}mismatch"), valid("other"), with_lease.clone())
        .await
        .unwrap();
    client
        .put(format!("{p}local"), valid("local"), with_lease.clone())
        .await
        .unwrap();
    let too_long = Experiment::builder("too-long")
        .duration(Duration::from_secs(7200))
        .fault(Fault::Hang, 1.0)
        .build()
        .unwrap();
    client
        .put(format!("{p}too-long"), too_long.to_json(), with_lease)
        .await
        .unwrap();
    until("every entry is judged", || {
        in_a.audit()
            .iter()
            .filter(|r| r.action == Action::Reject)
            .count()
            == 5
    })
    .await;
    let rejected: Vec<(String, String)> = in_a
        .audit()
        .into_iter()
        .filter(|r| r.action == Action::Reject)
        .map(|r| (r.experiment.unwrap(), r.reason.unwrap()))
        .collect();
    let reason = |name: &str| &rejected.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(reason("garbage").contains("invalid experiment"));
    assert!(reason("no-lease").contains("without a lease"));
    assert!(reason("mismatch").contains("names `other`"));
    assert!(reason("local").contains("local experiment of that name"));
    assert!(reason("too-long").contains("max_experiment_duration"));
    assert_eq!(in_a.experiments().len(), 1, "only the local one runs");
}
