//! What is being driven: where requests go, how tickets are minted, and where files land.
//!
//! Built from the node's own configuration file (public URL, ticket secret, file server), with
//! `--url` and `--secret` overriding. The tool mints tickets with the node's secret, as the chat
//! server would, and reads the file server with the node's own store code to verify layout.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use mft::config::Config;
use mft::store::FileStore;
use mft::ticket::TicketAuthority;

/// A node under test.
pub struct Target {
    /// Base URL requests are sent to (no trailing slash).
    pub base_url: String,
    /// Base URL the node writes into the URIs it hands out (`node.public_url`).
    pub public_url: String,
    pub tickets: TicketAuthority,
    /// The node's configuration: its id, size limit and file server.
    pub config: Config,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("base_url", &self.base_url)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// `url` and `secret` override the configuration's `node.public_url` and ticket secret.
    /// Unless `allow_remote`, only loopback targets are accepted: a load test pointed at a
    /// production node by mistake is an outage.
    pub fn new(
        config: Config,
        url: Option<&str>,
        secret: Option<&str>,
        allow_remote: bool,
    ) -> anyhow::Result<Target> {
        let public_url = config.node.public_url.trim_end_matches('/').to_string();
        let base_url = url.map_or(public_url.clone(), |u| u.trim_end_matches('/').to_string());
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            bail!("target URL `{base_url}` is not an http:// or https:// URL");
        }
        if !allow_remote && !is_loopback_url(&base_url) {
            bail!(
                "target `{base_url}` is not a loopback address; pass --allow-remote to load a \
                 remote node on purpose"
            );
        }
        let secret = match secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                let generated = config.node.data_dir.join("ticket_secret");
                if config.auth.ticket_secret.is_none() && !generated.exists() {
                    bail!(
                        "no ticket secret: the configuration has no auth.ticket_secret and {} \
                         does not exist; pass --secret",
                        generated.display()
                    );
                }
                mft::node::load_ticket_secret(&config).context("reading the ticket secret")?
            }
        };
        let tickets = TicketAuthority::new(&secret, &[]).context("ticket secret")?;
        Ok(Target {
            base_url,
            public_url,
            tickets,
            config,
        })
    }

    /// Where uploads are posted.
    pub fn upload_url(&self) -> String {
        format!("{}/files", self.base_url)
    }

    /// Where to fetch a URI the node handed out: the URI itself, unless `--url` redirected the
    /// tool elsewhere than `node.public_url`, in which case the same path under the target.
    pub fn download_url(&self, uri: &str) -> String {
        if self.base_url != self.public_url
            && let Some(rest) = uri.strip_prefix(&self.public_url)
        {
            return format!("{}{rest}", self.base_url);
        }
        uri.to_string()
    }

    /// The largest accepted upload.
    pub fn max_file_size(&self) -> u64 {
        self.config.transfer.effective_max_file_size()
    }

    /// The node's file store, opened with the node's own configuration.
    pub fn store(&self) -> anyhow::Result<Arc<dyn FileStore>> {
        mft::node::open_store(&self.config).context("opening the file server")
    }
}

/// Whether the URL's host is a loopback address or `localhost`.
pub fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_url("http://127.0.0.1:7336"));
        assert!(is_loopback_url("http://127.1.2.3/prefix"));
        assert!(is_loopback_url("http://localhost:8080/x"));
        assert!(is_loopback_url("http://[::1]:7336"));
        assert!(!is_loopback_url("http://192.168.1.10:7336"));
        assert!(!is_loopback_url("https://mft.example.com"));
        assert!(!is_loopback_url("http://127.0.0.1.example.com"));
        assert!(!is_loopback_url("not a url"));
    }

    #[test]
    fn download_url_follows_the_target_override() {
        let mut config = Config::default();
        config.node.public_url = "http://127.0.0.1:7336/mft".into();
        let t = Target::new(
            config,
            Some("http://127.0.0.1:9000/mft/"),
            Some("0123456789abcdef0123"),
            false,
        )
        .expect("target");
        assert_eq!(t.upload_url(), "http://127.0.0.1:9000/mft/files");
        assert_eq!(
            t.download_url("http://127.0.0.1:7336/mft/files/node1/im/20260101/00/r/f"),
            "http://127.0.0.1:9000/mft/files/node1/im/20260101/00/r/f"
        );
        assert_eq!(t.download_url("http://other/x"), "http://other/x");
    }

    #[test]
    fn remote_targets_need_consent() {
        let mut config = Config::default();
        config.node.public_url = "http://10.0.0.5:7336".into();
        let err = Target::new(config.clone(), None, Some("0123456789abcdef0123"), false)
            .expect_err("refused");
        assert!(err.to_string().contains("--allow-remote"));
        assert!(Target::new(config, None, Some("0123456789abcdef0123"), true).is_ok());
    }
}
