//! A Redis server on loopback, persistence off (it is a cache: every start is empty):
//! throwaway for a test ([`RedisServer::start`], a temporary directory and a free port), or
//! in a kept directory on a given port for the local stack and the benches
//! ([`RedisServer::keep`], through the `kurz-servers` binary), with a pidfile there.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{Home, ServerProcess, free_port, hand_over, server_dir};
use deadpool_redis::redis;

#[derive(Debug)]
pub struct RedisServer {
    home: Home,
    port: u16,
    process: ServerProcess,
}

impl RedisServer {
    pub async fn start() -> Self {
        let dir = server_dir("kurz-redis-");
        let mut server = Self {
            home: Home::Temporary(dir),
            port: 0,
            process: ServerProcess::default(),
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.launch().await {
                return server;
            }
        }
        panic!("redis-server did not start; log:\n{}", server.log());
    }

    /// Starts an empty Redis whose log and pidfile live in `dir`, on 127.0.0.1:`port`.
    pub async fn keep(dir: &Path, port: u16) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // An earlier run's files may belong to another user (scripts once ran Redis as root).
        for stale in ["redis.log", "redis.pid"] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        hand_over(dir);
        let server = Self {
            home: Home::Kept(dir.to_owned()),
            port,
            process: ServerProcess::default(),
        };
        anyhow::ensure!(
            server.launch().await,
            "Redis did not answer PING on port {port}; the end of its log:\n{}",
            server.log()
        );
        Ok(server)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: a cache that vanishes, contents and all).
    pub async fn stop(&self) {
        self.process
            .stop(libc::SIGKILL, Duration::from_secs(5))
            .await;
    }

    /// Starts the stopped server again on the same port, empty.
    pub async fn restart(&self) {
        assert!(self.process.is_empty(), "restart of a running server");
        assert!(
            self.launch().await,
            "redis-server did not restart; log:\n{}",
            self.log()
        );
    }

    /// A direct connection, for arranging and asserting.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to the test Redis")
    }

    async fn launch(&self) -> bool {
        self.process.spawn(command(self.home.path(), self.port));
        answers_ping(&self.process, self.port, Duration::from_secs(20)).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("redis.log")).unwrap_or_default()
    }
}

/// The command line of a cache Redis with its files in `dir`, on 127.0.0.1:`port`: one place
/// for the flags a single server and a cluster's nodes share (see `RedisCluster`).
pub(crate) fn command(dir: &Path, port: u16) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        // The benches read the server's pid here to measure its CPU time.
        .arg("--pidfile")
        .arg(dir.join("redis.pid"))
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Waits until the Redis `process` spawned on `port` answers PING: true, or false if it
/// exited (it lost the race for its port, say) or `within` passed.
pub(crate) async fn answers_ping(process: &ServerProcess, port: u16, within: Duration) -> bool {
    let url = format!("redis://127.0.0.1:{port}");
    process
        .wait_ready(within, Duration::from_millis(20), || async {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                return false;
            };
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                return false;
            };
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        })
        .await
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.process.stop_now(libc::SIGKILL, Duration::from_secs(5));
    }
}
