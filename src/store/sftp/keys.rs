//! SSH keys: the node's key pair (`mft keygen`), the pinned file server host key (parsing,
//! fingerprints, preferred algorithms) and `mft keyscan`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::RsaKeypair;
use russh::keys::ssh_key::rand_core::{Infallible, TryCryptoRng, TryRng};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey, PublicKeyOrCertificate};

use crate::store::StoreError;

/// Size of the RSA keys `keygen` creates.
const RSA_BITS: usize = 3072;

/// The kind of key pair `keygen` creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Ed25519,
    Rsa,
}

impl std::str::FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(KeyType::Ed25519),
            "rsa" => Ok(KeyType::Rsa),
            other => Err(format!("unknown key type `{other}` (ed25519 or rsa)")),
        }
    }
}

/// Bridges the crate's `rand` (0.9) thread RNG, a CSPRNG seeded from the OS, to the
/// `rand_core` 0.10 traits that russh's `ssh-key` expects.
struct KeyRng;

impl TryRng for KeyRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(rand::random())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(rand::random())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        rand::Rng::fill(&mut rand::rng(), dst);
        Ok(())
    }
}

impl TryCryptoRng for KeyRng {}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Creates the node's key pair: an OpenSSH private key at `path` (mode 0600, parent
/// directories created) and its public half at `path.pub`. Refuses to overwrite an existing
/// key. Returns the public key line for the file server's `authorized_keys`.
pub fn keygen(path: &Path, kind: KeyType) -> Result<String, StoreError> {
    if path.exists() {
        return Err(StoreError::Io(format!(
            "a key already exists at {}; refusing to overwrite it (move it away first)",
            path.display()
        )));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| {
            StoreError::Io(format!("cannot create directory {}: {e}", parent.display()))
        })?;
    }
    let mut rng = KeyRng;
    let mut key = match kind {
        KeyType::Ed25519 => PrivateKey::random(&mut rng, Algorithm::Ed25519),
        KeyType::Rsa => RsaKeypair::random(&mut rng, RSA_BITS).map(PrivateKey::from),
    }
    .map_err(|e| StoreError::Io(format!("key generation failed: {e}")))?;
    key.set_comment(format!("mft@{}", hostname()));
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| StoreError::Io(format!("cannot encode the private key: {e}")))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| StoreError::Io(format!("cannot encode the public key: {e}")))?;

    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(private.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::Io(format!("cannot write {}: {e}", path.display())))?;
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    fs::write(&pub_path, format!("{public}\n")).map_err(|e| {
        StoreError::Io(format!(
            "cannot write {}: {e}",
            Path::new(&pub_path).display()
        ))
    })?;
    Ok(public)
}

/// Loads the node's private key (OpenSSH format, unencrypted).
pub(crate) fn load_node_key(path: &Path) -> Result<PrivateKey, StoreError> {
    if !path.exists() {
        return Err(StoreError::Auth(format!(
            "node key {} does not exist (create it with `mft keygen`)",
            path.display()
        )));
    }
    russh::keys::load_secret_key(path, None).map_err(|e| {
        StoreError::Auth(format!(
            "cannot load node key {} (an unencrypted OpenSSH ed25519 or RSA key is expected): {e}",
            path.display()
        ))
    })
}

/// Parses a pinned host key line: `host ALG BASE64 [comment]`, `[host]:port ALG BASE64`, or
/// just `ALG BASE64`.
pub fn parse_pinned_key(line: &str) -> Result<PublicKey, StoreError> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let looks_like_alg = |t: &str| {
        t.starts_with("ssh-")
            || t.starts_with("ecdsa-")
            || t.starts_with("sk-")
            || t.starts_with("rsa-")
    };
    let start = match tokens.first() {
        Some(t) if looks_like_alg(t) => 0,
        Some(_) => 1,
        None => {
            return Err(StoreError::Io(
                "file_server.public_key is empty (print it with `mft keyscan HOST:PORT`)".into(),
            ));
        }
    };
    let (Some(alg), Some(b64)) = (tokens.get(start), tokens.get(start + 1)) else {
        return Err(StoreError::Io(
            "file_server.public_key: expected `host key-type base64-key`".into(),
        ));
    };
    PublicKey::from_openssh(&format!("{alg} {b64}")).map_err(|e| {
        StoreError::Io(format!(
            "file_server.public_key: cannot parse the `{alg}` key: {e}"
        ))
    })
}

/// `SHA256:...` fingerprint, as `ssh-keygen -l` prints it.
pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Host key algorithms to offer so that the server signs with the pinned key's type (with
/// the default list a server holding several keys would pick ed25519 and fail the check).
pub(crate) fn host_key_algorithms(pinned: &PublicKey) -> Vec<Algorithm> {
    match pinned.algorithm() {
        Algorithm::Rsa { .. } => vec![
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
            Algorithm::Rsa { hash: None },
        ],
        other => vec![other],
    }
}

/// A russh client handler that accepts only the pinned host key, and remembers what the
/// server offered so a mismatch can show both fingerprints.
pub(crate) struct PinnedHostKey {
    pub(crate) pinned: Option<PublicKey>,
    pub(crate) offered: Arc<Mutex<Option<PublicKey>>>,
}

impl russh::client::Handler for PinnedHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let offered = server_public_key.public_key();
        let ok = self
            .pinned
            .as_ref()
            .is_some_and(|p| p.key_data() == offered.key_data());
        if let Ok(mut slot) = self.offered.lock() {
            *slot = Some(offered);
        }
        Ok(ok)
    }
}

/// Connects to `host:port`, captures the server's host key and returns it as a line ready for
/// `file_server.public_key` (`host ALG BASE64`, or `[host]:port ALG BASE64` off port 22).
pub async fn keyscan(host: &str, port: u16, timeout: Duration) -> Result<String, StoreError> {
    let offered = Arc::new(Mutex::new(None));
    let handler = PinnedHostKey {
        pinned: None,
        offered: offered.clone(),
    };
    let config = Arc::new(russh::client::Config::default());
    let attempt = tokio::time::timeout(
        timeout,
        russh::client::connect(config, (host, port), handler),
    )
    .await;
    let key = offered.lock().ok().and_then(|mut k| k.take());
    match (key, attempt) {
        (Some(key), _) => {
            let mut key = key;
            key.set_comment("");
            let text = key
                .to_openssh()
                .map_err(|e| StoreError::Io(format!("cannot encode the host key: {e}")))?;
            let name = if port == 22 {
                host.to_string()
            } else {
                format!("[{host}]:{port}")
            };
            Ok(format!("{name} {}", text.trim()))
        }
        (None, Err(_)) => Err(StoreError::Unavailable(format!(
            "{host}:{port}: no host key within {} s",
            timeout.as_secs_f64()
        ))),
        (None, Ok(Err(e))) => Err(StoreError::Unavailable(format!("{host}:{port}: {e}"))),
        (None, Ok(Ok(_))) => Err(StoreError::Unavailable(format!(
            "{host}:{port}: the server presented no host key"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_key_forms() {
        let b64 = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        for line in [
            format!("127.0.0.1 ssh-ed25519 {b64}"),
            format!("[127.0.0.1]:2222 ssh-ed25519 {b64} comment"),
            format!("ssh-ed25519 {b64}"),
        ] {
            let key = parse_pinned_key(&line).expect(&line);
            assert_eq!(key.algorithm(), Algorithm::Ed25519);
            assert!(fingerprint(&key).starts_with("SHA256:"));
        }
        assert!(parse_pinned_key("host ssh-ed25519").is_err());
        assert!(parse_pinned_key("host ssh-ed25519 AAAAnotbase64!").is_err());
    }

    #[test]
    fn keygen_refuses_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/node_key");
        let line = keygen(&path, KeyType::Ed25519).expect("keygen");
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert!(line.contains(" mft@"), "{line}");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(&path).expect("metadata").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        load_node_key(&path).expect("load back");
        let err = keygen(&path, KeyType::Ed25519).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    }
}
