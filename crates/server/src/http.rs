//! The listener: accept loop, per-connection limits and timeouts, graceful shutdown. Plain HTTP/1.1
//! ([`run`]), or TLS with HTTP/2 or HTTP/1.1 chosen by ALPN ([`run_tls`]); the same connection
//! limit, header-read timeout and graceful shutdown apply to both, and a TLS handshake must finish
//! within the header-read timeout.

use crate::app::App;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// What the listener knows about the connection a request came on, given to [`App::handle_on`]
/// with every request (or read by [`App::handle`] from the request's extensions); absent when a
/// test calls [`App::handle`] without it.
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

/// Serves `app` in plain HTTP/1.1 on `listener` until `shutdown` completes, then drains open
/// connections.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
) {
    serve(listener, app, limits, None, shutdown).await;
}

/// Serves `app` over TLS on `listener` (HTTP/2 when the client's ALPN asks for `h2`, else
/// HTTP/1.1) until `shutdown` completes, then drains open connections.
pub async fn run_tls(
    listener: TcpListener,
    app: Arc<App>,
    limits: ListenerLimits,
    tls: TlsAcceptor,
    shutdown: impl Future<Output = ()>,
) {
    serve(listener, app, limits, Some(tls), shutdown).await;
}

async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    limits: ListenerLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        // Without half-close, hyper watches for the peer's EOF while a request is being answered,
        // and to do so reserves fresh read-buffer space (a new 8 KiB buffer, since the request
        // still holds the old one) on every request. A peer that closes mid-request is still
        // noticed: the answer's write fails and the connection ends.
        .half_close(true)
        // `Date` comes from the application, from the clock reading it judged the request by
        // (App::handle_on): one clock read per request instead of two.
        .auto_date_header(false)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    // HTTP/2 has no header-read timeout: a peer that stops answering pings is dropped instead.
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_read_timeout))
        .keep_alive_timeout(limits.header_read_timeout)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
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
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let app = Arc::clone(&svc_app);
                    async move { Ok::<_, Infallible>(app.handle_on(req, Some(info)).await) }
                });
                let Some(acceptor) = &tls else {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        app.metrics().connections_open.fetch_sub(1, Ordering::Relaxed);
                        drop(permit);
                    });
                    continue;
                };
                let acceptor = acceptor.clone();
                let (h1, h2) = (builder.clone(), h2.clone());
                let watcher = graceful.watcher();
                let handshake_timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let is_h2 = stream.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2);
                            let io = TokioIo::new(stream);
                            let ended = if is_h2 {
                                let svc_app = Arc::clone(&app);
                                let service = service_fn(move |mut req: hyper::Request<Incoming>| {
                                    authority_as_host(&mut req);
                                    let app = Arc::clone(&svc_app);
                                    async move { Ok::<_, Infallible>(app.handle_on(req, Some(info)).await) }
                                });
                                watcher.watch(h2.serve_connection(io, service)).await
                            } else {
                                watcher.watch(h1.serve_connection(io, service)).await
                            };
                            if let Err(e) = ended {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake not finished in time; closing");
                        }
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

/// HTTP/2 carries the host in the `:authority` pseudo-header, which hyper puts in the URI; SigV4
/// signs it as `host` (RFC 9113 §8.3.1: it stands for Host), so it is given back as that header.
fn authority_as_host<B>(req: &mut hyper::Request<B>) {
    if req.headers().contains_key(hyper::header::HOST) {
        return;
    }
    let host = req
        .uri()
        .authority()
        .and_then(|a| hyper::header::HeaderValue::from_str(a.as_str()).ok());
    if let Some(host) = host {
        req.headers_mut().insert(hyper::header::HOST, host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_authority_becomes_the_host_header() {
        let mut req = hyper::Request::builder()
            .version(hyper::Version::HTTP_2)
            .uri("https://127.0.0.1:4599/?Action=GetCallerIdentity")
            .body(())
            .unwrap();
        authority_as_host(&mut req);
        assert_eq!(req.headers()[hyper::header::HOST], "127.0.0.1:4599");
        // A Host header the client sent wins.
        let mut req = hyper::Request::builder()
            .uri("https://a.example/")
            .header("host", "b.example")
            .body(())
            .unwrap();
        authority_as_host(&mut req);
        assert_eq!(req.headers()[hyper::header::HOST], "b.example");
        // No authority (origin form), no header.
        let mut req = hyper::Request::builder().uri("/").body(()).unwrap();
        authority_as_host(&mut req);
        assert!(req.headers().get(hyper::header::HOST).is_none());
    }
}
