//! The `mft` binary as an operator runs it: keygen, keyscan, status, ticket, migrate, and
//! configuration errors, against a real sshd and PostgreSQL.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::postgres::Postgres;
use support::sshd::Sshd;

fn mft(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mft"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running mft")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_config(dir: &Path, sshd: &Sshd, pg_url: &str, public_key: &str, key_file: &Path) {
    let fs = sshd.file_server_config();
    std::fs::write(
        dir.join("mft.toml"),
        format!(
            r#"[node]
id = "node1"
key_file = "{key}"

[auth]
ticket_secret = "cli-test-secret-0123456789abcdef"

[database]
url = "{pg_url}"

[file_server]
kind = "sftp"
host = "127.0.0.1"
port = {port}
user = "{user}"
directory = "{dir}"
public_key = "{public_key}"
"#,
            key = key_file.display(),
            port = fs.port,
            user = fs.user,
            dir = fs.directory,
        ),
    )
    .expect("writing mft.toml");
}

#[test]
fn keygen_keyscan_status_migrate_against_real_servers() {
    let sshd = Sshd::start();
    let mut pg = Postgres::start();
    let work = tempfile::tempdir().expect("temp dir");

    // keyscan prints the line sshd really has.
    let out = mft(
        work.path(),
        &["keyscan", &format!("127.0.0.1:{}", sshd.port())],
    );
    assert!(out.status.success(), "{}", text(&out));
    let scanned = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(scanned, sshd.host_key_line().trim());

    // keygen writes a key and refuses to overwrite it.
    let key = work.path().join("keys/node_key");
    std::fs::write(
        work.path().join("keygen.toml"),
        format!("[node]\nkey_file = \"{}\"\n", key.display()),
    )
    .expect("config");
    let out = mft(work.path(), &["--config", "keygen.toml", "keygen"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ssh-ed25519 "));
    assert!(key.exists());
    let out = mft(work.path(), &["--config", "keygen.toml", "keygen"]);
    assert!(!out.status.success(), "overwrote an existing key");

    // status: OK with the right host key and the authorized node key.
    write_config(
        work.path(),
        &sshd,
        &pg.url(),
        &scanned,
        &sshd.node_key_path(),
    );
    let out = mft(work.path(), &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = mft(work.path(), &["status"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("database:    OK"), "{said}");
    assert!(said.contains("file server: OK"), "{said}");

    // status: a wrong host key is named, with both fingerprints.
    write_config(
        work.path(),
        &sshd,
        &pg.url(),
        &sshd.wrong_host_key_line(),
        &sshd.node_key_path(),
    );
    let out = mft(work.path(), &["status"]);
    let said = text(&out);
    assert!(!out.status.success());
    assert!(said.contains("host key"), "{said}");
    assert!(said.matches("SHA256:").count() >= 2, "{said}");

    // status: a key the server does not know.
    write_config(work.path(), &sshd, &pg.url(), &scanned, &key);
    let out = mft(work.path(), &["status"]);
    let said = text(&out);
    assert!(!out.status.success());
    assert!(said.contains("file server: FAILED"), "{said}");
    assert!(said.to_lowercase().contains("auth"), "{said}");

    // status: the database down.
    write_config(
        work.path(),
        &sshd,
        &pg.url(),
        &scanned,
        &sshd.node_key_path(),
    );
    pg.stop();
    let out = mft(work.path(), &["status"]);
    let said = text(&out);
    assert!(!out.status.success());
    assert!(said.contains("database:    FAILED"), "{said}");
    assert!(said.contains("file server: OK"), "{said}");
}

#[test]
fn tickets_and_config_errors() {
    let work = tempfile::tempdir().expect("temp dir");
    let out = mft(
        work.path(),
        &[
            "ticket", "upload", "--from", "a@x", "--to", "b@x", "--chat", "im", "--name", "f.pdf",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    // The secret was generated once and is reused.
    let secret =
        std::fs::read_to_string(work.path().join("mft-data/ticket_secret")).expect("secret");
    let auth = mft::ticket::TicketAuthority::new(secret.trim().as_bytes(), &[]).expect("authority");
    let claims = auth
        .verify_upload(&token)
        .expect("verifies with the stored secret");
    assert_eq!(
        (claims.sub.as_str(), claims.name.as_str()),
        ("a@x", "f.pdf")
    );

    let out = mft(
        work.path(),
        &[
            "ticket", "upload", "--from", "a", "--to", "b", "--chat", "voice", "--name", "x",
        ],
    );
    assert!(!out.status.success());

    // status changes nothing: a mistyped SQLite path is reported, not created.
    std::fs::write(
        work.path().join("typo.toml"),
        "[database]\nurl = \"sqlite://nonexistent-dir/aft.db\"\n",
    )
    .expect("config");
    let out = mft(work.path(), &["--config", "typo.toml", "status"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("database:    FAILED") && said.contains("does not exist"),
        "{said}"
    );
    assert!(
        !work.path().join("nonexistent-dir").exists(),
        "status created files"
    );

    for (toml, key) in [
        ("[node]\nidd = 1\n", "idd"),
        ("[node]\nid = \"bad id!\"\n", "node.id"),
        (
            "[transfer]\nmax_file_size = 4294967297\n",
            "transfer.max_file_size",
        ),
        (
            "[alarms]\nfree_space_lower_threshold_percent = 30\nfree_space_upper_threshold_percent = 20\n",
            "alarms.free_space_lower_threshold_percent",
        ),
        (
            "[file_server]\nkind = \"sftp\"\ndirectory = \"/srv/x\"\n",
            "file_server.public_key",
        ),
        ("[database]\nurl = \"mysql://x\"\n", "database.url"),
    ] {
        std::fs::write(work.path().join("bad.toml"), toml).expect("config");
        let out = mft(work.path(), &["--config", "bad.toml", "serve"]);
        let said = text(&out);
        assert!(!out.status.success(), "{toml} accepted");
        assert!(
            said.contains(key),
            "{toml}: message does not name `{key}`: {said}"
        );
    }
}
