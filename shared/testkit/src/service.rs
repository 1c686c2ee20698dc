//! A Kurz service as its own process, the real binary, for tests that kill one with SIGKILL
//! and start it again on the same port (an in-process service cannot be killed that way).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kurz_settings::Source;

use crate::process::{free_port, spawn_child, stop_child};

/// `target/<profile>/<name>`: the workspace's binary `name`, built beside the test binaries
/// (`cargo nextest run --workspace` builds every package's binaries for its tests).
pub fn binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test binary>
    let profile_dir = test
        .parent()
        .and_then(Path::parent)
        .expect("the target directory");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace's binaries (cargo build --workspace --bins)",
        path.display()
    );
    path
}

#[derive(Debug)]
pub struct ServiceProcess {
    binary: PathBuf,
    source: Source,
    port: u16,
    log: tempfile::NamedTempFile,
    child: Option<Child>,
}

impl ServiceProcess {
    /// Starts `binary` with `source` as its whole `KURZ_*` environment and `KURZ_LISTEN` on a
    /// free port, and waits for its `/readyz`.
    pub async fn start(binary: PathBuf, source: Source) -> Self {
        let mut service = Self {
            binary,
            source,
            port: free_port(),
            log: tempfile::NamedTempFile::new().expect("a log file"),
            child: None,
        };
        service.restart().await;
        service
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGKILL, as a crash or the OOM killer would: nothing the service does at a clean stop
    /// happens.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGKILL, Duration::from_secs(5));
        }
    }

    /// Starts the (killed or stopped) service again on the same port; waits for `/readyz`.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running service");
        let mut command = Command::new(&self.binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.source.vars())
            .env("KURZ_LISTEN", format!("127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .stdout(self.append_log())
            .stderr(self.append_log());
        self.child = Some(spawn_child(command));
        let ready = self.url("/readyz");
        let http = crate::http_client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            assert!(
                !exited && Instant::now() < deadline,
                "{} did not get ready on port {}; its log:\n{}",
                self.binary.display(),
                self.port,
                std::fs::read_to_string(self.log.path()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl ServiceProcess {
    /// The log, appended to: a restarted service's lines follow its earlier run's.
    fn append_log(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.log.path())
            .expect("the log file")
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGTERM, Duration::from_secs(10));
        }
    }
}
