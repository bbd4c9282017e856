//! A real, single-member etcd server for tests (feature `etcd`).
//!
//! [`EtcdServer::start`] runs the `etcd` binary found on `PATH` on free
//! loopback ports with a temporary data directory, and returns once a client
//! read has succeeded: readiness is observed, never guessed from a sleep. The
//! process is killed (SIGKILL) when the [`EtcdServer`] is dropped, and the
//! data directory removed.
//!
//! It is useful to anyone testing their own etcd-backed code against the
//! real thing rather than a mock: service registries, leader election,
//! configuration watchers. [`kill`](EtcdServer::kill) and
//! [`restart`](EtcdServer::restart) exercise what happens when the registry
//! disappears without a goodbye and comes back on the same address with the
//! same data, so watches can resume from their last revision.
//!
//! Needs the `etcd` binary (Debian and Ubuntu: package `etcd-server`; a
//! system service it starts on port 2379 does not interfere), and `protoc`
//! to build `etcd-client` (package `protobuf-compiler`). Run it on a runtime
//! with real time: under `tokio::time::pause` the start-up timeouts would
//! fire at once.
//!
//! # Example
//!
//! ```
//! use watertight_testkit::etcd::EtcdServer;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut etcd = EtcdServer::start().await?;
//! let mut client = etcd.client().await?;
//! client.put("/services/api/a", "10.0.0.1:80", None).await?;
//!
//! // The registry vanishes without a goodbye, then comes back with its data.
//! etcd.kill();
//! etcd.restart().await?;
//! let mut client = etcd.client().await?;
//! let got = client.get("/services/api/a", None).await?;
//! assert_eq!(got.kvs()[0].value(), b"10.0.0.1:80");
//! # Ok(())
//! # }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
//! #     .block_on(demo()).unwrap();
//! ```

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tempfile::TempDir;

/// The `etcd-client` this module builds its clients with, so callers can
/// name its types without depending on a matching version themselves.
pub use etcd_client;

/// How long [`EtcdServer::start`] and [`EtcdServer::restart`] wait for etcd
/// to elect itself leader and serve a read. Generous: a loaded CI machine
/// may take seconds; a healthy one takes well under one.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times [`EtcdServer::start`] tries fresh ports when etcd exits
/// during start-up (another process may take a free port before etcd binds
/// it).
const START_ATTEMPTS: u32 = 3;

/// Why an etcd server could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum EtcdError {
    /// No `etcd` binary on `PATH`.
    NotInstalled,
    /// The temporary data directory could not be created, or the process
    /// could not be spawned.
    Io(io::Error),
    /// etcd exited while starting; `log` is what it wrote to stderr.
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Its log.
        log: String,
    },
    /// etcd did not serve a read within [`STARTUP_TIMEOUT`]; it has been
    /// killed. `log` is what it wrote to stderr.
    NotReady {
        /// Its log.
        log: String,
    },
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::NotInstalled => f.write_str(
                "`etcd` is not on PATH; install it (Debian and Ubuntu: package etcd-server)",
            ),
            EtcdError::Io(e) => write!(f, "cannot start etcd: {e}"),
            EtcdError::Exited { status, log } => {
                write!(
                    f,
                    "etcd exited with {status} while starting; its log:\n{log}"
                )
            }
            EtcdError::NotReady { log } => write!(
                f,
                "etcd did not serve a read within {STARTUP_TIMEOUT:?}; its log:\n{log}"
            ),
        }
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EtcdError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for EtcdError {
    fn from(e: io::Error) -> Self {
        EtcdError::Io(e)
    }
}

/// A single-member etcd process on loopback, killed on drop.
///
/// See the [module docs](self) for an example.
#[derive(Debug)]
pub struct EtcdServer {
    binary: PathBuf,
    child: Option<Child>,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// Starts etcd on free loopback ports with a fresh temporary data
    /// directory, and waits until a client read succeeds.
    ///
    /// # Errors
    ///
    /// [`EtcdError::NotInstalled`] when `etcd` is not on `PATH`;
    /// [`EtcdError::Io`] when the data directory or the process cannot be
    /// created; [`EtcdError::Exited`] or [`EtcdError::NotReady`] when it
    /// does not come up (the error carries its log).
    pub async fn start() -> Result<EtcdServer, EtcdError> {
        let binary = etcd_binary().ok_or(EtcdError::NotInstalled)?;
        let mut attempt = 1;
        loop {
            let (client_port, peer_port) = free_ports()?;
            let mut etcd = EtcdServer {
                binary: binary.clone(),
                child: None,
                dir: tempfile::Builder::new().prefix("etcd-test-").tempdir()?,
                client_port,
                peer_port,
            };
            match etcd.spawn().await {
                Ok(()) => return Ok(etcd),
                // Most likely a port taken between choosing and binding it.
                Err(EtcdError::Exited { .. }) if attempt < START_ATTEMPTS => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A new client connected to this server, with a 2 s connect timeout.
    ///
    /// # Errors
    ///
    /// The client's error when it cannot connect (for example after
    /// [`kill`](Self::kill)).
    pub async fn client(&self) -> Result<Client, etcd_client::Error> {
        let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        Client::connect([self.endpoint()], Some(options)).await
    }

    /// Whether the process is running (it has not been killed and has not
    /// exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills etcd with SIGKILL, so its clients get no goodbye: connections
    /// reset, leases are not revoked. The data directory is kept for
    /// [`restart`](Self::restart). Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // It may have exited already; either way it is gone after wait.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports with the same data (killing it
    /// first if it is running), and waits until a client read succeeds.
    /// Revisions, keys and unexpired leases survive; a lease's remaining
    /// time restarts from its full TTL, as etcd does after a leader change.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start); it does not move to other ports, since
    /// clients know this address.
    pub async fn restart(&mut self) -> Result<(), EtcdError> {
        self.kill();
        self.spawn().await
    }

    /// The directory holding etcd's data and its log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What etcd has written to stderr so far (warnings and errors only), for
    /// failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    async fn spawn(&mut self) -> Result<(), EtcdError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let data = self.dir.path().join("data");
        let child = Command::new(&self.binary)
            .arg("--name=test")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            // A single member elects itself fast with short timers.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let ready = self.wait_ready().await;
        if ready.is_err() {
            self.kill();
        }
        ready
    }

    async fn wait_ready(&mut self) -> Result<(), EtcdError> {
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(EtcdError::Exited {
                        status,
                        log: self.log(),
                    });
                }
            }
            let attempt = async {
                let options = ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_timeout(Duration::from_secs(1));
                let mut client = Client::connect([self.endpoint()], Some(options)).await?;
                client.get("watertight-testkit-ready", None).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EtcdError::NotReady { log: self.log() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
}

/// Two distinct free ports: both listeners are held until both are chosen.
fn free_ports() -> io::Result<(u16, u16)> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn data_survives_kill_and_restart_on_the_same_address() {
        let mut etcd = EtcdServer::start().await.unwrap();
        assert!(etcd.is_running());
        let endpoint = etcd.endpoint();
        let mut client = etcd.client().await.unwrap();
        client.put("k", "v1", None).await.unwrap();

        etcd.kill();
        assert!(!etcd.is_running());
        let down = tokio::time::timeout(Duration::from_secs(10), client.get("k", None)).await;
        assert!(
            !matches!(down, Ok(Ok(_))),
            "a read succeeded against a killed etcd"
        );

        etcd.restart().await.unwrap();
        assert!(etcd.is_running());
        assert_eq!(etcd.endpoint(), endpoint);
        let mut client = etcd.client().await.unwrap();
        let got = client.get("k", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"v1");
    }

    #[tokio::test]
    async fn drop_stops_the_process_and_removes_its_data() {
        let etcd = EtcdServer::start().await.unwrap();
        let dir = etcd.dir().to_path_buf();
        let port = etcd.client_port;
        assert!(dir.join("data").is_dir());
        drop(etcd);
        assert!(!dir.exists(), "the data directory outlived the server");
        // Nothing listens on its client port any more.
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[tokio::test]
    async fn two_servers_get_distinct_addresses() {
        let a = EtcdServer::start().await.unwrap();
        let b = EtcdServer::start().await.unwrap();
        assert_ne!(a.endpoint(), b.endpoint());
        let mut ca = a.client().await.unwrap();
        let mut cb = b.client().await.unwrap();
        ca.put("only-in-a", "1", None).await.unwrap();
        assert!(cb.get("only-in-a", None).await.unwrap().kvs().is_empty());
    }
}
