//! Wiring a running node: configuration in, store + AFT_LOG + tickets + alarms + HTTP out.
//!
//! [`start`] opens every backend, starts the HTTP listener and the background checks, and
//! returns a [`RunningNode`] handle whose [`RunningNode::shutdown`] drains in-flight transfers,
//! flushes `AFT_LOG` and stops. `mft serve` and the integration tests both go through here.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::aftlog::{AftLog, AftLogError};
use crate::alarms::{self, Alarms};
use crate::config::{Config, FileServerKind};
use crate::http::{self, AppState};
use crate::layout::{Clock, FixedClock, RolloverAllocator, SystemClock};
use crate::store::local::LocalStore;
use crate::store::sftp::SftpStore;
use crate::store::{FileStore, StoreError};
use crate::telemetry;
use crate::ticket::{TicketAuthority, TicketError};

/// Longest the start-up sweep of leftover temporary files may take.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Environment variable pinning the layout clock to an RFC 3339 instant (tests only).
pub const PIN_CLOCK_ENV: &str = "MFT_PIN_CLOCK";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("ticket secret: {0}")]
    Secret(String),
    #[error(transparent)]
    Ticket(#[from] TicketError),
    #[error("file server: {0}")]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    AftLog(#[from] AftLogError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{PIN_CLOCK_ENV}: `{0}` is not an RFC 3339 time")]
    BadClock(String),
}

/// Options that are not configuration: what tests inject.
#[derive(Default, Clone)]
pub struct NodeOptions {
    /// The layout clock; the system clock (or `MFT_PIN_CLOCK`) when `None`.
    pub clock: Option<Arc<dyn Clock>>,
}

/// The HS256 ticket secret: configured, or generated once into `<data_dir>/ticket_secret`.
pub fn load_ticket_secret(config: &Config) -> Result<Vec<u8>, NodeError> {
    if let Some(secret) = &config.auth.ticket_secret {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = config.node.data_dir.join("ticket_secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => {
            return Err(NodeError::Secret(format!(
                "{} is too short; delete it to generate a new one",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(NodeError::Secret(format!("{}: {e}", path.display()))),
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    write_private_file(&path, secret.as_bytes())
        .map_err(|e| NodeError::Secret(format!("{}: {e}", path.display())))?;
    tracing::info!(path = %path.display(), "Generated a ticket secret");
    Ok(secret.into_bytes())
}

fn write_private_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Opens the configured file store (not yet connecting, for SFTP).
pub fn open_store(config: &Config) -> Result<Arc<dyn FileStore>, NodeError> {
    let fs = &config.file_server;
    Ok(match fs.kind {
        FileServerKind::Local => {
            Arc::new(LocalStore::new(Path::new(&fs.directory), &fs.name)?) as Arc<dyn FileStore>
        }
        FileServerKind::Sftp => Arc::new(SftpStore::new(fs, &config.node.key_file)?),
    })
}

/// The ticket authority for this configuration.
pub fn ticket_authority(config: &Config) -> Result<TicketAuthority, NodeError> {
    let secret = load_ticket_secret(config)?;
    Ok(TicketAuthority::new(
        &secret,
        &config.auth.ticket_public_keys,
    )?)
}

fn choose_clock(opts: &NodeOptions) -> Result<Arc<dyn Clock>, NodeError> {
    if let Some(clock) = &opts.clock {
        return Ok(clock.clone());
    }
    match std::env::var(PIN_CLOCK_ENV) {
        Ok(v) => {
            let at = chrono::DateTime::parse_from_rfc3339(&v)
                .map_err(|_| NodeError::BadClock(v.clone()))?
                .with_timezone(&chrono::Utc);
            tracing::warn!(at = %at, "Layout clock pinned by {PIN_CLOCK_ENV} (testing only)");
            Ok(Arc::new(FixedClock::new(at)))
        }
        Err(_) => Ok(Arc::new(SystemClock)),
    }
}

/// A node serving HTTP.
pub struct RunningNode {
    addr: SocketAddr,
    base_url: String,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    checks: JoinHandle<()>,
    aftlog: AftLog,
    grace: Duration,
}

impl RunningNode {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `node.public_url` (or, when it names port 0, the bound address).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Waits until the server stops by itself (it does not, short of a fatal error).
    pub async fn wait(&mut self) {
        let _ = (&mut self.server).await;
    }

    /// Stops accepting, lets in-flight requests finish (within `node.shutdown_grace_s`),
    /// flushes `AFT_LOG`, and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(self.grace, self.server).await.is_err() {
            tracing::warn!("In-flight requests did not finish within the shutdown grace period");
        }
        self.checks.abort();
        self.aftlog.shutdown(self.grace).await;
        tracing::info!("Node stopped");
    }
}

/// Starts a node: opens the store and database, binds the listener, spawns background checks.
pub async fn start(config: Config, opts: NodeOptions) -> Result<RunningNode, NodeError> {
    let metrics = telemetry::install_recorder();
    let clock = choose_clock(&opts)?;
    let tickets = ticket_authority(&config)?;
    let store = open_store(&config)?;
    if let Err(e) = store.check().await {
        // The node still starts: the file server may come back; the alarm says it is down.
        tracing::error!(error = %e, "File server check failed at start-up");
    }
    // Before serving: once uploads start, a `.part` file may be a live one.
    if tokio::time::timeout(
        SWEEP_TIMEOUT,
        crate::janitor::sweep_stale_parts(store.clone(), clock.now()),
    )
    .await
    .is_err()
    {
        tracing::warn!(
            "Sweep of leftover temporary files cut short; the rest stay until next start"
        );
    }
    let aftlog = AftLog::open(&config.database, &config.node.id, &config.node.data_dir).await?;
    let alarm_board = Alarms::new(&config.node.id, &config.alarms);
    let checks = tokio::spawn(alarms::run_checks(
        alarm_board.clone(),
        config.alarms.clone(),
        store.clone(),
        aftlog.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(&config.node.listen)
        .await
        .map_err(|source| NodeError::Bind {
            addr: config.node.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| NodeError::Bind {
        addr: config.node.listen.clone(),
        source,
    })?;
    let base_url = public_base_url(&config, addr);
    let grace = Duration::from_secs(config.node.shutdown_grace_s);
    let state = Arc::new(AppState {
        allocator: RolloverAllocator::new(store.clone(), clock),
        store,
        aftlog: aftlog.clone(),
        tickets,
        alarms: alarm_board,
        metrics,
        base_url: base_url.clone(),
        path_prefix: config.public_path_prefix(),
        config,
    });
    let (stop, stop_rx) = watch::channel(false);
    let server = tokio::spawn(http::serve(listener, state, stop_rx));
    tracing::info!(addr = %addr, url = %base_url, "Node listening");
    Ok(RunningNode {
        addr,
        base_url,
        stop,
        server,
        checks,
        aftlog,
        grace,
    })
}

/// `node.public_url`, with port 0 replaced by the bound port (tests bind port 0).
fn public_base_url(config: &Config, addr: SocketAddr) -> String {
    let url = config.node.public_url.trim_end_matches('/');
    if let Some(stripped) = url.strip_suffix(":0") {
        return format!("{stripped}:{}", addr.port());
    }
    if url.contains(":0/") {
        return url.replacen(":0/", &format!(":{}/", addr.port()), 1);
    }
    url.to_string()
}
