//! PgBouncer in front of a PostgreSQL server, in transaction pooling mode: a server
//! connection is lent to a client for one transaction at a time, so no session state and no
//! named prepared statement survives from one transaction to the next. Debian 12's PgBouncer
//! (1.18) has no prepared-statement support in that mode at all.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{Home, ServerProcess, free_port, hand_over, sbin_program, server_dir};

/// Run on each new server connection: the statement timeout Kurz's services ask for by
/// default (`KURZ_DATABASE_STATEMENT_TIMEOUT_MS`), which they cannot set themselves here.
pub const CONNECT_QUERY: &str = "SET statement_timeout = 5000";

#[derive(Debug)]
pub struct PgBouncerServer {
    home: Home,
    port: u16,
    process: ServerProcess,
}

impl PgBouncerServer {
    /// A throwaway PgBouncer for a test on a free port, in front of the PostgreSQL on
    /// 127.0.0.1:`postgres_port` (user `kurz`, trust authentication, every database).
    pub async fn start(postgres_port: u16) -> Self {
        let dir = server_dir("kurz-pgbouncer-");
        let mut server = Self {
            home: Home::Temporary(dir),
            port: 0,
            process: ServerProcess::default(),
        };
        for _ in 0..5 {
            server.port = free_port();
            server
                .write_config(postgres_port)
                .expect("writing the PgBouncer configuration");
            if server.launch().await {
                return server;
            }
        }
        panic!("PgBouncer did not start; log:\n{}", server.log());
    }

    /// PgBouncer with its files in `dir`, on 127.0.0.1:`port`.
    pub async fn keep(dir: &Path, port: u16, postgres_port: u16) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let _ = std::fs::remove_file(dir.join("pgbouncer.log"));
        hand_over(dir);
        let server = Self {
            home: Home::Kept(dir.to_owned()),
            port,
            process: ServerProcess::default(),
        };
        server.write_config(postgres_port)?;
        anyhow::ensure!(
            server.launch().await,
            "PgBouncer did not start on port {port}; its log:\n{}",
            server.log()
        );
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `database` through the pooler.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://kurz@127.0.0.1:{}/{database}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    fn write_config(&self, postgres_port: u16) -> anyhow::Result<()> {
        let dir = self.home.path();
        // Trust, as the PostgreSQL behind it: both listen on loopback only. The user must be
        // listed all the same.
        std::fs::write(dir.join("userlist.txt"), "\"kurz\" \"\"\n")?;
        let d = dir.display();
        let mut ini = String::new();
        writeln!(ini, "[databases]")?;
        // Every database name a client asks for, on the one server. Clients cannot send a
        // statement timeout through a transaction pooler (see `ignore_startup_parameters`), so
        // each server connection gets Kurz's default when it is opened.
        writeln!(
            ini,
            "* = host=127.0.0.1 port={postgres_port} connect_query='{CONNECT_QUERY}'"
        )?;
        writeln!(ini, "[pgbouncer]")?;
        writeln!(ini, "listen_addr = 127.0.0.1")?;
        writeln!(ini, "listen_port = {}", self.port)?;
        writeln!(ini, "unix_socket_dir =")?;
        writeln!(ini, "auth_type = trust")?;
        writeln!(ini, "auth_file = {d}/userlist.txt")?;
        // The admin console (`SHOW POOLS` on the database `pgbouncer`), for tests and operators.
        writeln!(ini, "admin_users = kurz")?;
        writeln!(ini, "pool_mode = transaction")?;
        // Several services' pools share it: clients are cheap, server connections are not.
        writeln!(ini, "max_client_conn = 1000")?;
        writeln!(ini, "default_pool_size = 40")?;
        // After a failed server login PgBouncer refuses clients for this long (default 15 s):
        // a restarted PostgreSQL is found again within a second.
        writeln!(ini, "server_login_retry = 1")?;
        // Not `options`: PgBouncer refuses a connection that sends it, and ignoring it would
        // silently drop what it carries (the services' `-c statement_timeout=...`, which must
        // come from the database's own settings behind a pooler).
        writeln!(ini, "ignore_startup_parameters = extra_float_digits")?;
        writeln!(ini, "logfile = {d}/pgbouncer.log")?;
        writeln!(ini, "pidfile = {d}/pgbouncer.pid")?;
        std::fs::write(dir.join("pgbouncer.ini"), ini)?;
        Ok(())
    }

    async fn launch(&self) -> bool {
        let dir = self.home.path();
        let mut command = Command::new(sbin_program("pgbouncer"));
        command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process.spawn(command);
        let url = self.url("postgres");
        self.process
            .wait_ready(
                Duration::from_secs(20),
                Duration::from_millis(20),
                || async {
                    tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .is_ok()
                },
            )
            .await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncerServer {
    /// SIGTERM, PgBouncer's immediate stop (its SIGINT waits for every client to leave).
    fn drop(&mut self) {
        self.process.stop_now(libc::SIGTERM, Duration::from_secs(5));
    }
}
