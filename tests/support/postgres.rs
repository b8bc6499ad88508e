//! A throwaway PostgreSQL 15 server for integration tests: `initdb` into a temp dir, `postgres`
//! on a free loopback port as a child process (as the `postgres` user when the tests run as
//! root, since PostgreSQL refuses to run as root), database `mft` created, stopped on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or stopped) test PostgreSQL server.
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// `Some((uid, gid))` of the `postgres` user when running as root.
    run_as: Option<(u32, u32)>,
}

impl Postgres {
    /// Initializes a cluster and starts it; panics with the reason if it cannot.
    pub fn start() -> Postgres {
        for tool in ["initdb", "postgres", "pg_isready", "createdb"] {
            if bin(tool).is_none() {
                panic!("{tool} not found in {BIN_DIR} or on PATH: install postgresql (15)");
            }
        }
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(postgres_user())
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("mft-pg-")
            .tempdir()
            .expect("create a temp dir for PostgreSQL");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the PostgreSQL temp dir to the postgres user");
        }
        let mut pg = Postgres {
            dir,
            port: free_port(),
            child: None,
            run_as,
        };
        let data = pg.data_dir();
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        pg.spawn();
        let out = pg
            .command("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "mft",
            ])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/mft`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/mft", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Fast shutdown (clients disconnected, data kept); returns once the server has exited.
    pub fn stop(&mut self) {
        self.signal_postmaster(libc::SIGINT);
        self.wait_exit(READY_TIMEOUT);
    }

    /// Starts the server again on the same port with the same data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "PostgreSQL is already running");
        self.spawn();
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command for a PostgreSQL tool, run as the `postgres` user when we are root.
    fn command(&self, tool: &str) -> Command {
        let path = bin(tool).unwrap_or_else(|| panic!("{tool} missing: install postgresql"));
        match self.run_as {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn spawn(&mut self) {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the PostgreSQL log");
        let log2 = log.try_clone().expect("clone log handle");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=100"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Own process group, so drop can kill the server and its backends together.
            .process_group(0)
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "postgres exited during start ({status}):\n{}",
                    self.log_tail()
                );
            }
            let ready = self
                .command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", "-d", "postgres"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "postgres did not accept connections within {READY_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The postmaster's pid, from `postmaster.pid` (the child may be `runuser`).
    fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    fn signal_postmaster(&self, signal: i32) {
        if self.child.is_none() {
            return;
        }
        if let Some(pid) = self.postmaster_pid() {
            // SAFETY: plain kill(2) on the pid our own child's server wrote.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Waits for the child to exit; after `timeout`, kills its process group.
    fn wait_exit(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    // SAFETY: kill(2) on the process group we created for our own child.
                    unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
                    let _ = child.wait();
                    break;
                }
            }
        }
        // Backends left behind by a killed postmaster share its group.
        // SAFETY: as above; ESRCH when the group is already gone is fine.
        unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown releases shared memory; the group kill is the fallback.
        self.signal_postmaster(libc::SIGQUIT);
        self.wait_exit(Duration::from_secs(5));
        // The TempDir field removes the directory.
    }
}

fn bin(tool: &str) -> Option<PathBuf> {
    let p = Path::new(BIN_DIR).join(tool);
    if p.exists() {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.exists())
    })
}

fn postgres_user() -> (u32, u32) {
    let name = c"postgres";
    // SAFETY: getpwnam with a valid C string; fields are read before any other call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        panic!("no `postgres` system user: install postgresql (tests run as root need it)");
    }
    // SAFETY: non-null pointer returned by getpwnam.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}
