//! SSH connections to the file server and the pool that shares them: connecting (pinned host
//! key, node key authentication, tuned transport), one SFTP session per connection, leases
//! that spread transfers over the connections, replacement of dead connections, and the
//! pool gauges and wait histogram.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The connections to the file server, shared by every transfer.
///
/// A transfer does not own a connection: `RawSftpSession` takes `&self`, so any number of
/// transfers multiplex one SFTP session, each with its own handle and its own bounded
/// pipeline. [`Lease::get`] picks the least-loaded healthy connection, preferring an idle
/// open one, then an unopened slot (connecting it), then the least busy open one; so
/// concurrent transfers spread over up to `pool_size` connections (each connection's crypto
/// runs on one task, so this is how a transfer load uses every core), and a slow client only
/// slows its own transfer. A connection seen dead is replaced in its slot on the next lease;
/// transfers still holding it finish or fail on their own.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    settings: Arc<ConnectSettings>,
    /// Connection and load of every slot. A std mutex: held only to pick and count, never
    /// across an await.
    slots: Mutex<Vec<SlotState>>,
    /// One per slot, held while that slot connects, so a slot opens one connection at a time
    /// and later leases of the slot wait for it instead of opening their own.
    connecting: Vec<tokio::sync::Mutex<()>>,
}

struct SlotState {
    conn: Option<Arc<SftpConn>>,
    /// Leases on this slot (transfers and short operations).
    load: usize,
    /// When the last lease of this slot ended (or its connection opened).
    last_used: Instant,
}

impl SlotState {
    fn usable(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.is_alive())
    }
}

pub(crate) fn build_pool(settings: Arc<ConnectSettings>, size: usize) -> Result<Pool, StoreError> {
    let size = size.max(1);
    let now = Instant::now();
    let slots = (0..size)
        .map(|_| SlotState {
            conn: None,
            load: 0,
            last_used: now,
        })
        .collect();
    Ok(Pool {
        inner: Arc::new(PoolInner {
            settings,
            slots: Mutex::new(slots),
            connecting: (0..size).map(|_| tokio::sync::Mutex::new(())).collect(),
        }),
    })
}

impl Pool {
    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<SlotState>> {
        // A panic while holding this lock cannot leave the counts half-updated.
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves the best slot: an idle open connection, else an unopened (or dead) slot,
    /// else the open connection with the fewest leases. Returns the slot and whether its
    /// connection had been idle long enough to deserve a probe.
    fn reserve(&self) -> (usize, bool) {
        let mut slots = self.slots();
        let best = slots
            .iter()
            .enumerate()
            .min_by_key(|(i, s)| (s.load, !s.usable(), *i))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let slot = &mut slots[best];
        let probe = slot.load == 0 && slot.usable() && slot.last_used.elapsed() >= PROBE_IDLE_AFTER;
        slot.load += 1;
        drop(slots);
        update_gauges(self);
        (best, probe)
    }

    fn release(&self, slot: usize) {
        let mut slots = self.slots();
        if let Some(s) = slots.get_mut(slot) {
            s.load = s.load.saturating_sub(1);
            s.last_used = Instant::now();
            if s.load == 0 && s.conn.as_ref().is_some_and(|c| !c.is_alive()) {
                // Hang up now rather than at the next lease.
                s.conn = None;
            }
        }
        drop(slots);
        update_gauges(self);
    }

    /// The slot's connection if it is open and healthy.
    fn current(&self, slot: usize) -> Option<Arc<SftpConn>> {
        self.slots()
            .get(slot)
            .and_then(|s| s.conn.clone())
            .filter(|c| c.is_alive())
    }

    /// Connects the slot unless another lease already did. The caller holds a reservation.
    async fn open(&self, slot: usize) -> Result<Arc<SftpConn>, StoreError> {
        let _connecting = self.inner.connecting[slot].lock().await;
        if let Some(conn) = self.current(slot) {
            return Ok(conn);
        }
        let conn = Arc::new(connect(&self.inner.settings).await?);
        let mut slots = self.slots();
        slots[slot].conn = Some(conn.clone());
        slots[slot].last_used = Instant::now();
        drop(slots);
        update_gauges(self);
        Ok(conn)
    }

    /// A round trip on a connection that sat idle: keepalives may not have noticed a peer
    /// that vanished without a reset.
    async fn probe(&self, conn: &SftpConn) -> bool {
        let probe = conn.sftp.stat(self.inner.settings.directory.clone());
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(_)) => true,
            // The session answers; the directory itself is check()'s business.
            Ok(Err(russh_sftp::client::error::Error::Status(_))) => true,
            _ => {
                conn.mark_broken();
                false
            }
        }
    }

    /// Open connections with and without leases: `(idle, busy)`.
    pub fn counts(&self) -> (usize, usize) {
        let slots = self.slots();
        let open = slots.iter().filter(|s| s.usable());
        open.fold((0, 0), |(idle, busy), s| {
            if s.load == 0 {
                (idle + 1, busy)
            } else {
                (idle, busy + 1)
            }
        })
    }
}

/// A share of one pooled connection, held for an operation or a whole transfer. Dropping it
/// gives the share back (the connection stays open for others).
pub(crate) struct Lease {
    pool: Pool,
    slot: usize,
    conn: Arc<SftpConn>,
}

impl Lease {
    /// Leases the least-loaded healthy connection, connecting its slot when needed.
    pub async fn get(pool: &Pool) -> Result<Lease, StoreError> {
        let started = Instant::now();
        let got = Lease::get_inner(pool).await;
        metrics::histogram!(telemetry::SFTP_POOL_WAIT).record(started.elapsed().as_secs_f64());
        got
    }

    async fn get_inner(pool: &Pool) -> Result<Lease, StoreError> {
        let (slot, probe) = pool.reserve();
        // From here the reservation is returned by the guard's drop, whatever happens.
        let mut reservation = Reservation { pool, slot };
        let mut conn = match pool.current(slot) {
            Some(c) => c,
            None => pool.open(slot).await?,
        };
        if probe && !pool.probe(&conn).await {
            tracing::debug!(
                slot,
                "Idle file server connection did not answer; reconnecting"
            );
            conn = pool.open(slot).await?;
        }
        Ok(reservation.grant(conn))
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn conn(&self) -> &SftpConn {
        &self.conn
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.release(self.slot);
    }
}

/// A slot reserved while its connection is being found or opened.
struct Reservation<'a> {
    pool: &'a Pool,
    slot: usize,
}

impl Reservation<'_> {
    fn grant(&mut self, conn: Arc<SftpConn>) -> Lease {
        let lease = Lease {
            pool: self.pool.clone(),
            slot: self.slot,
            conn,
        };
        // The lease now owns the reservation.
        self.slot = usize::MAX;
        lease
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.slot != usize::MAX {
            self.pool.release(self.slot);
        }
    }
}

pub(crate) fn update_gauges(pool: &Pool) {
    let (idle, busy) = pool.counts();
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
