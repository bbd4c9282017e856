//! The `watertight-chaos` command-line tool, as a library: [`run`] is the
//! whole program, the binary only calls it.
//!
//! ```text
//! watertight-chaos --url http://127.0.0.1:9555 start --name slow-c --duration 10m \
//!     --latency 200ms --percent 5 --zone c
//! watertight-chaos --url http://127.0.0.1:9555 list
//! watertight-chaos --url http://127.0.0.1:9555 halt
//! watertight-chaos --etcd http://10.0.0.5:2379 --service api start --file game-day.toml --wait
//! ```
//!
//! It talks to one service's [admin API](crate::admin) (`--url`, with
//! `--token` or `WATERTIGHT_CHAOS_TOKEN`), or to a whole fleet through etcd
//! (`--etcd` and `--service`, feature `etcd`): `list`, `start` (from flags,
//! or a TOML or JSON [experiment document](crate::experiment) with
//! `--file`), `stop NAME`, `halt`, and `audit` (one service only: each
//! instance keeps its own). Output is a table, or JSON with `--json`.
//! `start --wait` follows the experiment until it ends and stops it on
//! Ctrl-C; killed outright, it leaves the experiment to its time to live.
//!
//! Exit codes: 0 success; 1 the experiment or the request was refused
//! (invalid, unknown, a name clash, a wrong token); 2 a usage error; 3 the
//! service or etcd could not be reached or answered nonsense.

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::audit::AuditRecord;
use crate::controller::ExperimentStatus;
use crate::experiment::Experiment;
use crate::fault::{Abort, Fault, Latency};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "watertight-chaos",
    version,
    about = "Start, watch and halt fault-injection experiments on a service or a fleet",
    after_help = "Exit codes: 0 success, 1 refused (invalid, unknown, clash, token), 2 usage, 3 unreachable."
)]
pub struct Cli {
    /// The admin API of one service, `http://host:port` (the path of a
    /// mounted API included, if any).
    #[arg(long, env = "WATERTIGHT_CHAOS_URL", global = true)]
    url: Option<String>,
    /// The bearer token of the admin API.
    #[arg(
        long,
        env = "WATERTIGHT_CHAOS_TOKEN",
        global = true,
        hide_env_values = true
    )]
    token: Option<String>,
    /// etcd endpoints, comma-separated, to act on a whole fleet.
    #[arg(
        long,
        env = "WATERTIGHT_CHAOS_ETCD",
        value_delimiter = ',',
        global = true
    )]
    etcd: Vec<String>,
    /// The service whose fleet to act on (with `--etcd`).
    #[arg(long, env = "WATERTIGHT_CHAOS_SERVICE", global = true)]
    service: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for each answer.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the running experiments.
    List,
    /// Start an experiment, from flags or a file.
    Start(Box<StartArgs>),
    /// Stop an experiment before its time.
    Stop {
        /// The experiment's name.
        name: String,
    },
    /// Stop every experiment (and, on a service, header-triggered faults).
    Halt,
    /// Show a service's audit log.
    Audit,
}

#[derive(Debug, Args)]
struct StartArgs {
    /// A TOML or JSON experiment document (`-` reads standard input).
    #[arg(long, short, conflicts_with_all = ["name", "duration"])]
    file: Option<PathBuf>,
    /// The experiment's name.
    #[arg(long)]
    name: Option<String>,
    /// How long it runs (`30s`, `10m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// The share of targeted requests each fault hits, `0`–`100`.
    #[arg(long, default_value_t = 100.0)]
    percent: f64,
    /// Latency: `200ms` (fixed), `50ms..200ms` (uniform), or the median
    /// with `--latency-p99` (log-normal).
    #[arg(long)]
    latency: Option<String>,
    /// The 99th percentile of a log-normal latency.
    #[arg(long, value_parser = humantime::parse_duration, requires = "latency")]
    latency_p99: Option<Duration>,
    /// Abort with this HTTP status.
    #[arg(long)]
    abort: Option<u16>,
    /// Abort with this gRPC status code.
    #[arg(long)]
    abort_grpc: Option<u16>,
    /// Abort with an error (no status).
    #[arg(long)]
    abort_error: bool,
    /// Never answer.
    #[arg(long)]
    hang: bool,
    /// Make services unavailable (`poll_ready` pending) this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    unavailable: Option<Duration>,
    /// Stream response bodies at this many bytes per second.
    #[arg(long)]
    throttle: Option<u64>,
    /// End response bodies after this many bytes.
    #[arg(long)]
    truncate: Option<u64>,
    /// Target: the request method.
    #[arg(long)]
    method: Option<String>,
    /// Target: a path prefix.
    #[arg(long)]
    path_prefix: Option<String>,
    /// Target: a header, `name=value` (repeatable).
    #[arg(long = "header", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Target: the endpoint's region.
    #[arg(long)]
    region: Option<String>,
    /// Target: the endpoint's zone.
    #[arg(long)]
    zone: Option<String>,
    /// Target: the endpoint's subzone.
    #[arg(long)]
    subzone: Option<String>,
    /// Target: an endpoint label, `key=value` (repeatable).
    #[arg(long = "label", value_parser = key_value)]
    labels: Vec<(String, String)>,
    /// Abort the experiment when the error rate exceeds this fraction.
    #[arg(long)]
    abort_when_error_rate: Option<f64>,
    /// Abort the experiment when the p99 latency exceeds this.
    #[arg(long, value_parser = humantime::parse_duration)]
    abort_when_p99: Option<Duration>,
    /// The guard's window (default 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    abort_when_window: Option<Duration>,
    /// The calls the guard's window needs before it judges (default 20).
    #[arg(long)]
    abort_when_min_calls: Option<u64>,
    /// Follow the experiment until it ends; Ctrl-C stops it.
    #[arg(long)]
    wait: bool,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected `key=value`, got {s:?}"))
}

/// A failure of the tool, with its exit code.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    message: String,
}

impl CliError {
    fn refused(message: impl fmt::Display) -> Self {
        CliError {
            code: 1,
            message: message.to_string(),
        }
    }

    fn usage(message: impl fmt::Display) -> Self {
        CliError {
            code: 2,
            message: message.to_string(),
        }
    }

    fn unreachable(message: impl fmt::Display) -> Self {
        CliError {
            code: 3,
            message: message.to_string(),
        }
    }

    /// The process exit code: 1 refused, 2 usage, 3 unreachable.
    pub fn exit_code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Runs the tool with `args` (the program name first), printing to
/// standard output and errors to standard error; returns the exit code.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("watertight-chaos: cannot start a runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let mut out = std::io::stdout();
    match runtime.block_on(run(cli, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("watertight-chaos: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs one command, writing its output to `out`.
///
/// # Errors
///
/// A [`CliError`] saying what went wrong, with its exit code.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let mut backend = Backend::open(&cli).await?;
    let json = cli.json;
    let text = match cli.command {
        Command::List => {
            let list = backend.list().await?;
            if json {
                to_json(&list)
            } else {
                list_table(&list)
            }
        }
        Command::Start(args) => {
            let experiment = experiment_from(&args)?;
            let started = backend.start(&experiment).await?;
            let text = if json {
                to_json(&started)
            } else {
                format!(
                    "started `{}` for {} ({})\n",
                    started.experiment.name,
                    humantime::format_duration(started.remaining),
                    faults_text(&started.experiment)
                )
            };
            if args.wait {
                write_out(out, &text)?;
                return wait_for(&mut backend, &started.experiment.name, json, out).await;
            }
            text
        }
        Command::Stop { name } => {
            let stopped = backend.stop(&name).await?;
            if json {
                to_json(&json!({ "stopped": stopped }))
            } else {
                format!("stopped `{stopped}`\n")
            }
        }
        Command::Halt => {
            let halted = backend.halt().await?;
            if json {
                to_json(&json!({ "halted": halted }))
            } else if halted.is_empty() {
                "halted: no experiment was running\n".to_owned()
            } else {
                format!("halted: {}\n", halted.join(", "))
            }
        }
        Command::Audit => {
            let records = backend.audit().await?;
            if json {
                to_json(&records)
            } else {
                audit_table(&records)
            }
        }
    };
    write_out(out, &text)
}

fn write_out(out: &mut (dyn Write + Send), text: &str) -> Result<(), CliError> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::usage(format!("cannot write the output: {e}")))
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("output serializes");
    s.push('\n');
    s
}

/// One experiment as the tool shows it, from a service or from etcd.
#[derive(Debug, serde::Serialize)]
struct Row {
    #[serde(flatten)]
    experiment: Experiment,
    #[serde(with = "humantime_serde")]
    remaining: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    injected: Option<u64>,
}

impl From<ExperimentStatus> for Row {
    fn from(s: ExperimentStatus) -> Self {
        Row {
            experiment: s.experiment,
            remaining: s.remaining,
            origin: Some(s.origin.to_string()),
            injected: Some(s.injected),
        }
    }
}

fn faults_text(e: &Experiment) -> String {
    e.faults
        .iter()
        .map(|f| format!("{} on {}", f.fault, f.percent))
        .collect::<Vec<_>>()
        .join("; ")
}

fn target_text(e: &Experiment) -> String {
    let t = &e.target;
    let mut parts = Vec::new();
    if let Some(m) = &t.method {
        parts.push(format!("method={m}"));
    }
    if let Some(p) = &t.path_prefix {
        parts.push(format!("path={p}*"));
    }
    for (k, v) in &t.headers {
        parts.push(format!("{k}: {v}"));
    }
    for (name, v) in [
        ("region", &t.region),
        ("zone", &t.zone),
        ("subzone", &t.subzone),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name}={v}"));
        }
    }
    for (k, v) in &t.labels {
        parts.push(format!("{k}={v}"));
    }
    if parts.is_empty() {
        "all".to_owned()
    } else {
        parts.join(" ")
    }
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

fn list_table(rows: &[Row]) -> String {
    if rows.is_empty() {
        return "no experiment running\n".to_owned();
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.experiment.name.clone(),
                humantime::format_duration(Duration::from_secs(r.remaining.as_secs())).to_string(),
                r.origin.clone().unwrap_or_else(|| "etcd".to_owned()),
                r.injected.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                target_text(&r.experiment),
                faults_text(&r.experiment),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "REMAINING",
            "ORIGIN",
            "INJECTED",
            "TARGET",
            "FAULTS",
        ],
        &body,
    )
}

fn audit_table(records: &[AuditRecord]) -> String {
    if records.is_empty() {
        return "no audit records\n".to_owned();
    }
    let body: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.seq.to_string(),
                humantime::format_rfc3339_seconds(r.time).to_string(),
                r.action.to_string(),
                r.experiment.clone().unwrap_or_else(|| "-".to_owned()),
                r.by.to_string(),
                r.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["SEQ", "TIME", "ACTION", "EXPERIMENT", "BY", "REASON"],
        &body,
    )
}

/// The experiment the flags or the file describe.
fn experiment_from(args: &StartArgs) -> Result<Experiment, CliError> {
    if let Some(path) = &args.file {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
                .map_err(|e| CliError::usage(format!("cannot read standard input: {e}")))?
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?
        };
        let looks_json =
            path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
        let exp = if looks_json {
            Experiment::from_json(text.as_bytes())
        } else {
            Experiment::from_toml(&text)
        };
        return exp.map_err(|e| CliError::refused(format!("{}: {e}", path.display())));
    }
    let name = args
        .name
        .clone()
        .ok_or_else(|| CliError::usage("start needs `--name` (or `--file`)"))?;
    let duration = args.duration.ok_or_else(|| {
        CliError::usage("start needs `--duration`, the experiment's time to live")
    })?;
    let mut faults = Vec::new();
    if let Some(l) = &args.latency {
        faults.push(Fault::Latency(parse_latency(l, args.latency_p99)?));
    }
    match (args.abort, args.abort_grpc, args.abort_error) {
        (Some(s), None, false) => faults.push(Fault::Abort(Abort::Http(s))),
        (None, Some(g), false) => faults.push(Fault::Abort(Abort::Grpc(g))),
        (None, None, true) => faults.push(Fault::Abort(Abort::Error)),
        (None, None, false) => {}
        _ => {
            return Err(CliError::usage(
                "give one of `--abort`, `--abort-grpc` and `--abort-error`",
            ))
        }
    }
    if args.hang {
        faults.push(Fault::Hang);
    }
    if let Some(d) = args.unavailable {
        faults.push(Fault::Unavailable(d));
    }
    if let Some(b) = args.throttle {
        faults.push(Fault::Throttle {
            bytes_per_second: b,
        });
    }
    if let Some(b) = args.truncate {
        faults.push(Fault::Truncate { after_bytes: b });
    }
    if faults.is_empty() {
        return Err(CliError::usage(
            "start needs a fault: `--latency`, `--abort`, `--abort-grpc`, `--abort-error`, \
             `--hang`, `--unavailable`, `--throttle` or `--truncate`",
        ));
    }
    let mut target = crate::Target::all();
    target.method = args.method.clone();
    target.path_prefix = args.path_prefix.clone();
    target.headers = args.headers.iter().cloned().collect();
    target.region = args.region.clone();
    target.zone = args.zone.clone();
    target.subzone = args.subzone.clone();
    target.labels = args.labels.iter().cloned().collect();
    let mut builder = Experiment::builder(name).duration(duration).target(target);
    for f in faults {
        builder = builder.fault(f, args.percent);
    }
    let guard = match (args.abort_when_error_rate, args.abort_when_p99) {
        (Some(rate), p99) => {
            let g = crate::AbortWhen::error_rate_above(rate);
            Some(match p99 {
                Some(p) => g.or_p99_above(p),
                None => g,
            })
        }
        (None, Some(p99)) => Some(crate::AbortWhen::p99_above(p99)),
        (None, None) => None,
    };
    if let Some(mut guard) = guard {
        if let Some(w) = args.abort_when_window {
            guard = guard.window(w);
        }
        if let Some(n) = args.abort_when_min_calls {
            guard = guard.min_calls(n);
        }
        builder = builder.abort_when(guard);
    } else if args.abort_when_window.is_some() || args.abort_when_min_calls.is_some() {
        return Err(CliError::usage(
            "`--abort-when-window` and `--abort-when-min-calls` need `--abort-when-error-rate` or `--abort-when-p99`",
        ));
    }
    builder.build().map_err(CliError::refused)
}

fn parse_latency(s: &str, p99: Option<Duration>) -> Result<Latency, CliError> {
    let d = |x: &str| {
        humantime::parse_duration(x.trim())
            .map_err(|e| CliError::usage(format!("invalid `--latency` {s:?}: {e}")))
    };
    match (s.split_once(".."), p99) {
        (Some((min, max)), None) => Ok(Latency::uniform(d(min)?, d(max)?)),
        (Some(_), Some(_)) => Err(CliError::usage(
            "`--latency-p99` goes with a median `--latency`, not a range",
        )),
        (None, Some(p99)) => Ok(Latency::log_normal(d(s)?, p99)),
        (None, None) => Ok(Latency::fixed(d(s)?)),
    }
}

// One per run of the tool: the size difference of the variants is moot.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Admin(AdminClient),
    #[cfg(feature = "etcd")]
    Fleet(crate::fleet::FleetClient, Duration),
}

impl Backend {
    async fn open(cli: &Cli) -> Result<Backend, CliError> {
        match (&cli.url, cli.etcd.is_empty()) {
            (Some(_), false) => Err(CliError::usage("give `--url` or `--etcd`, not both")),
            (Some(url), true) => Ok(Backend::Admin(AdminClient::new(
                url,
                cli.token.clone(),
                cli.timeout,
            )?)),
            (None, false) => Self::fleet(cli).await,
            (None, true) => Err(CliError::usage(
                "give the service's admin API (`--url`) or a fleet (`--etcd` and `--service`)",
            )),
        }
    }

    #[cfg(feature = "etcd")]
    async fn fleet(cli: &Cli) -> Result<Backend, CliError> {
        let service = cli
            .service
            .as_deref()
            .ok_or_else(|| CliError::usage("`--etcd` needs `--service`"))?;
        let options = crate::fleet::etcd_client::ConnectOptions::new()
            .with_connect_timeout(cli.timeout)
            .with_timeout(cli.timeout);
        let connect = crate::fleet::FleetClient::connect_with(cli.etcd.clone(), service, options);
        match tokio::time::timeout(cli.timeout, connect).await {
            Ok(Ok(client)) => Ok(Backend::Fleet(client, cli.timeout)),
            Ok(Err(e)) => Err(fleet_error(e)),
            Err(_) => Err(CliError::unreachable(format!(
                "etcd at {} did not answer within {}",
                cli.etcd.join(","),
                humantime::format_duration(cli.timeout)
            ))),
        }
    }

    #[cfg(not(feature = "etcd"))]
    async fn fleet(_: &Cli) -> Result<Backend, CliError> {
        Err(CliError::usage(
            "this build has no fleet mode: rebuild with feature `etcd`",
        ))
    }

    async fn list(&mut self) -> Result<Vec<Row>, CliError> {
        match self {
            Backend::Admin(a) => {
                let list: Vec<ExperimentStatus> =
                    a.call_json(Method::GET, "/experiments", None).await?;
                Ok(list.into_iter().map(Row::from).collect())
            }
            #[cfg(feature = "etcd")]
            Backend::Fleet(f, t) => {
                let list = within(*t, f.list()).await?;
                Ok(list
                    .into_iter()
                    .map(|e| Row {
                        experiment: e.experiment,
                        remaining: e.remaining,
                        origin: None,
                        injected: None,
                    })
                    .collect())
            }
        }
    }

    async fn start(&mut self, exp: &Experiment) -> Result<Row, CliError> {
        match self {
            Backend::Admin(a) => {
                let status: ExperimentStatus = a
                    .call_json(Method::POST, "/experiments", Some(exp.to_json()))
                    .await?;
                Ok(status.into())
            }
            #[cfg(feature = "etcd")]
            Backend::Fleet(f, t) => {
                let entry = within(*t, f.start(exp)).await?;
                Ok(Row {
                    experiment: entry.experiment,
                    remaining: entry.remaining,
                    origin: None,
                    injected: None,
                })
            }
        }
    }

    /// The experiment's remaining time, `None` once it has ended.
    async fn remaining(&mut self, name: &str) -> Result<Option<Duration>, CliError> {
        match self {
            Backend::Admin(a) => {
                let (status, body) = a
                    .call(Method::GET, &format!("/experiments/{name}"), None)
                    .await?;
                if status == StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                let s: ExperimentStatus = a.decode(status, &body)?;
                Ok(Some(s.remaining))
            }
            #[cfg(feature = "etcd")]
            Backend::Fleet(f, t) => Ok(within(*t, f.get(name)).await?.map(|e| e.remaining)),
        }
    }

    async fn stop(&mut self, name: &str) -> Result<String, CliError> {
        match self {
            Backend::Admin(a) => {
                let status: ExperimentStatus = a
                    .call_json(Method::DELETE, &format!("/experiments/{name}"), None)
                    .await?;
                Ok(status.experiment.name)
            }
            #[cfg(feature = "etcd")]
            Backend::Fleet(f, t) => {
                if within(*t, f.stop(name)).await? {
                    Ok(name.to_owned())
                } else {
                    Err(CliError::refused(format!(
                        "no experiment named `{name}` is stored in etcd"
                    )))
                }
            }
        }
    }

    async fn halt(&mut self) -> Result<Vec<String>, CliError> {
        match self {
            Backend::Admin(a) => {
                let v: Value = a.call_json(Method::POST, "/halt", None).await?;
                Ok(v["halted"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default())
            }
            #[cfg(feature = "etcd")]
            Backend::Fleet(f, t) => within(*t, f.halt()).await,
        }
    }

    async fn audit(&mut self) -> Result<Vec<AuditRecord>, CliError> {
        match self {
            Backend::Admin(a) => a.call_json(Method::GET, "/audit", None).await,
            #[cfg(feature = "etcd")]
            Backend::Fleet(..) => Err(CliError::usage(
                "each instance keeps its own audit log: ask one with `--url`",
            )),
        }
    }
}

#[cfg(feature = "etcd")]
async fn within<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, crate::fleet::FleetError>>,
) -> Result<T, CliError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(fleet_error),
        Err(_) => Err(CliError::unreachable(format!(
            "etcd did not answer within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

#[cfg(feature = "etcd")]
fn fleet_error(e: crate::fleet::FleetError) -> CliError {
    use crate::fleet::FleetError;
    match e {
        FleetError::Etcd(e) => CliError::unreachable(format!("etcd: {}", causes(&e))),
        FleetError::NoEndpoints | FleetError::InvalidService(_) => CliError::usage(e),
        other => CliError::refused(other),
    }
}

/// Follows `name` until it ends; Ctrl-C stops it.
async fn wait_for(
    backend: &mut Backend,
    name: &str,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let mut last_shown: Option<u64> = None;
    loop {
        let remaining = match backend.remaining(name).await? {
            Some(r) => r,
            None => {
                let text = if json {
                    to_json(&json!({ "ended": name }))
                } else {
                    format!("`{name}` ended\n")
                };
                return write_out(out, &text);
            }
        };
        let secs = remaining.as_secs();
        if !json && last_shown.is_none_or(|s| s >= secs + 10 || secs < 10) {
            write_out(
                out,
                &format!(
                    "`{name}`: {} left\n",
                    humantime::format_duration(Duration::from_secs(secs))
                ),
            )?;
            last_shown = Some(secs);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => {
                backend.stop(name).await?;
                let text = if json {
                    to_json(&json!({ "stopped": name }))
                } else {
                    format!("interrupted: stopped `{name}`\n")
                };
                return write_out(out, &text);
            }
        }
    }
}

/// An error and its sources, `outer: inner: innermost`.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

struct AdminClient {
    base: String,
    token: Option<String>,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    fn new(url: &str, token: Option<String>, timeout: Duration) -> Result<Self, CliError> {
        let base = url.trim_end_matches('/').to_owned();
        if base.starts_with("https://") {
            return Err(CliError::usage(
                "https is not supported: reach the admin API over loopback or a tunnel",
            ));
        }
        let uri: http::Uri = base
            .parse()
            .map_err(|e| CliError::usage(format!("invalid `--url` {url:?}: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(CliError::usage(format!(
                "invalid `--url` {url:?}: expected `http://host:port`"
            )));
        }
        Ok(AdminClient {
            base,
            token,
            timeout,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), CliError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CliError::usage(format!("invalid request to {}: {e}", self.base)))?;
        let exchange = async {
            let res = self.client.request(req).await.map_err(|e| {
                CliError::unreachable(format!(
                    "cannot reach the admin API at {}: {}",
                    self.base,
                    causes(&e)
                ))
            })?;
            let status = res.status();
            let body = res.into_body().collect().await.map_err(|e| {
                CliError::unreachable(format!("the admin API at {} broke off: {e}", self.base))
            })?;
            Ok((status, body.to_bytes()))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(CliError::unreachable(format!(
                "the admin API at {} did not answer within {}",
                self.base,
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        status: StatusCode,
        body: &[u8],
    ) -> Result<T, CliError> {
        if status.is_success() {
            return serde_json::from_slice(body).map_err(|e| {
                CliError::unreachable(format!(
                    "the admin API at {} answered something unexpected: {e}",
                    self.base
                ))
            });
        }
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let message = v["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        let message = format!("{} ({status})", message.trim());
        if status.is_server_error() || status == StatusCode::NOT_FOUND && v.is_null() {
            Err(CliError::unreachable(message))
        } else {
            Err(CliError::refused(message))
        }
    }

    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T, CliError> {
        let (status, bytes) = self.call(method, path, body).await?;
        self.decode(status, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_args(extra: &[&str]) -> Result<Experiment, CliError> {
        let mut args = vec!["watertight-chaos", "--url", "http://127.0.0.1:1", "start"];
        args.extend_from_slice(extra);
        let cli = Cli::try_parse_from(args).map_err(CliError::usage)?;
        match cli.command {
            Command::Start(a) => experiment_from(&a),
            _ => unreachable!("a start command"),
        }
    }

    #[test]
    fn flags_build_an_experiment() {
        let e = start_args(&[
            "--name",
            "f",
            "--duration",
            "5m",
            "--latency",
            "10ms..20ms",
            "--abort",
            "503",
            "--percent",
            "2.5",
            "--zone",
            "c",
            "--label",
            "version=v2",
            "--header",
            "x-a=1",
            "--abort-when-error-rate",
            "0.1",
        ])
        .unwrap();
        assert_eq!(e.duration, Duration::from_secs(300));
        assert_eq!(e.faults.len(), 2);
        assert_eq!(
            e.faults[0].fault,
            Fault::Latency(Latency::uniform(
                Duration::from_millis(10),
                Duration::from_millis(20)
            ))
        );
        assert_eq!(e.faults[1].percent.ppm(), 25_000);
        assert_eq!(e.target.labels["version"], "v2");
        assert_eq!(e.target.headers["x-a"], "1");
        assert_eq!(e.abort_when.unwrap().error_rate_above, Some(0.1));
        let e = start_args(&[
            "--name",
            "l",
            "--duration",
            "1m",
            "--latency",
            "20ms",
            "--latency-p99",
            "90ms",
        ])
        .unwrap();
        assert!(matches!(
            e.faults[0].fault,
            Fault::Latency(Latency::LogNormal { .. })
        ));
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        let err = start_args(&["--name", "x", "--latency", "5ms"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--duration"));
        let err = start_args(&["--name", "x", "--duration", "1m"]).unwrap_err();
        assert!(err.to_string().contains("needs a fault"), "{err}");
        let err = start_args(&[
            "--name",
            "x",
            "--duration",
            "1m",
            "--hang",
            "--percent",
            "300",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("faults[0].percent"), "{err}");
        let err =
            start_args(&["--name", "x", "--duration", "1m", "--latency", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--latency"), "{err}");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONGER"], &[vec!["wide cell".into(), "x".into()]]);
        assert_eq!(t, "A          LONGER\nwide cell  x\n");
    }
}
