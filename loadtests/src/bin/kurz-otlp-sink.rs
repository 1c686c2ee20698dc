//! A stand-in OpenTelemetry collector for measuring what tracing costs Kurz: accepts OTLP/gRPC
//! trace exports, counts the spans and drops them, and prints the count when it stops.
//!
//! ```sh
//! target/release/kurz-otlp-sink 127.0.0.1:14317 300
//! ```
//!
//! Arguments: address (loopback; default 127.0.0.1:14317) and seconds to run before stopping
//! by itself (default 300). SIGTERM or Ctrl-C stop it earlier.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

#[derive(Debug, Default, Clone)]
struct Counter {
    spans: Arc<AtomicU64>,
    exports: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Counter {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        self.exports.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:14317".to_owned())
        .parse()?;
    let seconds: u64 = args.next().map_or(Ok(300), |s| s.parse())?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address").into());
    }
    let counter = Counter::default();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<(), std::io::Error>(())
    };
    let serve = tonic::transport::Server::builder().serve_with_incoming_shutdown(
        TraceServiceServer::new(counter.clone()),
        tonic::transport::server::TcpIncoming::from(listener),
        async {
            let _ = stop.await;
        },
    );
    serve.await?;
    println!(
        "spans received: {} in {} exports",
        counter.spans.load(Ordering::Relaxed),
        counter.exports.load(Ordering::Relaxed)
    );
    Ok(())
}
