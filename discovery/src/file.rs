//! A file of endpoints, reloaded when it changes.
//!
//! The file is JSON, TOML or YAML (chosen by its extension, or set with
//! [`FileBuilder::format`]) and holds a list of endpoints in the form of
//! [`Endpoint`]'s serde support: `addr` is required; `id` (default: the
//! address), `locality` (`region`, `zone`, `subzone`), `weight` (default 100,
//! at least 1), `priority` (default 0), `labels` and `health` (`healthy`,
//! `degraded`, `unhealthy`) are optional; unknown fields are errors.
//!
//! JSON and YAML accept a bare list or an object with an `endpoints` list;
//! TOML needs the `endpoints` key:
//!
//! ```toml
//! [[endpoints]]
//! addr = "10.0.0.1:8080"
//! locality = { region = "eu-west-1", zone = "eu-west-1a" }
//! labels = { version = "v2" }
//!
//! [[endpoints]]
//! addr = "10.0.0.2:8080"
//! weight = 50
//! ```
//!
//! # Reloading
//!
//! The file's directory is watched with `notify` (inotify, FSEvents,
//! kqueue, ReadDirectoryChangesW), so a file replaced by rename (editors,
//! `kubectl`-mounted ConfigMaps that swap a symlink) is seen like one written
//! in place. After the first event the source waits `debounce` (default
//! 100 ms) for the writer to finish, then reads the file; a read that gives
//! the same bytes as the last one yields nothing. The file is also re-read
//! every `rescan_interval` (default 30 s) in case an event was lost.
//!
//! A file that does not parse, or holds an invalid endpoint, yields an
//! [`InvalidFile`] error naming the file, the line and column, and the
//! field (`endpoints[2].weight`); the last good set stays. A file that
//! cannot be read (deleted, unreadable) yields a [`Backend`] error and the
//! last good set stays too: an empty list (`[]`) is how a file says "no
//! endpoints". Every good read after an error yields a [`Change::Reset`],
//! even of the same set, so consumers know the source has recovered.

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use notify::Watcher as _;
use serde::de;
use tokio::sync::mpsc;
use watertight_core::{config, Change, Endpoint};

use crate::driver::{self, BoxSource, Driver};
use crate::error::{Backend, ConfigError, InvalidFile, COMPONENT};
use crate::set::{self, Set};
use crate::wire::{path_of, WireEndpoint};
use crate::Error;

const TARGET: &str = "watertight_discovery";

/// The format of an endpoints file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// JSON: a list, or an object with an `endpoints` list.
    Json,
    /// TOML: an `endpoints` array of tables.
    Toml,
    /// YAML: a list, or a mapping with an `endpoints` list.
    Yaml,
}

impl Format {
    /// The format for a file name's extension: `json`, `toml`, `yaml` or
    /// `yml` (any case).
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "json" => Some(Format::Json),
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }

    /// Parses a document of this format into endpoints. `path` only names
    /// the file in errors.
    ///
    /// # Errors
    ///
    /// [`InvalidFile`] naming the line, column and field at fault.
    pub fn parse(self, path: &Path, text: &str) -> Result<Vec<Endpoint>, InvalidFile> {
        let invalid = |line, column, field: Option<String>, message: String| InvalidFile {
            path: path.to_owned(),
            line,
            column,
            field: field_with_inner(field, &message),
            message,
        };
        match self {
            Format::Json => {
                let mut de = serde_json::Deserializer::from_str(text);
                let doc: Document = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                    let field = path_of(e.path());
                    let inner = e.into_inner();
                    let message = strip_json_position(&inner);
                    invalid(Some(inner.line()), Some(inner.column()), field, message)
                })?;
                de.end().map_err(|e| {
                    invalid(
                        Some(e.line()),
                        Some(e.column()),
                        None,
                        strip_json_position(&e),
                    )
                })?;
                Ok(doc.0)
            }
            Format::Toml => {
                let de = toml::Deserializer::parse(text).map_err(|e| {
                    let (line, column) = toml_position(text, &e);
                    invalid(line, column, None, e.message().to_owned())
                })?;
                let doc: Document = serde_path_to_error::deserialize(de).map_err(|e| {
                    let field = path_of(e.path());
                    let inner = e.into_inner();
                    let (line, column) = toml_position(text, &inner);
                    invalid(line, column, field, inner.message().to_owned())
                })?;
                Ok(doc.0)
            }
            Format::Yaml => {
                let de = serde_norway::Deserializer::from_str(text);
                let doc: Document = serde_path_to_error::deserialize(de).map_err(|e| {
                    let field = path_of(e.path());
                    let inner = e.into_inner();
                    let (line, column) = match inner.location() {
                        Some(l) => (Some(l.line()), Some(l.column())),
                        None => (None, None),
                    };
                    invalid(line, column, field, strip_yaml_position(&inner))
                })?;
                Ok(doc.0)
            }
        }
    }
}

/// serde names the field in messages like "missing field `addr`" or
/// "unknown field `wieght`", and the endpoint model validates with
/// "field `weight`: …", at the path of the endpoint; add the field to the
/// path.
fn field_with_inner(path: Option<String>, message: &str) -> Option<String> {
    let inner = message
        .find("field `")
        .map(|i| &message[i + "field `".len()..])
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path, inner) {
        (Some(p), Some(name)) if p == name || p.ends_with(&format!(".{name}")) => Some(p),
        (Some(p), Some(name)) => Some(format!("{p}.{name}")),
        (None, Some(name)) => Some(name.to_owned()),
        (p, None) => p,
    }
}

fn strip_json_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

fn strip_yaml_position(e: &serde_norway::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" at line ") {
        Some(i) => &s[..i],
        None => &s[..],
    };
    // The message starts with the path (`.[1].weight: `) below the root;
    // the error names the field separately.
    match s.split_once(": ") {
        Some((path, rest)) if path.starts_with('.') && !path.contains(' ') => rest.to_owned(),
        _ => s.to_owned(),
    }
}

fn toml_position(text: &str, e: &toml::de::Error) -> (Option<usize>, Option<usize>) {
    let Some(span) = e.span() else {
        return (None, None);
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (Some(line), Some(column))
}

/// A list of endpoints, bare or under `endpoints`.
struct Document(Vec<Endpoint>);

impl<'de> serde::Deserialize<'de> for Document {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Document;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of endpoints, or a table with an `endpoints` list")
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
                let mut list = Vec::new();
                while let Some(WireEndpoint(e)) = seq.next_element()? {
                    list.push(e);
                }
                Ok(Document(list))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
                let mut list = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "endpoints" {
                        return Err(de::Error::unknown_field(&key, &["endpoints"]));
                    }
                    if list.is_some() {
                        return Err(de::Error::duplicate_field("endpoints"));
                    }
                    let wire: Vec<WireEndpoint> = map.next_value()?;
                    list = Some(wire.into_iter().map(|w| w.0).collect());
                }
                list.map(Document)
                    .ok_or_else(|| de::Error::missing_field("endpoints"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Builds a [`File`] source.
#[derive(Clone, Debug)]
pub struct FileBuilder {
    path: PathBuf,
    format: Option<Format>,
    debounce: Duration,
    rescan_interval: Duration,
}

impl FileBuilder {
    /// The format; by default chosen by the file name's extension.
    pub fn format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }

    /// How long to wait after a change event before reading; default
    /// 100 ms.
    pub fn debounce(mut self, d: Duration) -> Self {
        self.debounce = d;
        self
    }

    /// How often to re-read the file without an event; default 30 s.
    pub fn rescan_interval(mut self, d: Duration) -> Self {
        self.rescan_interval = d;
        self
    }

    /// Validates and builds. Nothing is read or watched until the stream is
    /// first polled.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when no format is set and the extension is not
    /// `json`, `toml`, `yaml` or `yml` (field `format`), or
    /// `rescan_interval` is zero.
    pub fn build(self) -> Result<File, ConfigError> {
        let format = match self.format.or_else(|| Format::from_path(&self.path)) {
            Some(f) => f,
            None => {
                return Err(ConfigError::new(
                    COMPONENT,
                    "format",
                    format!(
                        "is not set and {} has no json, toml, yaml or yml extension",
                        self.path.display()
                    ),
                ))
            }
        };
        config::non_zero(COMPONENT, "rescan_interval", self.rescan_interval)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = FileDriver {
            dir: watch_dir(&self.path),
            path: self.path,
            format,
            debounce: self.debounce,
            rescan_interval: self.rescan_interval,
            watcher: None,
            tx,
            rx,
            started: false,
            last_read: None,
            current: None,
            failing: false,
        };
        Ok(File {
            path: driver.path.clone(),
            format,
            inner: driver::drive(driver),
        })
    }
}

fn watch_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// A source reading endpoints from a file; see the [module docs](self).
///
/// ```no_run
/// use futures_util::StreamExt;
/// use watertight_discovery::File;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut source = File::new("endpoints.yaml")?;
/// while let Some(item) = source.next().await {
///     match item {
///         Ok(change) => println!("{change:?}"),
///         Err(e) => eprintln!("{e}"), // the last good set stays
///     }
/// }
/// # Ok(()) }
/// ```
pub struct File {
    path: PathBuf,
    format: Format,
    inner: BoxSource,
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("format", &self.format)
            .finish()
    }
}

impl File {
    /// A source of `path` with the defaults.
    ///
    /// # Errors
    ///
    /// See [`FileBuilder::build`].
    pub fn new(path: impl Into<PathBuf>) -> Result<File, ConfigError> {
        File::builder(path).build()
    }

    /// A builder for a source of `path`.
    pub fn builder(path: impl Into<PathBuf>) -> FileBuilder {
        FileBuilder {
            path: path.into(),
            format: None,
            debounce: Duration::from_millis(100),
            rescan_interval: Duration::from_secs(30),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its format.
    pub fn format(&self) -> Format {
        self.format
    }
}

impl Stream for File {
    type Item = Result<Change, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

type WatchEvent = notify::Result<notify::Event>;

#[derive(PartialEq, Eq)]
enum Read {
    Bytes(Vec<u8>),
    Failed(std::io::ErrorKind),
}

struct FileDriver {
    path: PathBuf,
    dir: PathBuf,
    format: Format,
    debounce: Duration,
    rescan_interval: Duration,
    watcher: Option<notify::RecommendedWatcher>,
    tx: mpsc::UnboundedSender<WatchEvent>,
    rx: mpsc::UnboundedReceiver<WatchEvent>,
    started: bool,
    last_read: Option<Read>,
    current: Option<Set>,
    failing: bool,
}

/// Whether an event may mean the file's content changed. Opening or reading
/// a file (this source's own reads among them) does not.
fn is_relevant(event: &WatchEvent) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match event {
        Ok(ev) => match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        },
        Err(_) => true,
    }
}

impl FileDriver {
    fn ensure_watch(&mut self) {
        if self.watcher.is_some() {
            return;
        }
        let tx = self.tx.clone();
        let watcher = notify::recommended_watcher(move |ev: WatchEvent| {
            // The receiver lives as long as the source; a send after it is
            // dropped has nobody to tell.
            let _ = tx.send(ev);
        })
        .and_then(|mut w| {
            w.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        match watcher {
            Ok(w) => self.watcher = Some(w),
            Err(e) => tracing::warn!(
                target: TARGET,
                path = %self.path.display(),
                error = %e,
                "cannot watch the endpoints file's directory; re-reading every rescan interval"
            ),
        }
    }

    /// Waits for an event that may mean a change (or the rescan interval),
    /// then for the debounce, and drains what arrived meanwhile.
    async fn wait_for_change(&mut self) {
        let rescan = tokio::time::sleep(self.rescan_interval);
        tokio::pin!(rescan);
        loop {
            tokio::select! {
                ev = self.rx.recv() => {
                    let Some(ev) = ev else { break };
                    if is_relevant(&ev) {
                        if let Err(e) = &ev {
                            tracing::debug!(target: TARGET, error = %e, "file watch error; re-reading");
                        }
                        break;
                    }
                }
                _ = &mut rescan => break,
            }
        }
        if !self.debounce.is_zero() {
            tokio::time::sleep(self.debounce).await;
        }
        while self.rx.try_recv().is_ok() {}
    }

    /// Reads and parses the file; `None` when there is nothing new to say.
    async fn load(&mut self) -> Option<Result<Change, Error>> {
        let read = tokio::fs::read(&self.path).await;
        let key = match &read {
            Ok(bytes) => Read::Bytes(bytes.clone()),
            Err(e) => Read::Failed(e.kind()),
        };
        if self.last_read.as_ref() == Some(&key) {
            return None;
        }
        self.last_read = Some(key);
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                self.failing = true;
                tracing::warn!(target: TARGET, path = %self.path.display(), error = %e, "cannot read the endpoints file; keeping the last good set");
                return Some(Err(Backend::new(
                    "file",
                    self.path.display().to_string(),
                    e,
                )
                .into()));
            }
        };
        let parsed = match std::str::from_utf8(&bytes) {
            Ok(text) => self.format.parse(&self.path, text),
            Err(e) => Err(InvalidFile {
                path: self.path.clone(),
                line: None,
                column: None,
                field: None,
                message: format!("not UTF-8: {e}"),
            }),
        };
        match parsed {
            Err(e) => {
                self.failing = true;
                tracing::warn!(target: TARGET, error = %e, "invalid endpoints file; keeping the last good set");
                Some(Err(e.into()))
            }
            Ok(list) => {
                let new = set::from_list(list);
                if !self.failing && self.current.as_ref() == Some(&new) {
                    return None;
                }
                self.failing = false;
                tracing::info!(target: TARGET, path = %self.path.display(), endpoints = new.len(), "endpoints file loaded");
                let list = new.values().cloned().collect();
                self.current = Some(new);
                Some(Ok(Change::Reset(list)))
            }
        }
    }
}

impl Driver for FileDriver {
    async fn next(&mut self) -> Result<Change, Error> {
        if !self.started {
            self.started = true;
            self.ensure_watch();
            if let Some(item) = self.load().await {
                return item;
            }
        }
        loop {
            self.wait_for_change().await;
            self.ensure_watch();
            if let Some(item) = self.load().await {
                return item;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(format: Format, text: &str) -> InvalidFile {
        format.parse(Path::new("eps"), text).unwrap_err()
    }

    #[test]
    fn all_formats_parse_the_same_endpoints() {
        let json = r#"[{"addr":"10.0.0.1:80","locality":{"zone":"a"},"labels":{"v":"2"}},
                       {"addr":"10.0.0.2:80","weight":5,"priority":1}]"#;
        let json_obj = format!(r#"{{"endpoints": {json}}}"#);
        let toml = r#"
[[endpoints]]
addr = "10.0.0.1:80"
locality = { zone = "a" }
labels = { v = "2" }

[[endpoints]]
addr = "10.0.0.2:80"
weight = 5
priority = 1
"#;
        let yaml = "
- addr: 10.0.0.1:80
  locality: { zone: a }
  labels: { v: '2' }
- addr: 10.0.0.2:80
  weight: 5
  priority: 1
";
        let p = Path::new("eps");
        let a = Format::Json.parse(p, json).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].locality.zone, "a");
        assert_eq!(a[1].weight, 5);
        assert_eq!(a[1].priority, 1);
        assert_eq!(Format::Json.parse(p, &json_obj).unwrap(), a);
        assert_eq!(Format::Toml.parse(p, toml).unwrap(), a);
        assert_eq!(Format::Yaml.parse(p, yaml).unwrap(), a);
        assert_eq!(
            Format::Yaml
                .parse(p, &format!("endpoints:\n{yaml}"))
                .unwrap(),
            a
        );
    }

    #[test]
    fn json_errors_name_line_and_field() {
        let e = err(
            Format::Json,
            "[\n  {\"addr\": \"10.0.0.1:80\"},\n  {\"addr\": \"10.0.0.2:80\", \"weight\": 0}\n]",
        );
        assert_eq!(e.field(), Some("[1].weight"), "{e}");
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(e.to_string().contains("must be at least 1"), "{e}");

        let e = err(
            Format::Json,
            "{\"endpoints\": [{\"addr\": \"x:1\", \"wieght\": 3}]}",
        );
        assert_eq!(e.field(), Some("endpoints[0].wieght"), "{e}");
        let e = err(Format::Json, "[{\"weight\": 3}]");
        assert_eq!(e.field(), Some("[0].addr"), "{e}");
        let e = err(Format::Json, "[{\"addr\": \"x:1\", \"weight\": \"heavy\"}]");
        assert_eq!(e.field(), Some("[0].weight"), "{e}");
        let e = err(Format::Json, "[{\"addr\": \"x:1\"},");
        assert_eq!(e.line(), Some(1), "{e}");
    }

    #[test]
    fn toml_and_yaml_errors_name_line_and_field() {
        let e = err(
            Format::Toml,
            "[[endpoints]]\naddr = \"10.0.0.1:80\"\n\n[[endpoints]]\naddr = \"nowhere\"\n",
        );
        assert_eq!(e.field(), Some("endpoints[1].addr"), "{e}");
        assert_eq!((e.line(), e.column()), (Some(5), Some(8)), "{e}");
        let e = err(
            Format::Toml,
            "[[endpoints]]\naddr = \"10.0.0.1:80\"\nweight = -1\n",
        );
        assert_eq!(e.field(), Some("endpoints[0].weight"), "{e}");
        assert_eq!(e.line(), Some(3), "{e}");
        let e = err(
            Format::Yaml,
            "- addr: 10.0.0.1:80\n- addr: 10.0.0.2:80\n  weight: lots\n",
        );
        assert_eq!(e.field(), Some("[1].weight"), "{e}");
        assert_eq!(e.line(), Some(3), "{e}");
    }

    #[test]
    fn syntax_and_shape_errors_read_plainly() {
        // (format, text, field, message contains)
        let cases = [
            (Format::Json, "{not json", None, "key must be a string"),
            (
                Format::Json,
                "[{\"addr\": \"x:1\"}, {not",
                Some("[1]"),
                "key must be a string",
            ),
            (
                Format::Json,
                "[[\"10.0.0.1:80\"]]",
                Some("[0]"),
                "invalid type: sequence, expected an endpoint",
            ),
            (
                Format::Yaml,
                "- [a]\n",
                Some("[0]"),
                "invalid type: sequence, expected an endpoint",
            ),
            (
                Format::Toml,
                "endpoints = [1]\n",
                Some("endpoints[0]"),
                "invalid type: integer `1`, expected an endpoint",
            ),
            (
                Format::Json,
                "{\"endpoints\": 3}",
                Some("endpoints"),
                "expected a sequence",
            ),
        ];
        for (format, text, field, message) in cases {
            let e = err(format, text);
            assert_eq!(e.field(), field, "{text:?}: {e}");
            assert!(e.message().contains(message), "{text:?}: {e}");
            let shown = e.to_string();
            assert!(
                !shown.contains("Fields") && !shown.contains('?') && !shown.contains(": .["),
                "{text:?}: {shown}"
            );
        }
    }
}
