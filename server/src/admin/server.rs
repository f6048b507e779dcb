//! Serving the admin routes over HTTP/1.1 with hyper, on the admin thread's current-thread tokio
//! runtime.
//!
//! Every accepted connection is a task holding one of `admin_max_connections` permits, released
//! when it closes. hyper enforces the head: `admin_header_timeout_ms` from the moment it starts
//! waiting for a request (so an idle keep-alive connection, or one that never sends, is closed
//! too), ADMIN_HEAD_MAX_BYTES (431) and ADMIN_HEADERS_MAX. This file enforces the body
//! (`admin_body_timeout_ms` -> 408, `admin_max_body_bytes` -> 413) and, through
//! [`WriteTimeout`], a response the peer stops taking. A connection over the limit is answered
//! 503 and closed at once (by a task from a small separate pool, ADMIN_REFUSALS_MAX), so a
//! client learns the listener is full instead of hanging, and the connections already open,
//! keep-alive clients included, are served as before.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::http::{Request, Response};
use super::routes::{lookup, Handler, Lookup, ROUTES};
use super::write_timeout::WriteTimeout;
use super::{AdminLimits, AdminState, ADMIN_LISTEN_BACKLOG};

/// Largest request head (request line and headers); larger is 431. hyper's read buffer is this
/// size, its minimum.
pub(super) const ADMIN_HEAD_MAX_BYTES: usize = 8 * 1024;
/// Most headers one request may carry; more is 431.
pub(super) const ADMIN_HEADERS_MAX: usize = 32;
/// Time a client may take no response bytes before its connection is closed.
pub(super) const ADMIN_WRITE_TIMEOUT_MS: u64 = 2_000;
/// Connections over `admin_max_connections` being answered 503 at once; beyond this they are
/// closed without an answer.
pub(super) const ADMIN_REFUSALS_MAX: usize = 64;
/// How long a refused connection has to send its request head before it is closed unanswered.
pub(super) const ADMIN_REFUSAL_TIMEOUT_MS: u64 = 1_000;
/// `Retry-After` on the 503 for a connection over the limit.
pub(super) const ADMIN_REFUSAL_RETRY_AFTER_S: u32 = 1;
/// Threads that run handlers waiting on shards (/metrics, /healthz, /readyz, /publish); made on
/// demand, gone after 10 s idle. Enough that a few scrapes stuck on a silent shard (1 s each)
/// do not queue the health checks behind them.
pub(super) const ADMIN_BLOCKING_THREADS_MAX: usize = 16;
/// Pause after a failed accept (e.g. EMFILE) so the thread does not spin.
pub(super) const ADMIN_ACCEPT_ERROR_BACKOFF_MS: u64 = 100;
/// At most one "listener full" warning per this interval.
pub(super) const ADMIN_FULL_LOG_INTERVAL_MS: u64 = 10_000;

/// Binds the admin listener (blocking, so a bad address fails `serve` at start).
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ADMIN_LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The admin thread's runtime: one thread for I/O and timers, a few for handlers that block.
pub(super) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(ADMIN_BLOCKING_THREADS_MAX)
        .thread_name("holdfast-admin-blk")
        .build()
}

/// Accepts until `stop` fires (or its sender is dropped).
pub(super) async fn serve(
    listener: std::net::TcpListener,
    state: Arc<AdminState>,
    limits: AdminLimits,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("admin listener cannot join its runtime: {e}");
            return;
        }
    };
    let open = Arc::new(Semaphore::new(limits.max_connections as usize));
    let refusals = Arc::new(Semaphore::new(ADMIN_REFUSALS_MAX));
    let mut full_logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(ADMIN_ACCEPT_ERROR_BACKOFF_MS)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                let state = state.clone();
                tokio::spawn(async move {
                    serve_connection(stream, state, limits).await;
                    drop(permit);
                });
            }
            Err(_) => {
                let now = Instant::now();
                if full_logged.is_none_or(|at| {
                    now.duration_since(at) >= Duration::from_millis(ADMIN_FULL_LOG_INTERVAL_MS)
                }) {
                    full_logged = Some(now);
                    tracing::warn!(
                        admin_max_connections = limits.max_connections,
                        "admin listener full: new connections are answered 503"
                    );
                }
                // Over the refusal pool too: close unanswered (the peer sees the close).
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse_connection(stream, limits).await;
                        drop(permit);
                    });
                }
            }
        }
    }
}

/// hyper's HTTP/1.1 connection settings for the admin listener.
fn builder(header_timeout: Duration, keep_alive: bool) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(keep_alive)
        .max_buf_size(ADMIN_HEAD_MAX_BYTES)
        .max_headers(ADMIN_HEADERS_MAX);
    builder
}

fn io(stream: TcpStream) -> TokioIo<WriteTimeout<TcpStream>> {
    TokioIo::new(WriteTimeout::new(
        stream,
        Duration::from_millis(ADMIN_WRITE_TIMEOUT_MS),
    ))
}

async fn serve_connection(stream: TcpStream, state: Arc<AdminState>, limits: AdminLimits) {
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(respond(state, limits, request).await.into_hyper()) }
    });
    let connection =
        builder(limits.header_timeout, limits.keep_alive).serve_connection(io(stream), service);
    if let Err(e) = connection.await {
        // Timeouts, resets and malformed requests end here; each harms only its connection.
        tracing::debug!("admin connection ended: {e}");
    }
}

/// Answers one request over the connection limit with 503 and closes.
async fn refuse_connection(stream: TcpStream, limits: AdminLimits) {
    let service = service_fn(move |_request| async move {
        let response = Response {
            retry_after_s: Some(ADMIN_REFUSAL_RETRY_AFTER_S),
            ..Response::text(
                503,
                format!(
                    "admin listener full: {} connections open (admin_max_connections)\n",
                    limits.max_connections
                ),
            )
        };
        Ok::<_, Infallible>(response.closing().into_hyper())
    });
    let connection = builder(Duration::from_millis(ADMIN_REFUSAL_TIMEOUT_MS), false)
        .serve_connection(io(stream), service);
    if let Err(e) = connection.await {
        tracing::debug!("refused admin connection ended: {e}");
    }
}

/// Reads the body under its limits, then routes.
async fn respond(
    state: Arc<AdminState>,
    limits: AdminLimits,
    request: hyper::Request<Incoming>,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match read_body(&parts.headers, body, limits).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request = Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        body,
        authorization: parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    match lookup(ROUTES, &request.method, &request.path) {
        Lookup::Found(Handler::Inline(handler)) => handler(&state, &request),
        Lookup::Found(Handler::Blocking(handler)) => {
            match tokio::task::spawn_blocking(move || handler(&state, &request)).await {
                Ok(response) => response,
                Err(e) => {
                    tracing::error!("admin handler failed: {e}");
                    Response::text(500, "internal error\n")
                }
            }
        }
        Lookup::WrongMethod(allow) => Response::method_not_allowed(allow),
        Lookup::NotFound => Response::not_found(),
    }
}

/// The whole body, or the response refusing it (the connection then closes: the rest of the
/// body is not read). A declared length over the limit is refused before reading any of it.
async fn read_body(
    headers: &hyper::HeaderMap,
    body: Incoming,
    limits: AdminLimits,
) -> Result<hyper::body::Bytes, Response> {
    let max = limits.max_body_bytes as usize;
    let too_large = || {
        Response::text(
            413,
            format!("request body over {max} bytes (admin_max_body_bytes)\n"),
        )
        .closing()
    };
    if let Some(length) = headers.get(CONTENT_LENGTH) {
        // hyper has already refused a malformed Content-Length with 400.
        if length
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|length| length > max as u64)
        {
            return Err(too_large());
        }
    }
    match tokio::time::timeout(limits.body_timeout, Limited::new(body, max).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Response::text(400, format!("bad request body: {e}\n")).closing()),
        Err(_) => Err(Response::text(
            408,
            format!(
                "request body not received within {} ms (admin_body_timeout_ms)\n",
                limits.body_timeout.as_millis()
            ),
        )
        .closing()),
    }
}
