//! browserd reaches a PostgreSQL that requires TLS, as every managed one does: a real
//! PostgreSQL started with `ssl = on`, a certificate this test makes (openssl, a CA of its
//! own, the server named `localhost`), and a pg_hba.conf that takes only TLS connections.
//! `sslmode` and `sslrootcert` are read from the `--database` URL.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_browserd");

/// A PostgreSQL of this test's own, stopped on drop.
struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .output();
    }
}

/// `program` as the `postgres` user (initdb and the server refuse root).
fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--reset-env",
    ])
    .arg(program);
    c
}

fn run(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut c = Command::new("openssl");
    c.current_dir(dir).args(args);
    run(c);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA, a server certificate it signed for `localhost` only, and a PostgreSQL on a free
/// loopback port that takes TLS connections only.
fn start() -> Postgres {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (the test command installs it)")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .find(|b| b.join("initdb").exists())
        .expect("an initdb");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=browserd test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(d.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    // A CA nobody signed the server with, for the refusal.
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=another CA",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
        ],
    );
    let mut chown = Command::new("chown");
    chown.args(["-R", "postgres:postgres"]).arg(d);
    run(chown);
    let mut chmod = Command::new("chmod");
    chmod.args(["0600"]).arg(d.join("server.key"));
    run(chmod);
    // Readable by the test (root) and by browserd, which reads the CA file.
    let mut chmod = Command::new("chmod");
    chmod.args(["0755"]).arg(d);
    run(chmod);

    let data = d.join("data");
    let mut initdb = as_postgres(&bin.join("initdb"));
    initdb
        .args(["-A", "trust", "-U", "postgres", "-D"])
        .arg(&data);
    run(initdb);
    let port = free_port();
    std::fs::write(
        data.join("postgresql.conf"),
        format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            d.display(),
            d.join("server.pem").display(),
            d.join("server.key").display()
        ),
    )
    .unwrap();
    // TLS only: a plain connection finds no line that takes it.
    std::fs::write(
        data.join("pg_hba.conf"),
        "hostssl all all 127.0.0.1/32 trust\nlocal all all trust\n",
    )
    .unwrap();
    let mut ctl = as_postgres(&bin.join("pg_ctl"));
    ctl.args(["start", "-w", "-l"])
        .arg(d.join("log"))
        .arg("-D")
        .arg(&data);
    run(ctl);
    Postgres { bin, dir, port }
}

/// `browserd nodes list` against `url`: it opens the shared database (and brings its
/// schema up to date), so it succeeds only if the connection does.
fn nodes_list(url: &str) -> (bool, String) {
    let data_dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(["nodes", "list"])
        .env("BROWSERD_DATABASE", url)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_postgresql_that_requires_tls_is_reached_with_sslmode_and_refused_without() {
    let pg = start();
    let port = pg.port;
    let ca = pg.dir.path().join("ca.pem");
    let other = pg.dir.path().join("other.pem");

    // require: encrypted, the certificate not checked.
    let (ok, out) = nodes_list(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require"
    ));
    assert!(ok, "sslmode=require: {out}");
    assert!(out.contains("NAME"), "{out}");

    // verify-full: the CA file and the host name both checked.
    let (ok, out) = nodes_list(&format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        ca.display()
    ));
    assert!(ok, "verify-full with the right CA and name: {out}");

    // verify-ca: the CA checked, not the name (an address the certificate does not name).
    let (ok, out) = nodes_list(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-ca&sslrootcert={}",
        ca.display()
    ));
    assert!(ok, "verify-ca by address: {out}");

    // verify-full by an address the certificate does not name: refused, and said so.
    let (ok, out) = nodes_list(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        ca.display()
    ));
    assert!(!ok, "verify-full with the wrong host name connected: {out}");
    assert!(
        out.contains("could not open the shared database")
            && out.to_lowercase().contains("certificate"),
        "the error names the certificate: {out}"
    );

    // A CA that did not sign the server's certificate: refused.
    let (ok, out) = nodes_list(&format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-ca&sslrootcert={}",
        other.display()
    ));
    assert!(!ok, "verify-ca with another CA connected: {out}");
    assert!(out.to_lowercase().contains("certificate"), "{out}");

    // No TLS: the server refuses the plain connection, and browserd says who refused.
    let (ok, out) = nodes_list(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    ));
    assert!(!ok, "a plain connection was taken: {out}");
    assert!(out.contains("no encryption"), "the server's reason: {out}");
}
