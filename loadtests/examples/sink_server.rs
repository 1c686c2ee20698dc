//! A trivial HTTP server for checking kurz-load's own ceiling: `GET /{anything}` answers 302 and
//! `POST /api/v1/links` answers 201, with no work behind either.
//!
//! ```sh
//! cargo run --release --example sink_server -- 127.0.0.1:18080 1 60
//! ```
//!
//! Arguments: address (loopback; default 127.0.0.1:18080), worker threads (default 1), and
//! seconds to run before stopping by itself (default 300).

// The same server the integration tests use, so the two cannot drift apart.
#[path = "../tests/load/sink.rs"]
mod sink;

use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18080".to_owned());
    let threads: usize = args.next().map_or(Ok(1), |t| t.parse())?;
    let seconds: u64 = args.next().map_or(Ok(300), |s| s.parse())?;
    // Like the generator, the sink stays on this machine.
    if !addr.parse::<std::net::SocketAddr>()?.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address").into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = sink::spawn_sink(&addr, sink::SinkOptions::default()).await?;
        eprintln!("sink listening on {} for {seconds} s", server.url());
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let served = server.requests.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("sink served {served} requests");
        Ok(())
    })
}
