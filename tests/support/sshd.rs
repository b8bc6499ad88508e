//! A real OpenSSH server on a loopback port for integration tests: fresh host key, the node
//! key (made by `mft::store::sftp::keygen`) in its authorized_keys, a temporary directory to
//! use as the node's file server directory. Stopped (with all its session processes) on drop.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mft::config::{FileServerConfig, FileServerKind};
use mft::store::sftp::{KeyType, keygen};

const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    host_key_line: String,
    user: String,
}

impl Sshd {
    /// Starts sshd on a free loopback port. Panics with a clear message when it cannot.
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server to run the SFTP tests"
        );
        // Privilege separation directory; sshd refuses to start without it.
        let _ = fs::create_dir_all("/run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("mft-sshd-")
            .tempdir()
            .expect("creating the sshd temp dir");
        let host_key = dir.path().join("host_ed25519");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "mft-test-host", "-f"])
            .arg(&host_key)
            .output()
            .expect("running ssh-keygen (install openssh-client)");
        assert!(
            out.status.success(),
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let host_pub = fs::read_to_string(dir.path().join("host_ed25519.pub"))
            .expect("reading the host public key");
        let mut parts = host_pub.split_whitespace();
        let (alg, b64) = (
            parts.next().expect("host key type"),
            parts.next().expect("host key data"),
        );

        let node_key = dir.path().join("node_key");
        let node_pub = keygen(&node_key, KeyType::Ed25519).expect("generating the node key");
        fs::write(dir.path().join("authorized_keys"), format!("{node_pub}\n"))
            .expect("writing authorized_keys");
        fs::create_dir_all(dir.path().join("root")).expect("creating the root dir");

        let port = free_port();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\n\
             HostKey {hk}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {ak}\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\n\
             StrictModes no\n\
             UsePAM no\n\
             MaxStartups 100\n\
             Subsystem sftp internal-sftp\n\
             LogLevel ERROR\n",
            hk = host_key.display(),
            pid = dir.path().join("sshd.pid").display(),
            ak = dir.path().join("authorized_keys").display(),
        );
        fs::write(dir.path().join("sshd_config"), config).expect("writing sshd_config");

        let mut sshd = Sshd {
            host_key_line: format!("[127.0.0.1]:{port} {alg} {b64}"),
            dir,
            port,
            child: None,
            user: current_user(),
        };
        sshd.spawn();
        sshd
    }

    fn spawn(&mut self) {
        let log = fs::File::create(self.dir.path().join("sshd.log")).expect("creating sshd.log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sshd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "sshd exited at start ({status}): {}",
                    fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not accept connections on 127.0.0.1:{} within 10 s: {}",
                self.port,
                fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA…`, as ssh-keyscan prints it.
    pub fn host_key_line(&self) -> String {
        self.host_key_line.clone()
    }

    /// A well-formed host key line for this server with a key it does not hold.
    pub fn wrong_host_key_line(&self) -> String {
        let path = self.dir.path().join(format!(
            "wrong_key_{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let public = keygen(&path, KeyType::Ed25519).expect("generating a wrong host key");
        let mut parts = public.split_whitespace();
        let (alg, b64) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        format!("[127.0.0.1]:{} {alg} {b64}", self.port)
    }

    /// The node's private key (authorized for `user()`).
    pub fn node_key_path(&self) -> PathBuf {
        self.dir.path().join("node_key")
    }

    pub fn user(&self) -> String {
        self.user.clone()
    }

    /// A directory on the server to use as `file_server.directory`.
    pub fn root_dir(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn file_server_config(&self) -> FileServerConfig {
        FileServerConfig {
            kind: FileServerKind::Sftp,
            name: "fs1".into(),
            host: "127.0.0.1".into(),
            port: self.port,
            user: self.user(),
            directory: self.root_dir().display().to_string(),
            public_key: self.host_key_line(),
            pool_size: 4,
            connect_timeout_s: 5,
            request_timeout_s: 30,
            ..FileServerConfig::default()
        }
    }

    /// Stops sshd and every session process it started, so clients see their connections die.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            for p in descendants(pid) {
                // SAFETY: plain kill(2) on processes this test started.
                unsafe {
                    libc::kill(p as libc::pid_t, libc::SIGKILL);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts sshd again on the same port with the same keys.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    l.local_addr().expect("local address").port()
}

fn current_user() -> String {
    if let Ok(u) = std::env::var("USER")
        && !u.is_empty()
    {
        return u;
    }
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".to_string())
}

/// All descendants of `pid` (children first found through /proc).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // The command name may hold spaces: the fields after the last ')' are fixed.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parents.push((p, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parents {
            if pp == parent && !found.contains(&p) {
                found.push(p);
                frontier.push(p);
            }
        }
    }
    found
}
