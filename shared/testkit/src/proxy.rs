//! A TCP fault proxy that a test puts between a service and PostgreSQL or Redis.
//!
//! The service connects to the proxy's port; the proxy forwards to the real server until the
//! test injects a fault:
//! - [`Fault::Reset`]: every open connection is reset (RST) and new ones are reset on accept,
//!   as when a server process dies or a firewall rejects;
//! - [`Fault::Blackhole`]: connections are accepted but nothing is forwarded either way, as
//!   when a host vanishes or a network partitions; bytes wait until the fault is lifted;
//! - [`Fault::Latency`]: every chunk, both ways, is delayed, as with a slow or overloaded
//!   server;
//! - [`Fault::None`]: forwarding resumes (blackholed connections too).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Reset,
    Blackhole,
    Latency(Duration),
}

#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    fault: watch::Sender<Fault>,
    open: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding a free loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let port = listener.local_addr().expect("local addr").port();
        let (fault, watcher) = watch::channel(Fault::None);
        let open = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(listener, upstream, watcher, Arc::clone(&open)));
        Self {
            port,
            fault,
            open,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Injects `fault` into open and future connections.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Lifts any fault.
    pub fn restore(&self) {
        self.set(Fault::None);
    }

    /// Client connections currently open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Dropping the sender ends every connection task (they watch it).
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    open: Arc<AtomicUsize>,
) {
    while let Ok((client, _)) = listener.accept().await {
        if *fault.borrow() == Fault::Reset {
            reset(client);
            continue;
        }
        let (fault, open) = (fault.clone(), Arc::clone(&open));
        tokio::spawn(async move {
            open.fetch_add(1, Ordering::Relaxed);
            connection(client, upstream, fault).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Closes with RST instead of FIN, as a dead server or a rejecting firewall does.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut fault: watch::Receiver<Fault>,
) {
    // A blackholed proxy accepts but must not even reach the server until the fault lifts.
    if !wait_while_blackholed(&mut fault).await {
        reset(client);
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let was_reset = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        tokio::select! {
            reset = pump(client_read, server_write, fault.clone()) => reset,
            reset = pump(server_read, client_write, fault.clone()) => reset,
        }
    };
    if was_reset {
        reset(client);
        reset(server);
    }
}

/// Forwards one direction until EOF, an error, or a `Reset` fault; `true` for a reset.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut fault: watch::Receiver<Fault>,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            },
            changed = fault.changed() => {
                if changed.is_err() || *fault.borrow() == Fault::Reset {
                    return true;
                }
                continue;
            }
        };
        if !wait_while_blackholed(&mut fault).await {
            return true;
        }
        let latency = match *fault.borrow() {
            Fault::Latency(delay) => Some(delay),
            _ => None,
        };
        if let Some(delay) = latency {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return false;
        }
    }
}

/// Waits while the fault is `Blackhole`; `false` if it turned into `Reset` or the proxy is gone.
async fn wait_while_blackholed(fault: &mut watch::Receiver<Fault>) -> bool {
    loop {
        match *fault.borrow_and_update() {
            Fault::Reset => return false,
            Fault::Blackhole => {}
            _ => return true,
        }
        if fault.changed().await.is_err() {
            return false;
        }
    }
}
