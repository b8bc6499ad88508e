//! The node's TOML configuration (SPEC section 9): structures, defaults, and validation.
//!
//! Unknown keys and invalid values are refused with a message naming the key. With no
//! configuration file the embedded default applies: SQLite and a local directory store under
//! `mft-data/`, listening on 127.0.0.1:7336.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// 4 GiB: the largest file the node accepts, and what `max_file_size = 0` means.
pub const MAX_FILE_SIZE_LIMIT: u64 = 4 * 1024 * 1024 * 1024;

/// The configuration file looked for when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "mft.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub transfer: TransferConfig,
    pub auth: AuthConfig,
    pub database: DatabaseConfig,
    pub file_server: FileServerConfig,
    pub alarms: AlarmsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Node identifier, part of every download URI: `[A-Za-z0-9_-]`, at most 64 characters.
    pub id: String,
    /// Address the HTTP listener binds.
    pub listen: String,
    /// Base of the URIs handed out; may carry a path prefix.
    pub public_url: String,
    /// OpenSSH private key used to authenticate to the file server (written by `mft keygen`).
    pub key_file: PathBuf,
    /// Directory for the node's own state (generated ticket secret, embedded database and store).
    pub data_dir: PathBuf,
    /// Seconds given to in-flight transfers to finish on shutdown.
    pub shutdown_grace_s: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: "node1".into(),
            listen: "127.0.0.1:7336".into(),
            public_url: "http://127.0.0.1:7336".into(),
            key_file: PathBuf::from("mft-data/node_key"),
            data_dir: PathBuf::from("mft-data"),
            shutdown_grace_s: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransferMode {
    Disabled,
    PeerToPeer,
    Managed,
    ManagedAndPeerToPeer,
}

impl TransferMode {
    /// Whether this node accepts managed (stored) transfers.
    pub fn managed_enabled(self) -> bool {
        matches!(
            self,
            TransferMode::Managed | TransferMode::ManagedAndPeerToPeer
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransferConfig {
    pub mode: TransferMode,
    /// Largest accepted file in bytes; 0 means the maximum, 4 GiB.
    pub max_file_size: u64,
    /// Seconds an upload may go without receiving a byte before it is abandoned.
    pub idle_timeout_s: u64,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            mode: TransferMode::Managed,
            max_file_size: 0,
            idle_timeout_s: 60,
        }
    }
}

impl TransferConfig {
    /// The effective size limit in bytes.
    pub fn effective_max_file_size(&self) -> u64 {
        if self.max_file_size == 0 {
            MAX_FILE_SIZE_LIMIT
        } else {
            self.max_file_size
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret shared with the chat server. When absent (and no public keys are given),
    /// a secret is generated once and kept in `<data_dir>/ticket_secret`.
    pub ticket_secret: Option<String>,
    /// PEM-encoded Ed25519 public keys whose EdDSA-signed tickets are also accepted.
    pub ticket_public_keys: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path` or `postgres://user@host:port/dbname`.
    pub url: String,
    /// Most rows written by one INSERT.
    pub batch_max_rows: usize,
    /// Longest a row waits for companions before its batch is written.
    pub batch_max_delay_ms: u64,
    /// Connections in the database pool.
    pub max_connections: u32,
    /// How long an upload waits for its row before it is refused with 503.
    pub commit_timeout_s: u64,
    /// 0 to 1023, distinct for every node sharing this database: part of each `aft_index`.
    /// When absent, derived from a hash of `node.id` (two ids may then collide, 1 in 1024).
    pub node_index: Option<u16>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://mft-data/aft_log.db".into(),
            batch_max_rows: 256,
            batch_max_delay_ms: 5,
            max_connections: 4,
            commit_timeout_s: 10,
            node_index: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileServerKind {
    Sftp,
    Local,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileServerConfig {
    pub kind: FileServerKind,
    /// Name of the file server (what `AFT_LOG.file_server` holds for the local backend).
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The node's own directory on the file server.
    pub directory: String,
    /// The pinned host key line, as `mft keyscan` or `ssh-keyscan` prints it.
    pub public_key: String,
    /// SSH connections in the pool.
    pub pool_size: usize,
    /// SFTP requests kept in flight per transfer.
    pub pipeline_depth: usize,
    /// Bytes per SFTP read or write request.
    pub chunk_size: usize,
    /// Seconds allowed to connect and authenticate.
    pub connect_timeout_s: u64,
    /// Seconds allowed for one SFTP request.
    pub request_timeout_s: u64,
}

impl Default for FileServerConfig {
    fn default() -> Self {
        FileServerConfig {
            kind: FileServerKind::Local,
            name: "fs1".into(),
            host: "127.0.0.1".into(),
            port: 22,
            user: "mftuser".into(),
            directory: "mft-data".into(),
            public_key: String::new(),
            pool_size: 8,
            // Measured (scripts/bench-compare, benches/sftp_e2e.rs): OpenSSH's largest
            // WRITE with 16 in flight costs the least CPU per byte on both ends; 4 MiB per
            // transfer at most.
            pipeline_depth: 16,
            chunk_size: 255 * 1024,
            connect_timeout_s: 10,
            request_timeout_s: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmsConfig {
    pub free_space_lower_threshold_percent: f64,
    pub free_space_upper_threshold_percent: f64,
    pub check_interval_s: u64,
    /// Optional URL that receives a JSON POST on every alarm raise and clear.
    pub webhook_url: Option<String>,
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig {
            free_space_lower_threshold_percent: 10.0,
            free_space_upper_threshold_percent: 15.0,
            check_interval_s: 30,
            webhook_url: None,
        }
    }
}

/// Whether `s` is a non-empty `[A-Za-z0-9_-]` word of at most `max` characters.
pub fn is_identifier(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `file_server.public_key` must parse, and a host it names must be this file server
/// (`host`, or `[host]:port` as ssh-keyscan prints it for other ports).
fn check_pinned_key(fs: &FileServerConfig) -> Result<(), ConfigError> {
    crate::store::sftp::keys::parse_pinned_key(&fs.public_key).map_err(|e| {
        let text = e.to_string();
        let reason = text
            .split_once("file_server.public_key: ")
            .map_or(text.as_str(), |(_, r)| r)
            .to_string();
        invalid("file_server.public_key", reason)
    })?;
    let first = fs.public_key.split_whitespace().next().unwrap_or("");
    let names_a_host = !(first.starts_with("ssh-")
        || first.starts_with("ecdsa-")
        || first.starts_with("sk-")
        || first.starts_with("rsa-"));
    if names_a_host {
        let bracketed = format!("[{}]:{}", fs.host, fs.port);
        let matches = first
            .split(',')
            .any(|h| h == bracketed || (fs.port == 22 && h == fs.host));
        if !matches {
            let expected = if fs.port == 22 {
                fs.host.clone()
            } else {
                bracketed
            };
            return Err(invalid(
                "file_server.public_key",
                format!(
                    "the key line is for `{first}`, not this file server (`{expected}`); \
                     print the right one with `mft keyscan {}:{}`",
                    fs.host, fs.port
                ),
            ));
        }
    }
    Ok(())
}

impl Config {
    /// Parses and validates configuration text; `origin` names it in error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads `path` if given; else `./mft.toml` if present; else the embedded default.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let chosen = match path {
            Some(p) => Some(p.to_path_buf()),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                default.exists().then_some(default)
            }
        };
        match chosen {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                Config::from_toml(&text, &p.display().to_string())
            }
            None => {
                let config = Config::default();
                config.validate()?;
                Ok(config)
            }
        }
    }

    /// Checks every value whose type alone does not make it valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_identifier(&self.node.id, 64) {
            return Err(invalid(
                "node.id",
                "must be 1 to 64 characters of [A-Za-z0-9_-]",
            ));
        }
        if self.node.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "node.listen",
                format!("`{}` is not an IP:port address", self.node.listen),
            ));
        }
        let url = &self.node.public_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(['?', '#'])
        {
            return Err(invalid(
                "node.public_url",
                "must be an http:// or https:// URL without query or fragment",
            ));
        }
        if self.transfer.max_file_size > MAX_FILE_SIZE_LIMIT {
            return Err(invalid(
                "transfer.max_file_size",
                format!("at most {MAX_FILE_SIZE_LIMIT} bytes (4 GiB); 0 means that maximum"),
            ));
        }
        if self.transfer.idle_timeout_s == 0 {
            return Err(invalid("transfer.idle_timeout_s", "must be at least 1"));
        }
        if let Some(secret) = &self.auth.ticket_secret
            && secret.len() < 16
        {
            return Err(invalid(
                "auth.ticket_secret",
                "must be at least 16 bytes long",
            ));
        }
        let db = &self.database;
        if !(db.url.starts_with("sqlite:")
            || db.url.starts_with("postgres://")
            || db.url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        if db.batch_max_rows == 0 || db.batch_max_rows > 10_000 {
            return Err(invalid("database.batch_max_rows", "must be 1 to 10000"));
        }
        if db.batch_max_delay_ms > 10_000 {
            return Err(invalid(
                "database.batch_max_delay_ms",
                "must be at most 10000",
            ));
        }
        if db.node_index.is_some_and(|i| i > 1023) {
            return Err(invalid("database.node_index", "must be 0 to 1023"));
        }
        if db.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if db.commit_timeout_s == 0 {
            return Err(invalid("database.commit_timeout_s", "must be at least 1"));
        }
        let fs = &self.file_server;
        if !is_identifier(&fs.name, 128) {
            return Err(invalid(
                "file_server.name",
                "must be 1 to 128 characters of [A-Za-z0-9_-]",
            ));
        }
        if fs.directory.is_empty() || fs.directory.contains('\0') {
            return Err(invalid("file_server.directory", "must be a directory path"));
        }
        if fs.directory.split('/').any(|c| c == "..") {
            return Err(invalid("file_server.directory", "must not contain `..`"));
        }
        if fs.kind == FileServerKind::Sftp {
            if fs.host.is_empty() {
                return Err(invalid(
                    "file_server.host",
                    "is required for kind = \"sftp\"",
                ));
            }
            if fs.user.is_empty() {
                return Err(invalid(
                    "file_server.user",
                    "is required for kind = \"sftp\"",
                ));
            }
            if !fs.directory.starts_with('/') {
                return Err(invalid(
                    "file_server.directory",
                    "must be an absolute path for kind = \"sftp\"",
                ));
            }
            if fs.public_key.trim().is_empty() {
                return Err(invalid(
                    "file_server.public_key",
                    "is required for kind = \"sftp\" (print it with `mft keyscan HOST:PORT`)",
                ));
            }
            if fs.port == 0 {
                return Err(invalid("file_server.port", "must be 1 to 65535"));
            }
            check_pinned_key(fs)?;
        }
        if fs.pool_size == 0 || fs.pool_size > 256 {
            return Err(invalid("file_server.pool_size", "must be 1 to 256"));
        }
        if fs.pipeline_depth == 0 || fs.pipeline_depth > 1024 {
            return Err(invalid("file_server.pipeline_depth", "must be 1 to 1024"));
        }
        if fs.chunk_size < 1024 || fs.chunk_size > 255 * 1024 {
            return Err(invalid(
                "file_server.chunk_size",
                "must be 1024 to 261120 bytes (OpenSSH's largest SFTP write)",
            ));
        }
        if fs.connect_timeout_s == 0 {
            return Err(invalid(
                "file_server.connect_timeout_s",
                "must be at least 1",
            ));
        }
        if fs.request_timeout_s == 0 {
            return Err(invalid(
                "file_server.request_timeout_s",
                "must be at least 1",
            ));
        }
        let al = &self.alarms;
        for (key, v) in [
            (
                "alarms.free_space_lower_threshold_percent",
                al.free_space_lower_threshold_percent,
            ),
            (
                "alarms.free_space_upper_threshold_percent",
                al.free_space_upper_threshold_percent,
            ),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(invalid(key, "must be a percentage from 0 to 100"));
            }
        }
        if al.free_space_lower_threshold_percent > al.free_space_upper_threshold_percent {
            return Err(invalid(
                "alarms.free_space_lower_threshold_percent",
                format!(
                    "lower threshold {} % is above the upper threshold {} %: the alarm would never clear",
                    al.free_space_lower_threshold_percent, al.free_space_upper_threshold_percent
                ),
            ));
        }
        if let Some(url) = &al.webhook_url
            && !(url.starts_with("http://") && url.len() > "http://".len())
        {
            return Err(invalid(
                "alarms.webhook_url",
                "must be an http:// URL (an internal receiver; TLS is not supported)",
            ));
        }
        if al.check_interval_s == 0 {
            return Err(invalid("alarms.check_interval_s", "must be at least 1"));
        }
        Ok(())
    }

    /// The URL path prefix of `node.public_url` (empty, or `/prefix` without trailing slash).
    pub fn public_path_prefix(&self) -> String {
        let rest = self
            .node
            .public_url
            .split_once("://")
            .map(|(_, r)| r)
            .unwrap_or("");
        match rest.find('/') {
            Some(i) => rest[i..].trim_end_matches('/').to_string(),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_local() {
        let c = Config::default();
        c.validate().expect("default config must validate");
        assert_eq!(c.file_server.kind, FileServerKind::Local);
        assert_eq!(c.transfer.effective_max_file_size(), 4_294_967_296);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[node]\nidd = \"x\"\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("idd"), "{err}");
    }

    #[test]
    fn inverted_thresholds_refused() {
        let text = "[alarms]\nfree_space_lower_threshold_percent = 20\nfree_space_upper_threshold_percent = 15\n";
        let err = Config::from_toml(text, "t.toml").unwrap_err();
        assert!(
            err.to_string()
                .contains("alarms.free_space_lower_threshold_percent"),
            "{err}"
        );
    }

    #[test]
    fn bad_mode_refused() {
        let err = Config::from_toml("[transfer]\nmode = \"sometimes\"\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("mode"), "{err}");
    }

    #[test]
    fn pinned_key_checked_against_host() {
        const KEY: &str =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEyaKwTLkxpJzFZPQE1WurTVS4DAl+fQi6E7sSyx1l+q";
        let base = "[file_server]\nkind = \"sftp\"\nhost = \"10.0.0.5\"\nport = 2222\ndirectory = \"/srv/mft\"\n";
        let with = |line: &str| format!("{base}public_key = \"{line}\"\n");
        assert!(Config::from_toml(&with(&format!("[10.0.0.5]:2222 {KEY}")), "t").is_ok());
        assert!(Config::from_toml(&with(KEY), "t").is_ok());
        for bad in [
            format!("otherhost {KEY}"),
            format!("10.0.0.5 {KEY}"),
            "10.0.0.5 ssh-ed25519 AAAAnotbase64".to_string(),
        ] {
            let err = Config::from_toml(&with(&bad), "t").unwrap_err();
            assert!(err.to_string().contains("file_server.public_key"), "{err}");
        }
    }

    #[test]
    fn path_prefix() {
        let mut c = Config::default();
        c.node.public_url = "https://chat.example/mft/".into();
        assert_eq!(c.public_path_prefix(), "/mft");
        c.node.public_url = "http://h:1".into();
        assert_eq!(c.public_path_prefix(), "");
    }
}
