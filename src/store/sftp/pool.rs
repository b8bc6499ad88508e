//! SSH connections to the file server and their pool: connecting (pinned host key, node key
//! authentication, tuned transport), one SFTP session per connection, liveness checks on
//! recycle, and checkouts that keep the pool gauges and wait histogram current.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool::Runtime;
use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult, Timeouts};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{Preferred, cipher};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::rawsession::Limits;

use super::error::map_sftp;
use super::keys::{PinnedHostKey, fingerprint, host_key_algorithms};
use crate::store::StoreError;
use crate::telemetry;

/// A pooled connection unused for this long is probed with a round trip before reuse.
const PROBE_IDLE_AFTER: Duration = Duration::from_secs(30);
/// How long the probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything needed to open a connection; shared by the pool manager and the store.
pub(crate) struct ConnectSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub key: Arc<PrivateKey>,
    pub pinned: PublicKey,
    pub ssh: Arc<russh::client::Config>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Node directory on the server (absolute, no trailing slash); probed on recycle.
    pub directory: String,
}

impl ConnectSettings {
    /// The russh client configuration: AES-GCM first, no Nagle, large window and packets,
    /// keepalives, and host key algorithms matching the pinned key.
    pub fn ssh_config(pinned: &PublicKey) -> russh::client::Config {
        let preferred = Preferred {
            key: host_key_algorithms(pinned).into(),
            cipher: vec![
                cipher::AES_128_GCM,
                cipher::AES_256_GCM,
                cipher::CHACHA20_POLY1305,
                cipher::AES_256_CTR,
                cipher::AES_128_CTR,
            ]
            .into(),
            ..Preferred::default()
        };
        russh::client::Config {
            preferred,
            nodelay: true,
            window_size: 16 * 1024 * 1024,
            maximum_packet_size: 65535,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            ..Default::default()
        }
    }
}

/// One SSH connection with its SFTP session.
pub(crate) struct SftpConn {
    /// Kept so the connection stays open and its state can be checked; dropping it hangs up.
    ssh: russh::client::Handle<PinnedHostKey>,
    pub sftp: Arc<RawSftpSession>,
    /// Largest WRITE payload the server accepts (limits@openssh.com), if it says.
    pub max_write: Option<usize>,
    /// Largest READ length the server serves, if it says.
    pub max_read: Option<usize>,
    /// Set when an operation saw the session die; recycle then discards the connection.
    broken: Arc<AtomicBool>,
}

impl SftpConn {
    pub fn is_alive(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && !self.ssh.is_closed()
    }

    pub fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    /// A flag shared with background work (uploads, downloads) that outlives a borrow.
    pub fn broken_flag(&self) -> Arc<AtomicBool> {
        self.broken.clone()
    }
}

/// Opens, authenticates and starts SFTP on a new connection.
pub(crate) async fn connect(s: &ConnectSettings) -> Result<SftpConn, StoreError> {
    let started = tokio::time::timeout(s.connect_timeout, connect_inner(s)).await;
    match started {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(format!(
            "{}:{}: connecting timed out after {} s",
            s.host,
            s.port,
            s.connect_timeout.as_secs()
        ))),
    }
}

async fn connect_inner(s: &ConnectSettings) -> Result<SftpConn, StoreError> {
    let offered = Arc::new(Mutex::new(None));
    let handler = PinnedHostKey {
        pinned: Some(s.pinned.clone()),
        offered: offered.clone(),
    };
    let target = format!("{}:{}", s.host, s.port);
    let connected = russh::client::connect(s.ssh.clone(), (s.host.as_str(), s.port), handler).await;
    let mut ssh = match connected {
        Ok(h) => h,
        Err(e) => {
            let seen = offered.lock().ok().and_then(|mut k| k.take());
            if let Some(key) = seen
                && key.key_data() != s.pinned.key_data()
            {
                return Err(StoreError::HostKeyMismatch {
                    expected: fingerprint(&s.pinned),
                    offered: fingerprint(&key),
                });
            }
            return Err(StoreError::Unavailable(format!("{target}: {e}")));
        }
    };
    metrics::counter!(telemetry::SFTP_CONNECTIONS_OPENED).increment(1);

    let hash = if s.key.algorithm().is_rsa() {
        match ssh.best_supported_rsa_hash().await {
            Ok(Some(h)) => h,
            // No server-sig-algs: every OpenSSH since 7.2 does SHA-256.
            Ok(None) => Some(HashAlg::Sha256),
            Err(e) => return Err(StoreError::Unavailable(format!("{target}: {e}"))),
        }
    } else {
        None
    };
    let auth = ssh
        .authenticate_publickey(
            s.user.clone(),
            PrivateKeyWithHashAlg::new(s.key.clone(), hash),
        )
        .await
        .map_err(|e| StoreError::Unavailable(format!("{target}: {e}")))?;
    if !auth.success() {
        return Err(StoreError::Auth(format!(
            "{target}: the server refused the node key ({}) for user `{}`; add the output of \
             `mft keygen` to that user's authorized_keys",
            s.key.public_key().fingerprint(HashAlg::Sha256),
            s.user
        )));
    }

    let channel = ssh
        .channel_open_session()
        .await
        .map_err(|e| StoreError::Unavailable(format!("{target}: opening a channel: {e}")))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| StoreError::Unavailable(format!("{target}: starting sftp: {e}")))?;
    let cfg = russh_sftp::client::Config {
        request_timeout_secs: s.request_timeout.as_secs().max(1),
        ..Default::default()
    };
    let mut sftp = RawSftpSession::new_with_config(channel.into_stream(), cfg);
    sftp.init()
        .await
        .map_err(|e| StoreError::Unavailable(format!("{target}: sftp handshake: {e}")))?;
    let (mut max_write, mut max_read) = (None, None);
    if let Ok(limits) = sftp.limits().await {
        let limits = Limits::from(limits);
        max_write = limits.write_len.map(|n| n as usize);
        max_read = limits.read_len.map(|n| n as usize);
        sftp.set_limits(limits);
    }
    Ok(SftpConn {
        ssh,
        sftp: Arc::new(sftp),
        max_write,
        max_read,
        broken: Arc::new(AtomicBool::new(false)),
    })
}

/// deadpool manager: creates connections and checks them before reuse.
pub(crate) struct ConnManager {
    pub settings: Arc<ConnectSettings>,
}

impl managed::Manager for ConnManager {
    type Type = SftpConn;
    type Error = StoreError;

    async fn create(&self) -> Result<SftpConn, StoreError> {
        connect(&self.settings).await
    }

    async fn recycle(&self, conn: &mut SftpConn, metrics: &Metrics) -> RecycleResult<StoreError> {
        if !conn.is_alive() {
            return Err(RecycleError::message("connection closed"));
        }
        if metrics.last_used() >= PROBE_IDLE_AFTER {
            let probe = conn.sftp.stat(self.settings.directory.clone());
            match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                Ok(Ok(_)) => {}
                // The session answers; the directory itself is check()'s business.
                Ok(Err(russh_sftp::client::error::Error::Status(_))) => {}
                _ => {
                    conn.mark_broken();
                    return Err(RecycleError::message("connection does not answer"));
                }
            }
        }
        Ok(())
    }
}

pub(crate) type Pool = managed::Pool<ConnManager>;

pub(crate) fn build_pool(settings: Arc<ConnectSettings>, size: usize) -> Result<Pool, StoreError> {
    let timeouts = Timeouts {
        wait: Some(settings.request_timeout),
        create: Some(settings.connect_timeout + Duration::from_secs(1)),
        recycle: Some(PROBE_TIMEOUT + Duration::from_secs(1)),
    };
    managed::Pool::builder(ConnManager { settings })
        .max_size(size)
        .timeouts(timeouts)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Io(format!("building the SFTP pool: {e}")))
}

/// A connection checked out of the pool; returning it (drop) updates the gauges.
pub(crate) struct Checkout {
    obj: Option<Object<ConnManager>>,
    pool: Pool,
}

impl Checkout {
    pub async fn get(pool: &Pool) -> Result<Checkout, StoreError> {
        let started = Instant::now();
        let got = pool.get().await;
        metrics::histogram!(telemetry::SFTP_POOL_WAIT).record(started.elapsed().as_secs_f64());
        let obj = got.map_err(|e| match e {
            PoolError::Backend(e) => e,
            PoolError::Timeout(deadpool::managed::TimeoutType::Wait) => {
                StoreError::Unavailable(format!(
                    "all {} file server connections stayed busy",
                    pool.status().max_size
                ))
            }
            PoolError::Timeout(_) => {
                StoreError::Unavailable("connecting to the file server timed out".into())
            }
            other => StoreError::Unavailable(format!("file server pool: {other}")),
        })?;
        let checkout = Checkout {
            obj: Some(obj),
            pool: pool.clone(),
        };
        update_gauges(pool);
        Ok(checkout)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn conn(&self) -> &SftpConn {
        // Present from construction until drop.
        match &self.obj {
            Some(o) => o,
            None => unreachable!("checkout used after drop"),
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(obj) = self.obj.take() {
            if !obj.is_alive() {
                // Do not wait for recycle to find out.
                let _ = Object::take(obj);
            } else {
                drop(obj);
            }
        }
        update_gauges(&self.pool);
    }
}

pub(crate) fn update_gauges(pool: &Pool) {
    let status = pool.status();
    let idle = status.available;
    let busy = status.size.saturating_sub(status.available);
    metrics::gauge!(telemetry::SFTP_POOL_SESSIONS, "state" => "idle").set(idle as f64);
    metrics::gauge!(telemetry::SFTP_POOL_SESSIONS, "state" => "busy").set(busy as f64);
}

/// Applies `map_sftp` and marks the connection broken when the error says the session died.
pub(crate) fn classify(
    broken: &AtomicBool,
    err: russh_sftp::client::error::Error,
    what: &str,
) -> StoreError {
    let (e, dead) = map_sftp(err, what);
    if dead {
        broken.store(true, Ordering::Relaxed);
    }
    e
}
