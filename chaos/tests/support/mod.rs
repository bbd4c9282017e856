//! Helpers shared by the chaos test binaries.
#![allow(dead_code, unreachable_pub)]

use std::any::Any;
use std::convert::Infallible;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tower::{Layer, ServiceExt};
use watertight_chaos::{
    AuditRecord, AuditSink, ChaosController, ControllerBuilder, Experiment, Fault, Inspect, Target,
};
use watertight_core::ext::Extensions;
use watertight_core::{BoxError, Endpoint, Locality, Selected};

/// A request of a non-HTTP protocol, with what a target can match.
#[derive(Clone, Debug, Default)]
pub struct Req {
    pub method: Option<&'static str>,
    pub path: Option<&'static str>,
    pub headers: Vec<(&'static str, &'static str)>,
    pub selected: Option<Selected>,
}

impl Req {
    pub fn new() -> Self {
        Req::default()
    }

    pub fn get(path: &'static str) -> Self {
        Req {
            method: Some("GET"),
            path: Some(path),
            ..Req::default()
        }
    }

    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn to(mut self, endpoint: Endpoint) -> Self {
        self.selected = Some(Selected::new(Arc::new(endpoint)));
        self
    }
}

impl Extensions for Req {
    fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        (self.selected.as_ref()? as &dyn Any).downcast_ref::<T>()
    }
}

impl Inspect for Req {
    fn method(&self) -> Option<&str> {
        self.method
    }

    fn path(&self) -> Option<&str> {
        self.path
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_bytes())
    }
}

/// An endpoint in `zone` with label `version`.
pub fn endpoint(addr: &str, zone: &str, version: &str) -> Endpoint {
    Endpoint::new(addr.parse().unwrap())
        .with_locality(Locality::new("r", zone))
        .with_label("version", version)
}

/// An audit sink that keeps the lines it is given.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<u8>>>);

impl Lines {
    pub fn sink(&self) -> AuditSink {
        AuditSink::writer(self.clone())
    }

    /// Every record written so far, parsed back.
    pub fn records(&self) -> Vec<AuditRecord> {
        let bytes = self.0.lock().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A seeded controller builder writing its audit to `lines`.
pub fn builder(lines: &Lines) -> ControllerBuilder {
    ChaosController::builder()
        .name("test")
        .seed(42)
        .audit_sink(lines.sink())
}

/// A seeded controller.
pub fn controller() -> ChaosController {
    ChaosController::builder()
        .name("test")
        .seed(42)
        .audit_sink(AuditSink::writer(io::sink()))
        .build()
        .unwrap()
}

/// An experiment of one fault on `percent` of `target`, for `secs`.
pub fn experiment(name: &str, secs: u64, fault: Fault, percent: f64, target: Target) -> Experiment {
    Experiment::builder(name)
        .duration(Duration::from_secs(secs))
        .fault(fault, percent)
        .target(target)
        .build()
        .unwrap()
}

/// An experiment injecting `fault` into every request for `secs`.
pub fn always(name: &str, secs: u64, fault: Fault) -> Experiment {
    experiment(name, secs, fault, 100.0, Target::all())
}

/// A service answering the length of the request's path.
pub fn echo() -> impl tower::Service<
    Req,
    Response = usize,
    Error = Infallible,
    Future = std::future::Ready<Result<usize, Infallible>>,
> + Clone {
    tower::service_fn(|r: Req| std::future::ready(Ok(r.path.map_or(0, str::len))))
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One call through `svc`, once it is ready.
pub async fn call<S>(svc: &mut S, req: Req) -> Result<usize, BoxError>
where
    S: tower::Service<Req, Response = usize, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

/// Whether `req`, sent through `chaos`'s layer to [`echo`], fails.
pub async fn is_hit(chaos: &ChaosController, req: Req) -> bool {
    let mut svc = chaos.layer().layer(echo());
    call(&mut svc, req).await.is_err()
}

/// Runs the `watertight-chaos` tool with `args` and none of its
/// environment variables, failing the test if it takes over 30 s.
#[cfg(feature = "cli")]
pub async fn chaos_cli(args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_watertight-chaos"))
        .args(args)
        .env_remove("WATERTIGHT_CHAOS_URL")
        .env_remove("WATERTIGHT_CHAOS_TOKEN")
        .env_remove("WATERTIGHT_CHAOS_ETCD")
        .env_remove("WATERTIGHT_CHAOS_SERVICE")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the tool finishes in time")
        .expect("the tool runs")
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
