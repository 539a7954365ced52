//! The HTTP/1.1 listener: accept loop, per-connection limits and timeouts, graceful shutdown.

use crate::app::App;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What the listener knows about the connection a request came on, attached to every request as an
/// extension (`req.extensions().get::<ConnInfo>()`); absent when a test calls [`App::handle`] directly.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: std::net::SocketAddr,
}

/// Limits of the listener.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// Most open connections; further ones are closed at once.
    pub max_connections: usize,
    /// Time allowed to send a request's headers.
    pub header_read_timeout: Duration,
    /// Largest buffered request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then drains open connections.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and the like: wait a little instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!("connection limit reached; closing a new connection");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let app = Arc::clone(&app);
                app.metrics().connections_total.fetch_add(1, Ordering::Relaxed);
                app.metrics().connections_open.fetch_add(1, Ordering::Relaxed);
                let svc_app = Arc::clone(&app);
                let info = ConnInfo { peer };
                let service = service_fn(move |mut req: hyper::Request<Incoming>| {
                    req.extensions_mut().insert(info);
                    let app = Arc::clone(&svc_app);
                    async move { Ok::<_, Infallible>(app.handle(req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    app.metrics().connections_open.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
}
