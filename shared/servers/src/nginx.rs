//! nginx in front of Kurz's instances, configured by `infra/nginx/kurz.conf` (the production
//! routing, unchanged) plus the three files this module writes into the server's directory:
//! the top-level `nginx.conf` (paths into the directory, foreground, errors logged there),
//! `upstreams.conf` (the instances) and `kurz-listen.conf` (127.0.0.1 and the port).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{Home, ServerProcess, free_port, hand_over, sbin_program, server_dir};

/// `infra/nginx/kurz.conf` in this checkout.
pub fn kurz_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/nginx/kurz.conf")
}

/// An upstream group of `kurz.conf` (`kurz_create`, `kurz_redirect`) and its instances.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub servers: Vec<SocketAddr>,
}

impl Upstream {
    pub fn new(name: &str, servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            name: name.to_owned(),
            servers: servers.into_iter().collect(),
        }
    }

    /// `name=addr,addr`, as the `kurz-servers nginx --upstream` option takes it.
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let (name, list) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("`{spec}`: expected name=host:port,host:port"))?;
        let servers = list
            .split(',')
            .map(|a| a.trim().parse().map_err(|e| anyhow::anyhow!("`{a}`: {e}")))
            .collect::<anyhow::Result<Vec<SocketAddr>>>()?;
        anyhow::ensure!(!servers.is_empty(), "`{spec}`: no instance");
        Ok(Self::new(name, servers))
    }
}

#[derive(Debug)]
pub struct NginxServer {
    home: Home,
    port: u16,
    site: PathBuf,
    process: ServerProcess,
}

impl NginxServer {
    /// A throwaway nginx for a test, on a free port, serving `site` (an `http`-context file such
    /// as [`kurz_conf`]) in front of `upstreams`.
    pub async fn start(site: &Path, upstreams: &[Upstream]) -> Self {
        let dir = server_dir("kurz-nginx-");
        let mut server = Self {
            home: Home::Temporary(dir),
            port: 0,
            site: site.to_owned(),
            process: ServerProcess::default(),
        };
        for _ in 0..5 {
            server.port = free_port();
            server
                .write_config(upstreams)
                .expect("writing the nginx configuration");
            if server.launch().await {
                return server;
            }
        }
        panic!("nginx did not start; error log:\n{}", server.log());
    }

    /// nginx with its files in `dir`, on 127.0.0.1:`port`.
    pub async fn keep(
        dir: &Path,
        port: u16,
        site: &Path,
        upstreams: &[Upstream],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        hand_over(dir);
        let server = Self {
            home: Home::Kept(dir.to_owned()),
            port,
            site: std::path::absolute(site)?,
            process: ServerProcess::default(),
        };
        server.write_config(upstreams)?;
        anyhow::ensure!(
            server.launch().await,
            "nginx did not start on port {port}; its error log:\n{}",
            server.log()
        );
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    fn write_config(&self, upstreams: &[Upstream]) -> anyhow::Result<()> {
        let dir = self.home.path();
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        hand_over(&tmp);
        let mut groups = String::new();
        for upstream in upstreams {
            writeln!(groups, "upstream {} {{", upstream.name)?;
            for server in &upstream.servers {
                // As upstreams.conf.example: a refused connect benches the instance for a
                // while, so a dead one costs each worker one failed connect, not one a request.
                writeln!(groups, "    server {server} max_fails=1 fail_timeout=5s;")?;
            }
            writeln!(groups, "    keepalive 32;\n}}")?;
        }
        std::fs::write(dir.join("upstreams.conf"), groups)?;
        std::fs::write(
            dir.join("kurz-listen.conf"),
            format!("listen 127.0.0.1:{};\n", self.port),
        )?;
        let d = dir.display();
        let main = format!(
            "# Written by kurz-servers; the routing is {site}.\n\
             worker_processes auto;\n\
             daemon off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
             \x20   default_type application/octet-stream;\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {d}/tmp/body;\n\
             \x20   proxy_temp_path {d}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {d}/tmp/scgi;\n\
             \x20   include {d}/upstreams.conf;\n\
             \x20   include {site};\n\
             }}\n",
            site = self.site.display(),
        );
        std::fs::write(dir.join("nginx.conf"), main)?;
        Ok(())
    }

    async fn launch(&self) -> bool {
        let dir = self.home.path();
        let mut command = Command::new(sbin_program("nginx"));
        command
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            // Errors before the configuration is read go here too, not to /var/log/nginx.
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process.spawn(command);
        let port = self.port;
        self.process
            .wait_ready(
                Duration::from_secs(20),
                Duration::from_millis(20),
                || async move {
                    tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
                },
            )
            .await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for NginxServer {
    /// SIGQUIT: nginx's graceful stop (requests in flight finish).
    fn drop(&mut self) {
        self.process
            .stop_now(libc::SIGQUIT, Duration::from_secs(10));
    }
}
