//! A PostgreSQL server on loopback: user `kurz`, trust authentication (it listens on
//! 127.0.0.1 only), its own data directory.
//!
//! Two kinds, one implementation of starting, readiness and stopping:
//! - [`PostgresServer::start`]: throwaway, for a test, in a temporary directory on a free
//!   port. `initdb` takes a second or two, so it runs once per machine and PostgreSQL version
//!   into a cached cluster under the system temp directory; each server starts from a copy of
//!   it (tens of milliseconds). Durability settings are relaxed for speed where it cannot
//!   change what tests observe: `fsync=off` loses data only if the *machine* crashes, while a
//!   killed server still finds every acknowledged commit in the WAL (synchronous_commit stays
//!   on).
//! - [`PostgresServer::keep`]: kept, for the local stack and the benches (through the
//!   `kurz-servers` binary), in a directory that outlives it (`.kurz/pg`), on a given port,
//!   durable, `initdb`'ed on first use.

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio_postgres::NoTls;

use crate::process::{Home, ServerProcess, free_port, hand_over, run_as_server_user, server_dir};

/// How to stop the server (PostgreSQL's shutdown modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// SIGINT: abort sessions, checkpoint, exit.
    Fast,
    /// SIGQUIT: exit at once without a checkpoint, as a crash would; recovery replays the WAL.
    Immediate,
}

#[derive(Debug)]
pub struct PostgresServer {
    home: Home,
    bindir: PathBuf,
    port: u16,
    durable: bool,
    process: ServerProcess,
}

impl PostgresServer {
    /// Starts a fresh cluster (user `kurz`, trust authentication) on a free port.
    pub async fn start() -> Self {
        let bindir = find_bindir();
        let cached = cached_cluster(&bindir);
        let dir = server_dir("kurz-pg-");
        copy_cluster(&cached, &dir.path().join("data"));
        let mut server = Self {
            home: Home::Temporary(dir),
            bindir,
            port: 0,
            durable: false,
            process: ServerProcess::default(),
        };
        // A free port can be taken by someone else before the server binds it: try another.
        for _ in 0..5 {
            server.port = free_port();
            if server.launch().await {
                return server;
            }
        }
        panic!("PostgreSQL did not start; log:\n{}", server.log());
    }

    /// Starts the kept cluster in `dir/data` on 127.0.0.1:`port` (running `initdb` first when
    /// there is none) with the database `database`, durable. As root the server runs as
    /// `nobody`, so every directory above `dir` must let `nobody` through: the error says
    /// which one does not.
    pub async fn keep(dir: &Path, port: u16, database: &str) -> anyhow::Result<Self> {
        let bindir = find_bindir();
        prepare_kept_dir(dir)?;
        let data = dir.join("data");
        if let Ok(pid) = std::fs::read_to_string(data.join("postmaster.pid")) {
            let pid = pid.lines().next().unwrap_or_default().trim().to_owned();
            if pid
                .parse::<libc::pid_t>()
                .is_ok_and(crate::process::is_alive)
            {
                anyhow::bail!(
                    "the PostgreSQL of {} is already running (pid {pid}); stop it first",
                    dir.display()
                );
            }
        }
        if !data.join("PG_VERSION").exists() {
            initdb_kept(&bindir, dir)?;
        }
        let socket = dir.join("run").join(format!(".s.PGSQL.{port}"));
        anyhow::ensure!(
            socket.as_os_str().len() <= 107,
            "the PostgreSQL socket path {} is longer than 107 bytes; use a shorter directory",
            socket.display()
        );
        let server = Self {
            home: Home::Kept(dir.to_owned()),
            bindir,
            port,
            durable: true,
            process: ServerProcess::default(),
        };
        anyhow::ensure!(
            server.launch().await,
            "PostgreSQL did not start on port {port}; the end of its log:\n{}",
            tail(&server.log(), 20)
        );
        server.ensure_database(database).await?;
        Ok(server)
    }

    async fn ensure_database(&self, name: &str) -> anyhow::Result<()> {
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), NoTls).await?;
        tokio::spawn(connection);
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await?;
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding `data/` and `postgres.log`.
    pub fn dir(&self) -> &Path {
        self.home.path()
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://kurz@127.0.0.1:{}/{database}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Stops the server. The data directory stays, so [`Self::restart`] brings it back.
    pub async fn stop(&self, mode: ShutdownMode) {
        let signal = match mode {
            ShutdownMode::Fast => libc::SIGINT,
            ShutdownMode::Immediate => libc::SIGQUIT,
        };
        self.process.stop(signal, Duration::from_secs(30)).await;
    }

    /// Starts the stopped server again on the same port with the same data.
    pub async fn restart(&self) {
        assert!(self.process.is_empty(), "restart of a running server");
        assert!(
            self.launch().await,
            "PostgreSQL did not restart; log:\n{}",
            self.log()
        );
    }

    /// A direct client on `database`.
    pub async fn client(&self, database: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(database), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to test database {database}: {e}"));
        tokio::spawn(connection);
        client
    }

    async fn launch(&self) -> bool {
        let dir = self.home.path();
        let log_path = dir.join("postgres.log");
        // Appended to: a kept server's log tells of its earlier runs too.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        hand_over(&log_path);
        let mut command = Command::new(self.bindir.join("postgres"));
        let socket_dir = if self.durable {
            dir.join("run")
        } else {
            dir.to_owned()
        };
        command
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1"]);
        if self.durable {
            // Three services with pools, plus psql, exceed the default 100 quickly.
            command.args(["-c", "max_connections=200", "-c", "shared_buffers=256MB"]);
        } else {
            command
                .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
                .args(["-c", "max_connections=300", "-c", "shared_buffers=64MB"])
                // Every statement in the log, with the application that sent it, for
                // `named_statements`. Without bind parameters: a refill's are megabytes.
                .args([
                    "-c",
                    "log_statement=all",
                    "-c",
                    "log_parameter_max_length=0",
                ])
                .args(["-c", &format!("log_line_prefix={LOG_LINE_PREFIX}")]);
        }
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // Lets a test count the statements a service really sent (CREATE EXTENSION
        // pg_stat_statements in its database first). Only where the module is installed, so
        // a PostgreSQL without it fails that one test, not every test.
        if self.bindir.join("../lib/pg_stat_statements.so").exists() {
            command.args(["-c", "shared_preload_libraries=pg_stat_statements"]);
        }
        self.process.spawn(command);
        let url = self.url("postgres");
        self.process
            .wait_ready(
                Duration::from_secs(60),
                Duration::from_millis(25),
                || async { tokio_postgres::connect(&url, NoTls).await.is_ok() },
            )
            .await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("postgres.log")).unwrap_or_default()
    }

    /// The statements that Kurz (an application named `kurz-...`) ran as named prepared
    /// statements on this throwaway server so far, as logged. Through a transaction pooler
    /// such a statement may be missing on the next server connection, or already taken there
    /// by another client; Kurz sends unnamed ones only. Migrations (`kurz-migrate`) run over
    /// a direct connection and are exempt, like the tests' own clients (no application name).
    pub fn named_statements(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| named_statement(line).is_some())
            .map(str::to_owned)
            .collect()
    }
}

/// Throwaway servers' log lines start with the time, the backend's pid and the application
/// name (`%a`), then `LOG:  execute NAME: SQL` for each statement of the extended protocol.
const LOG_LINE_PREFIX: &str = "%m [%p] app=%a ";

/// The statement name of a logged `execute` of a named prepared statement by a Kurz
/// application other than `kurz-migrate`.
fn named_statement(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("] app=")?;
    let (application, rest) = rest.split_once(' ')?;
    if !application.starts_with("kurz-") || application == "kurz-migrate" {
        return None;
    }
    let rest = rest.strip_prefix("LOG:  execute ")?;
    // `NAME: SQL`, or `NAME/PORTAL: SQL` for a named portal.
    let (name, _) = rest.split_once(": ")?;
    let statement = name.split('/').next().unwrap_or(name);
    (statement != "<unnamed>").then_some(statement)
}

impl Drop for PostgresServer {
    /// A throwaway server is killed as a crash would (its files go anyway); a kept one gets a
    /// fast shutdown, with a checkpoint, so its next start needs no recovery.
    fn drop(&mut self) {
        let (signal, grace) = if self.durable {
            (libc::SIGINT, Duration::from_secs(60))
        } else {
            (libc::SIGQUIT, Duration::from_secs(10))
        };
        self.process.stop_now(signal, grace);
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Makes `dir/data` and `dir/run`, and as root hands them to the server user after checking
/// that it can reach them at all: one `0700` directory above (typically `/root`) would make
/// the data directory unreachable, and PostgreSQL's own error would not name the culprit.
fn prepare_kept_dir(dir: &Path) -> anyhow::Result<()> {
    for sub in ["data", "run"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let Some((uid, gid)) = crate::process::server_user() else {
        return Ok(());
    };
    let mut path = PathBuf::from("/");
    for part in dir.components().skip(1) {
        path.push(part);
        let enters = Command::new("test")
            .arg("-x")
            .arg(&path)
            .uid(uid)
            .gid(gid)
            .status()
            .is_ok_and(|s| s.success());
        anyhow::ensure!(
            enters,
            "PostgreSQL cannot run as root, so it runs as `nobody`, but nobody cannot enter {}; \
             use a directory everyone can traverse (under /srv or /work, say), or run as a \
             normal user",
            path.display()
        );
    }
    // Only when the owner is wrong: a recursive chown of a large cluster on every start is slow.
    let data = dir.join("data");
    if std::fs::metadata(&data)?.uid() != uid {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(&data)
            .status()?;
        anyhow::ensure!(status.success(), "chown -R of {} failed", data.display());
    }
    for path in [dir.to_owned(), dir.join("run")] {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// `initdb` of a kept cluster. C.UTF-8 gives byte-order collation (stable, no dependency on
/// system locales) with UTF-8 character classes; a system without it gets plain C, the same
/// collation.
fn initdb_kept(bindir: &Path, dir: &Path) -> anyhow::Result<()> {
    let data = dir.join("data");
    let has_c_utf8 = Command::new("locale")
        .arg("-a")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.eq_ignore_ascii_case("c.utf8") || l.eq_ignore_ascii_case("c.utf-8"))
        })
        .unwrap_or(false);
    let locale = if has_c_utf8 {
        "--locale=C.UTF-8"
    } else {
        "--no-locale"
    };
    let log = std::fs::File::create(dir.join("initdb.log"))?;
    let mut initdb = Command::new(bindir.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "kurz", "-A", "trust", "--encoding=UTF8", locale])
        .current_dir("/")
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some((uid, gid)) = crate::process::server_user() {
        initdb.uid(uid).gid(gid);
    }
    let status = initdb.status()?;
    anyhow::ensure!(
        status.success(),
        "initdb failed; the end of {}:\n{}",
        dir.join("initdb.log").display(),
        tail(
            &std::fs::read_to_string(dir.join("initdb.log")).unwrap_or_default(),
            20
        )
    );
    Ok(())
}

/// PostgreSQL's bin directory: `KURZ_TEST_PG_BINDIR`, else the newest Debian install under
/// `/usr/lib/postgresql`, else wherever `postgres` is on the PATH.
fn find_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KURZ_TEST_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .find(|p| p.join("postgres").exists() && p.join("initdb").exists())
        })
        .expect(
            "PostgreSQL not found: install it (infra/local/test does) or set KURZ_TEST_PG_BINDIR",
        )
}

/// The initdb'ed cluster that servers copy, created once per PostgreSQL build. Creation goes
/// to a private directory that is renamed into place, so concurrent test processes never see
/// a half-made cluster.
fn cached_cluster(bindir: &Path) -> PathBuf {
    let version = Command::new(bindir.join("postgres"))
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let key: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let root = std::env::temp_dir().join("kurz-testkit");
    std::fs::create_dir_all(&root).expect("creating the test kit cache");
    let user = crate::process::server_user().map_or(0, |(uid, _)| uid);
    let cached = root.join(format!("initdb-{key}-u{user}"));
    if cached.join("PG_VERSION").exists() {
        return cached;
    }
    let staging = root.join(format!("initdb-staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).expect("creating the initdb staging dir");
    hand_over(&staging);
    let mut initdb = Command::new(bindir.join("initdb"));
    initdb
        .arg("-D")
        .arg(&staging)
        .args(["-U", "kurz", "-A", "trust", "-E", "UTF8", "--locale=C"])
        .args(["--no-sync", "--no-instructions"]);
    run_as_server_user(initdb);
    if std::fs::rename(&staging, &cached).is_err() {
        // Another process won the race; its cluster is as good as ours.
        let _ = std::fs::remove_dir_all(&staging);
    }
    cached
}

fn copy_cluster(from: &Path, to: &Path) {
    // `cp -a` keeps modes and ownership: PostgreSQL insists its data directory is 0700 and
    // owned by the user it runs as.
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("running cp");
    assert!(status.success(), "copying the cached cluster failed");
}

#[cfg(test)]
mod tests {
    use super::named_statement;

    #[test]
    fn named_statements_of_kurz_applications_are_found_in_the_log() {
        let at = "2026-12-02 03:00:00.000 UTC [4242] app=";
        let named = format!("{at}kurz-create LOG:  execute s3: SELECT 1");
        let portal = format!("{at}kurz-redirect LOG:  execute s0/p1: SELECT 1");
        assert_eq!(named_statement(&named), Some("s3"));
        assert_eq!(named_statement(&portal), Some("s0"));
        for clean in [
            format!("{at}kurz-create LOG:  execute <unnamed>: SELECT 1"),
            format!("{at}kurz-create LOG:  statement: BEGIN"),
            format!("{at}kurz-migrate LOG:  execute s1: SELECT 1"),
            format!("{at} LOG:  execute s7: SELECT 1"),
            format!("{at}psql LOG:  execute s2: SELECT 1"),
        ] {
            assert_eq!(named_statement(&clean), None, "{clean}");
        }
    }
}
