//! A throwaway PostgreSQL server in a temporary directory, on a free loopback port.
//!
//! `initdb` takes a second or two, so it runs once per machine and PostgreSQL version into a
//! cached cluster under the system temp directory; each server starts from a copy of it (tens of
//! milliseconds). Durability settings are relaxed for speed where it cannot change what tests
//! observe: `fsync=off` loses data only if the *machine* crashes, while a killed server still
//! finds every acknowledged commit in the WAL (synchronous_commit stays on).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kurz_settings::{DatabaseSettings, Source};
use tempfile::TempDir;
use tokio_postgres::NoTls;

use crate::process::{
    free_port, hand_over, run_as_server_user, server_dir, spawn_server, stop_child,
};

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
    dir: TempDir,
    bindir: PathBuf,
    port: u16,
    /// Behind a lock so a test can stop and restart the server while other tasks of the same
    /// test hold shared references to the environment (sending load, say).
    child: Mutex<Option<Child>>,
}

impl PostgresServer {
    /// Starts a fresh cluster (user `kurz`, trust authentication) on a free port.
    pub async fn start() -> Self {
        let bindir = find_bindir();
        let cached = cached_cluster(&bindir);
        let dir = server_dir("kurz-pg-");
        copy_cluster(&cached, &dir.path().join("data"));
        let mut server = Self {
            dir,
            bindir,
            port: 0,
            child: Mutex::new(None),
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

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://kurz@127.0.0.1:{}/{database}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child()
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops the server. The data directory stays, so [`Self::restart`] brings it back.
    pub async fn stop(&self, mode: ShutdownMode) {
        let Some(mut child) = self.child().take() else {
            return;
        };
        let signal = match mode {
            ShutdownMode::Fast => libc::SIGINT,
            ShutdownMode::Immediate => libc::SIGQUIT,
        };
        // The wait polls, so run it off the runtime: tests keep sending load meanwhile.
        tokio::task::spawn_blocking(move || {
            stop_child(&mut child, signal, Duration::from_secs(30))
        })
        .await
        .expect("stopping PostgreSQL");
    }

    /// Starts the stopped server again on the same port with the same data.
    pub async fn restart(&self) {
        assert!(self.child().is_none(), "restart of a running server");
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

    /// Creates `name` and applies every migration to it.
    pub async fn create_migrated_template(&self, name: &str) {
        let admin = self.client("postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creating the template database");
        let source = Source::from_vars([("KURZ_DATABASE_URL", self.url(name))]);
        let settings = DatabaseSettings::from_source(&source).expect("valid settings");
        kurz_repository::postgres::migrate(&settings)
            .await
            .expect("migrating the template database");
    }

    /// Creates `name` as a copy of `template`.
    pub async fn create_database_from(&self, name: &str, template: &str) {
        let admin = self.client("postgres").await;
        let sql = format!("CREATE DATABASE {name} TEMPLATE {template}");
        // The migration's connection to the template may take a moment to close, and a
        // template with sessions cannot be copied.
        for attempt in 0.. {
            match admin.batch_execute(&sql).await {
                Ok(()) => return,
                Err(e) if attempt < 50 => {
                    tracing::debug!(error = %e, "template busy, retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("creating {name} from {template}: {e}"),
            }
        }
    }

    async fn launch(&self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).expect("log file");
        hand_over(&self.dir.path().join("postgres.log"));
        let mut command = Command::new(self.bindir.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=300", "-c", "shared_buffers=64MB"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // Lets a test count the statements a service really sent (CREATE EXTENSION
        // pg_stat_statements in its database first). Only where the module is installed, so
        // a PostgreSQL without it fails that one test, not every test.
        if self.bindir.join("../lib/pg_stat_statements.so").exists() {
            command.args(["-c", "shared_preload_libraries=pg_stat_statements"]);
        }
        *self.child() = Some(spawn_server(command));
        self.wait_ready().await
    }

    async fn wait_ready(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if !self.is_running() {
                *self.child() = None;
                return false;
            }
            if tokio_postgres::connect(&self.url("postgres"), NoTls)
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child().take() {
            stop_child(&mut child, libc::SIGQUIT, Duration::from_secs(10));
        }
    }
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
