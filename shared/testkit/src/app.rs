//! A service running in-process on its own port, stopped when dropped.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The shutdown future handed to a service's `run_until_stopped`.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Debug)]
pub struct RunningApp {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningApp {
    /// Spawns `run(shutdown)`, where `run` is a built application's `run_until_stopped`.
    pub fn spawn<F, Fut>(port: u16, run: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(run(shutdown));
        Self {
            port,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Simulates a crash: the service task is cancelled mid-flight, so nothing it does at a
    /// clean stop (draining, returning keys) happens. Its worker threads may linger until
    /// the test process ends; send it nothing more.
    pub fn abort(mut self) {
        // Cancel before the stop sender drops: its drop would ask for a clean stop.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Asks for a graceful shutdown and waits until the server has drained and returned.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("the service task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
