//! The audit log: one record per experiment transition.
//!
//! Every start, stop, expiry, abort and halt is an [`AuditRecord`]. The
//! controller keeps the most recent ones in memory (1,024 by default; the
//! admin API serves them at `GET /audit`) and writes each, as one line of
//! JSON, to the [`AuditSink`]s it was built with: any [`Write`], a file,
//! standard output, or `tracing` (the default when no sink is given).
//! Records are written in the order they happened, each under the
//! controller's audit lock; a sink that fails to write is reported through
//! `tracing` and does not stop the controller.
//!
//! ```text
//! {"seq":1,"time":"2024-05-01T09:00:00.118352107Z","controller":"api","action":"start","experiment":"slow-c","by":"admin","experiment_spec":{…}}
//! {"seq":2,"time":"2024-05-01T09:10:00.120419550Z","controller":"api","action":"expire","experiment":"slow-c","by":"controller","reason":"its time to live of 10m elapsed"}
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::experiment::Experiment;

const TARGET: &str = "watertight_chaos";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// An experiment started.
    Start,
    /// An experiment was stopped before its time.
    Stop,
    /// An experiment's duration elapsed.
    Expire,
    /// An experiment's steady-state guard stopped it.
    Abort,
    /// [`halt_all`](crate::ChaosController::halt_all) stopped an
    /// experiment (or, with no experiment named, found none running).
    Halt,
    /// An experiment from etcd was refused (invalid, too long, a name
    /// clash).
    Reject,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Expire => "expire",
            Action::Abort => "abort",
            Action::Halt => "halt",
            Action::Reject => "reject",
        })
    }
}

/// Who caused a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Origin {
    /// Code in the process, through the controller's methods.
    Local,
    /// A call to the admin HTTP API.
    Admin,
    /// An experiment written to (or removed from) etcd: fleet mode.
    Etcd,
    /// The controller itself: an expiry or a steady-state abort.
    Controller,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Local => "local",
            Origin::Admin => "admin",
            Origin::Etcd => "etcd",
            Origin::Controller => "controller",
        })
    }
}

/// One audit record; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// Increases by one per record of this controller, from 1.
    pub seq: u64,
    /// When, in wall-clock time (RFC 3339, UTC, in the JSON form).
    #[serde(with = "humantime_serde")]
    pub time: SystemTime,
    /// The controller's name.
    pub controller: String,
    /// What happened.
    pub action: Action,
    /// The experiment, if one is concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// Who did it.
    pub by: Origin,
    /// Why, in words: the guard's measurement for an abort, the error for
    /// a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The experiment as started, on a `start` record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_spec: Option<Experiment>,
}

impl AuditRecord {
    /// The record as one line of JSON, without the newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an audit record serializes")
    }
}

/// Where audit records are written, one JSON line each.
///
/// # Clone
///
/// Clones write to the same destination.
#[derive(Clone)]
pub struct AuditSink(SinkKind);

#[derive(Clone)]
enum SinkKind {
    Writer(Arc<Mutex<Box<dyn Write + Send>>>),
    Stdout,
    Tracing,
}

impl fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            SinkKind::Writer(_) => "writer",
            SinkKind::Stdout => "stdout",
            SinkKind::Tracing => "tracing",
        };
        f.debug_tuple("AuditSink").field(&kind).finish()
    }
}

impl AuditSink {
    /// Any writer; each record is written as one line and flushed.
    pub fn writer(w: impl Write + Send + 'static) -> Self {
        AuditSink(SinkKind::Writer(Arc::new(Mutex::new(Box::new(w)))))
    }

    /// A file, created if missing and appended to.
    ///
    /// # Errors
    ///
    /// The error of opening it.
    pub fn file(path: impl AsRef<Path>) -> io::Result<Self> {
        let file: File = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::writer(file))
    }

    /// Standard output.
    pub fn stdout() -> Self {
        AuditSink(SinkKind::Stdout)
    }

    /// A `tracing` event per record, at level INFO with target
    /// `watertight_chaos` and the JSON line in field `audit`.
    pub fn tracing() -> Self {
        AuditSink(SinkKind::Tracing)
    }

    fn write(&self, line: &str) {
        let result = match &self.0 {
            SinkKind::Writer(w) => {
                let mut w = w.lock();
                writeln!(w, "{line}").and_then(|()| w.flush())
            }
            SinkKind::Stdout => {
                let mut out = io::stdout().lock();
                writeln!(out, "{line}").and_then(|()| out.flush())
            }
            SinkKind::Tracing => {
                tracing::info!(target: TARGET, audit = %line, "chaos audit");
                Ok(())
            }
        };
        if let Err(error) = result {
            tracing::warn!(target: TARGET, %error, "cannot write a chaos audit record");
        }
    }
}

pub(crate) type Listener = Arc<dyn Fn(&AuditRecord) + Send + Sync>;

/// The records kept in memory, and the sinks.
pub(crate) struct Audit {
    controller: Arc<str>,
    capacity: usize,
    sinks: Vec<AuditSink>,
    listener: Option<Listener>,
    log: Mutex<Log>,
}

struct Log {
    seq: u64,
    records: VecDeque<AuditRecord>,
}

/// A record to write, before it gets its number and time.
pub(crate) struct Entry {
    pub(crate) action: Action,
    pub(crate) experiment: Option<String>,
    pub(crate) by: Origin,
    pub(crate) reason: Option<String>,
    pub(crate) spec: Option<Experiment>,
}

impl Audit {
    pub(crate) fn new(
        controller: Arc<str>,
        capacity: usize,
        sinks: Vec<AuditSink>,
        listener: Option<Listener>,
    ) -> Self {
        Audit {
            controller,
            capacity,
            sinks,
            listener,
            log: Mutex::new(Log {
                seq: 0,
                records: VecDeque::new(),
            }),
        }
    }

    pub(crate) fn record(&self, entry: Entry) {
        let record = {
            let mut log = self.log.lock();
            log.seq += 1;
            let record = AuditRecord {
                seq: log.seq,
                time: SystemTime::now(),
                controller: self.controller.to_string(),
                action: entry.action,
                experiment: entry.experiment,
                by: entry.by,
                reason: entry.reason,
                experiment_spec: entry.spec,
            };
            let line = record.to_json();
            for sink in &self.sinks {
                sink.write(&line);
            }
            if self.capacity > 0 {
                if log.records.len() == self.capacity {
                    log.records.pop_front();
                }
                log.records.push_back(record.clone());
            }
            record
        };
        metrics::counter!(
            "watertight_chaos_transitions_total",
            "name" => self.controller.to_string(),
            "action" => record.action.to_string()
        )
        .increment(1);
        if let Some(listener) = &self.listener {
            listener(&record);
        }
    }

    pub(crate) fn records(&self) -> Vec<AuditRecord> {
        self.log.lock().records.iter().cloned().collect()
    }
}
