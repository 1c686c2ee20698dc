//! A tiny in-process stand-in for Kurz: `GET /{anything}` answers 302, `POST /api/v1/links`
//! answers 201 with a new code (or 401 without the key, if it requires one). Shared by the integration tests and `examples/sink_server.rs`,
//! each of which uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, Default)]
pub struct SinkOptions {
    /// Hold every response due between `after` and `after + length` (from the start) until the
    /// end of that window, like a server stalled by a pause.
    pub stall: Option<(Duration, Duration)>,
    /// Answer creates 401 unless they send `Authorization: Bearer <this key>`, as Kurz does.
    pub api_key: Option<&'static str>,
}

#[derive(Debug)]
pub struct Sink {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct State {
    start: Instant,
    options: SinkOptions,
    created: AtomicU64,
    requests: Arc<AtomicU64>,
}

/// Starts a sink on `addr` (port 0 for any free port).
pub async fn spawn_sink(addr: &str, options: SinkOptions) -> std::io::Result<Sink> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(AtomicU64::new(0));
    let state = Arc::new(State {
        start: Instant::now(),
        options,
        created: AtomicU64::new(0),
        requests: requests.clone(),
    });
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(state.clone(), request));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Sink {
        addr,
        requests,
        task,
    })
}

async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    if let Some((after, length)) = state.options.stall {
        let (from, until) = (state.start + after, state.start + after + length);
        let now = Instant::now();
        if now >= from && now < until {
            tokio::time::sleep_until(until.into()).await;
        }
    }
    let is_create = request.method() == Method::POST && request.uri().path() == "/api/v1/links";
    let authorized = state.options.api_key.is_none_or(|key| {
        let sent = request.headers().get(header::AUTHORIZATION);
        sent.is_some_and(|value| value.as_bytes() == format!("Bearer {key}").as_bytes())
    });
    // Reading the body to its end keeps the connection usable for the next request.
    request.into_body().collect().await?;
    let mut response = Response::new(Full::new(Bytes::new()));
    if is_create && !authorized {
        *response.status_mut() = StatusCode::UNAUTHORIZED;
    } else if is_create {
        let n = state.created.fetch_add(1, Ordering::Relaxed);
        let code = format!("s{n:06}");
        let body = format!(
            r#"{{"code":"{code}","short_url":"http://127.0.0.1:8080/{code}","url":"https://example.com/","created_at":"2026-01-01T00:00:00Z","expires_at":null}}"#
        );
        *response.status_mut() = StatusCode::CREATED;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        *response.body_mut() = Full::new(Bytes::from(body));
    } else {
        *response.status_mut() = StatusCode::FOUND;
        response.headers_mut().insert(
            header::LOCATION,
            header::HeaderValue::from_static("https://example.com/"),
        );
    }
    Ok(response)
}
