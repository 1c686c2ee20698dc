//! One kept server in the foreground: started, checked ready, and stopped on SIGTERM or
//! SIGINT. What the shell scripts call, so they start servers exactly as the tests do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kurz_servers::{NginxServer, PgBouncerServer, PostgresServer, RedisServer, Upstream};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(about = "Runs one of Kurz's servers in the foreground until SIGTERM")]
struct Cli {
    #[command(subcommand)]
    server: Server,
}

#[derive(Debug, Subcommand)]
enum Server {
    /// PostgreSQL with its cluster in DIR/data (initdb'ed on first use), durable.
    Postgres {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        port: u16,
        /// Created when missing.
        #[arg(long, default_value = "kurz")]
        database: String,
        /// Created once the server answers; default DIR/ready.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// nginx with its files in DIR, serving SITE (infra/nginx/kurz.conf) in front of the
    /// upstream groups given as name=host:port,host:port.
    Nginx {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        site: PathBuf,
        #[arg(long = "upstream", required = true)]
        upstreams: Vec<String>,
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// PgBouncer in transaction mode with its files in DIR, in front of the PostgreSQL on
    /// 127.0.0.1:POSTGRES_PORT.
    Pgbouncer {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        postgres_port: u16,
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// An empty Redis (no persistence) with its log and pidfile in DIR.
    Redis {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
}

/// A server that is running, whichever kind; dropping it stops it.
#[allow(dead_code)] // held only for its drop
enum Running {
    Postgres(PostgresServer),
    Redis(RedisServer),
    Nginx(NginxServer),
    PgBouncer(PgBouncerServer),
}

impl Running {
    fn is_running(&self) -> bool {
        match self {
            Self::Postgres(server) => server.is_running(),
            Self::Redis(server) => server.is_running(),
            Self::Nginx(server) => server.is_running(),
            Self::PgBouncer(server) => server.is_running(),
        }
    }
}

// One thread: a server's parent-death signal fires when the thread that spawned it exits,
// so the spawning thread must be the one that lives as long as the server.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    kurz_servers::process::leave_terminal();
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let (server, ready_file) = match cli.server {
        Server::Postgres {
            dir,
            port,
            database,
            ready_file,
        } => {
            let dir = absolute(&dir)?;
            let server = PostgresServer::keep(&dir, port, &database).await?;
            (
                Running::Postgres(server),
                ready_file.unwrap_or(dir.join("ready")),
            )
        }
        Server::Nginx {
            dir,
            port,
            site,
            upstreams,
            ready_file,
        } => {
            let dir = absolute(&dir)?;
            let upstreams = upstreams
                .iter()
                .map(|spec| Upstream::parse(spec))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let server = NginxServer::keep(&dir, port, &site, &upstreams).await?;
            (
                Running::Nginx(server),
                ready_file.unwrap_or(dir.join("ready")),
            )
        }
        Server::Pgbouncer {
            dir,
            port,
            postgres_port,
            ready_file,
        } => {
            let dir = absolute(&dir)?;
            let server = PgBouncerServer::keep(&dir, port, postgres_port).await?;
            (
                Running::PgBouncer(server),
                ready_file.unwrap_or(dir.join("ready")),
            )
        }
        Server::Redis {
            dir,
            port,
            ready_file,
        } => {
            let dir = absolute(&dir)?;
            let server = RedisServer::keep(&dir, port).await?;
            (
                Running::Redis(server),
                ready_file.unwrap_or(dir.join("ready")),
            )
        }
    };
    std::fs::write(&ready_file, std::process::id().to_string())
        .with_context(|| format!("writing {}", ready_file.display()))?;
    eprintln!("kurz-servers: ready");
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let exited = loop {
        tokio::select! {
            _ = term.recv() => break false,
            _ = int.recv() => break false,
            _ = check.tick() => if !server.is_running() { break true },
        }
    };
    let _ = std::fs::remove_file(&ready_file);
    drop(server);
    anyhow::ensure!(!exited, "the server exited on its own; see its log");
    eprintln!("kurz-servers: stopped");
    Ok(())
}

fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))
}
