//! One kept server in the foreground: started, checked ready, and stopped on SIGTERM or
//! SIGINT. What the shell scripts call, so they start servers exactly as the tests do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kurz_servers::{
    NginxServer, PgBouncerServer, PostgresServer, RedisCluster, RedisServer, Upstream,
};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(about = "Runs one of Kurz's servers in the foreground until SIGTERM")]
struct Cli {
    #[command(subcommand)]
    server: Server,
}

/// What every server takes.
#[derive(Debug, clap::Args)]
struct Common {
    /// Where the server's files live.
    #[arg(long)]
    dir: PathBuf,
    /// The loopback port it listens on.
    #[arg(long)]
    port: u16,
    /// Created once the server answers; default DIR/ready.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Server {
    /// PostgreSQL with its cluster in DIR/data (initdb'ed on first use), durable.
    Postgres {
        #[command(flatten)]
        common: Common,
        /// Created when missing.
        #[arg(long, default_value = "kurz")]
        database: String,
    },
    /// nginx with its files in DIR, serving SITE (infra/nginx/kurz.conf) in front of the
    /// upstream groups given as name=host:port,host:port (none for a site that proxies
    /// nothing, such as the bench's `return 302` baseline).
    Nginx {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        site: PathBuf,
        #[arg(long = "upstream")]
        upstreams: Vec<String>,
    },
    /// PgBouncer in transaction mode with its files in DIR, in front of the PostgreSQL on
    /// 127.0.0.1:POSTGRES_PORT.
    Pgbouncer {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        postgres_port: u16,
    },
    /// An empty Redis (no persistence) with its log and pidfile in DIR.
    Redis {
        #[command(flatten)]
        common: Common,
    },
    /// An empty six-node Redis Cluster (three masters, three replicas) with each node's files
    /// in DIR/node-<i>, on ports PORT..PORT+5 and cluster-bus ports PORT+100..PORT+105.
    /// Choose PORT outside the ephemeral range 32768-60999, where a client socket may hold
    /// one of those ports.
    RedisCluster {
        #[command(flatten)]
        common: Common,
    },
}

impl Server {
    fn common(&self) -> &Common {
        match self {
            Self::Postgres { common, .. }
            | Self::Nginx { common, .. }
            | Self::Pgbouncer { common, .. }
            | Self::Redis { common }
            | Self::RedisCluster { common } => common,
        }
    }
}

/// A server that is running, whichever kind; dropping it stops it.
#[allow(dead_code)] // held only for its drop
enum Running {
    Postgres(PostgresServer),
    Redis(RedisServer),
    RedisCluster(RedisCluster),
    Nginx(NginxServer),
    PgBouncer(PgBouncerServer),
}

impl Running {
    fn is_running(&self) -> bool {
        match self {
            Self::Postgres(server) => server.is_running(),
            Self::Redis(server) => server.is_running(),
            // One node gone is a cluster that no longer is what the script asked for.
            Self::RedisCluster(cluster) => {
                (0..kurz_servers::redis_cluster::NODES).all(|i| cluster.is_running(i))
            }
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
    let common = cli.server.common();
    let dir = absolute(&common.dir)?;
    let port = common.port;
    let ready_file = common.ready_file.clone().unwrap_or(dir.join("ready"));
    let server = match &cli.server {
        Server::Postgres { database, .. } => {
            Running::Postgres(PostgresServer::keep(&dir, port, database).await?)
        }
        Server::Nginx {
            site, upstreams, ..
        } => {
            let upstreams = upstreams
                .iter()
                .map(|spec| Upstream::parse(spec))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Running::Nginx(NginxServer::keep(&dir, port, site, &upstreams).await?)
        }
        Server::Pgbouncer { postgres_port, .. } => {
            Running::PgBouncer(PgBouncerServer::keep(&dir, port, *postgres_port).await?)
        }
        Server::Redis { .. } => Running::Redis(RedisServer::keep(&dir, port).await?),
        Server::RedisCluster { .. } => Running::RedisCluster(RedisCluster::keep(&dir, port).await?),
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
