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
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Time allowed to send a request's headers: an HTTP/1 connection that has waited this long
    /// for a complete head is closed within as much again (a new one after exactly this long; see
    /// `watched`); also the time a TLS handshake may take, and HTTP/2's ping timeout.
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
        // The header-read timeout is kept by a watchdog per connection (`watched`) instead of
        // hyper's, which reads the clock and arms (and disarms) a timer on every request.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        // Without half-close, hyper watches for the peer's EOF while a request is being answered,
        // and to do so reserves fresh read-buffer space (a new 8 KiB buffer, since the request
        // still holds the old one) on every request. A peer that closes mid-request is still
        // noticed: the answer's write fails and the connection ends.
        .half_close(true)
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
                let activity = Arc::new(Activity::default());
                let svc_activity = Arc::clone(&activity);
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let app = Arc::clone(&svc_app);
                    let answering = Answering::begin(&svc_activity);
                    async move {
                        let resp = app.handle_on(req, Some(info)).await;
                        drop(answering);
                        Ok::<_, Infallible>(resp)
                    }
                });
                let header_read_timeout = limits.header_read_timeout;
                let Some(acceptor) = &tls else {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        match watched(conn, &activity, header_read_timeout).await {
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                            Some(Ok(())) => {}
                            None => {
                                tracing::debug!(%peer, "no request head within the header-read timeout; closing");
                            }
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
                                Some(watcher.watch(h2.serve_connection(io, service)).await)
                            } else {
                                let conn = watcher.watch(h1.serve_connection(io, service));
                                watched(conn, &activity, header_read_timeout).await
                            };
                            match ended {
                                Some(Err(e)) => {
                                    tracing::debug!(error = %e, "connection ended with an error");
                                }
                                Some(Ok(())) => {}
                                None => {
                                    tracing::debug!(%peer, "no request head within the header-read timeout; closing");
                                }
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

/// What the header-read watchdog of one HTTP/1 connection ([`watched`]) sees: requests begun
/// (their head read) and answered.
#[derive(Debug, Default)]
struct Activity {
    begun: AtomicU64,
    ended: AtomicU64,
}

/// A request being answered; counted as ended when dropped (answered, or its connection gone).
struct Answering(Arc<Activity>);

impl Answering {
    fn begin(activity: &Arc<Activity>) -> Answering {
        activity.begun.fetch_add(1, Ordering::Relaxed);
        Answering(Arc::clone(activity))
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs an HTTP/1 connection, closing it (`None`) once it has waited a whole `timeout` for a
/// request head: every `timeout`, the watchdog looks whether a request began or ended since its
/// last look, or one is being answered; if none, the connection has been waiting for a head at
/// least that long. A head that never completes is cut after one to two `timeout`s (exactly one
/// on a new connection), never sooner; a request being answered is never cut. (An answer already
/// given but still being written to a client that stopped reading counts as waiting: such a
/// client is cut alike.) hyper's own timeout does this to the millisecond, but by reading the
/// clock and arming and disarming a timer on every request.
async fn watched<C: Future>(conn: C, activity: &Activity, timeout: Duration) -> Option<C::Output> {
    tokio::pin!(conn);
    let mut seen = (0, 0);
    loop {
        tokio::select! {
            out = &mut conn => return Some(out),
            () = tokio::time::sleep(timeout) => {
                let now = (
                    activity.begun.load(Ordering::Relaxed),
                    activity.ended.load(Ordering::Relaxed),
                );
                if now == seen && now.0 == now.1 {
                    return None;
                }
                seen = now;
            }
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
    use std::time::Instant;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    const T: Duration = Duration::from_millis(100);
    /// What a loaded test machine may add to a timer.
    const SLACK: Duration = Duration::from_millis(900);

    #[test]
    fn a_connection_without_a_request_head_is_closed_after_the_timeout() {
        rt().block_on(async {
            let activity = Activity::default();
            let start = Instant::now();
            let out = watched(std::future::pending::<()>(), &activity, T).await;
            assert!(out.is_none());
            let took = start.elapsed();
            // Never sooner; later only by the scheduler's delays (generous for a loaded machine).
            assert!(took >= T && took < 2 * T + SLACK, "{took:?}");
        });
    }

    #[test]
    fn requests_keep_a_connection_open_and_a_finished_one_gives_its_result() {
        rt().block_on(async {
            let activity = Arc::new(Activity::default());
            // One request every 60 ms for 500 ms, then idle: closed 1-2 timeouts after the last.
            let feeder = {
                let activity = Arc::clone(&activity);
                async move {
                    for _ in 0..8 {
                        tokio::time::sleep(Duration::from_millis(60)).await;
                        drop(Answering::begin(&activity));
                    }
                }
            };
            let start = Instant::now();
            let (out, ()) =
                tokio::join!(watched(std::future::pending::<()>(), &activity, T), feeder);
            assert!(out.is_none());
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(480) + T, "{took:?}");
            assert!(
                took < Duration::from_millis(480) + 2 * T + SLACK,
                "{took:?}"
            );
            // A request being answered is never cut, however long it takes.
            let busy = Answering::begin(&activity);
            let slow = tokio::time::sleep(5 * T);
            assert_eq!(watched(slow, &activity, T).await, Some(()));
            drop(busy);
            assert_eq!(watched(async { 7 }, &activity, T).await, Some(7));
        });
    }

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
