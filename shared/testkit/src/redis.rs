//! A throwaway Redis server on a free loopback port, persistence off.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_redis::redis;
use tempfile::TempDir;

use crate::process::{free_port, server_dir, spawn_server, stop_child};

#[derive(Debug)]
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    /// Behind a lock, as in `PostgresServer`: stop and restart take `&self`.
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let dir = server_dir("kurz-redis-");
        let mut server = Self {
            dir,
            port: 0,
            child: Mutex::new(None),
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.launch().await {
                return server;
            }
        }
        panic!("redis-server did not start; log:\n{}", server.log());
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: a cache that vanishes, contents and all).
    pub async fn stop(&self) {
        let Some(mut child) = self.child().take() else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            stop_child(&mut child, libc::SIGKILL, Duration::from_secs(5))
        })
        .await
        .expect("stopping Redis");
    }

    /// Starts the stopped server again on the same port, empty.
    pub async fn restart(&self) {
        assert!(self.child().is_none(), "restart of a running server");
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

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn launch(&self) -> bool {
        let log = self.dir.path().join("redis.log");
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        *self.child() = Some(spawn_server(command));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let exited = self
                .child()
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                *self.child() = None;
                return false;
            }
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child().take() {
            stop_child(&mut child, libc::SIGKILL, Duration::from_secs(5));
        }
    }
}
