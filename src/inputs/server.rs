//! The ingest endpoint's server: our own accept loop over hyper (axum's `serve` has no
//! header-read timeout and no connection limit), so that no client can hold the service:
//!
//! - at most `max_connections` connections are served (TLS handshakes included), each with a
//!   header-read timeout that is also its idle keep-alive timeout (hyper starts it whenever the
//!   connection waits for a request head);
//! - past the cap, [`OPS_CONNECTIONS`] more are served by the operations router only
//!   (`/healthz`, `/readyz`, `/metrics`; everything else 503 with `Retry-After`) with a short
//!   header timeout and no keep-alive, so health and metrics answer while slow clients hold every
//!   ingest slot; past those, a plain-HTTP connection gets a bare answer (200 to `GET /healthz`,
//!   503 otherwise) and is closed at once, so descriptors never run out;
//! - the body's own limits (size, read time, bytes in flight) are in `http`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Connections past `max_connections` that still get health, readiness and metrics.
pub const OPS_CONNECTIONS: usize = 32;
/// Header timeout of those connections.
const OPS_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// A TLS handshake must be done within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// For a request's head, and between requests on a kept-alive connection.
    pub header_timeout: Duration,
}

/// Serves `app` (and `ops` past the connection cap) until `shutdown` completes, then lets the
/// requests in flight finish (at most `grace`).
pub async fn serve(
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    ops: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let main_slots = Arc::new(Semaphore::new(limits.max_connections));
    let ops_slots = Arc::new(Semaphore::new(OPS_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut refusals = RateLimited::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors (EMFILE) and the like: wait for connections to end.
                    if refusals.pass() {
                        tracing::warn!(error = %e, "accepting a connection failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let (router, header_timeout, keep_alive, permit) = match main_slots
            .clone()
            .try_acquire_owned()
        {
            Ok(p) => (app.clone(), limits.header_timeout, true, p),
            Err(_) => match ops_slots.clone().try_acquire_owned() {
                Ok(p) => (ops.clone(), OPS_HEADER_TIMEOUT, false, p),
                Err(_) => {
                    if refusals.pass() {
                        tracing::warn!(%peer, max_connections = limits.max_connections, "connection refused: every connection slot is taken (http.max_connections)");
                    }
                    if tls.is_none() {
                        tokio::spawn(refuse(stream));
                    }
                    continue;
                }
            },
        };
        let conn = Conn {
            router,
            header_timeout,
            keep_alive,
            permit,
            watcher: graceful.watcher(),
        };
        match tls.clone() {
            None => {
                tokio::spawn(conn.serve(stream));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => conn.serve(tls).await,
                        Ok(Err(e)) => tracing::debug!(%peer, %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(tcp);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the grace period; closed");
    }
}

/// One accepted connection and what it is served with.
struct Conn {
    router: Router,
    header_timeout: Duration,
    keep_alive: bool,
    /// Its slot, given back when the connection ends.
    permit: OwnedSemaphorePermit,
    watcher: Watcher,
}

impl Conn {
    async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, io: I) {
        let Conn {
            router,
            header_timeout,
            keep_alive,
            permit,
            watcher,
        } = self;
        let service = TowerToHyperService::new(router);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(keep_alive)
            .serve_connection(TokioIo::new(io), service);
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(%e, "connection ended");
        }
        drop(permit);
    }
}

/// Answers a connection past every cap and closes it: a liveness probe (`GET /healthz`, told by
/// the first bytes of its request, read for at most half a second) with 200, anything else with
/// a bare 503. The process is alive even when slow clients hold every slot; nothing else is
/// parsed here.
async fn refuse(mut stream: TcpStream) {
    let mut head = [0u8; 16];
    let mut got = 0;
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while got < head.len() {
            match stream.read(&mut head[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    let response = if head[..got].starts_with(b"GET /healthz ") {
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n".to_string()
    } else {
        let body =
            r#"{"error":"every connection slot is taken (http.max_connections); try again"}"#;
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Closing with the rest of the request unread would reset the connection before the
        // client read the answer: the rest is read (a little, briefly) and dropped.
        let mut rest = [0u8; 4096];
        for _ in 0..4 {
            if stream.read(&mut rest).await? == 0 {
                break;
            }
        }
        std::io::Result::Ok(())
    })
    .await;
}

/// At most one log line per 10 s for one kind of trouble.
#[derive(Default)]
struct RateLimited {
    last: Option<tokio::time::Instant>,
}

impl RateLimited {
    fn pass(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|t| now - t < Duration::from_secs(10)) {
            return false;
        }
        self.last = Some(now);
        true
    }
}
