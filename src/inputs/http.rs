//! The HTTP ingest endpoint and the operations endpoints (axum).
//!
//! - `POST /v1/ingest[?source=KIND]`: a body in any shape `translate` reads (a UTF-8 byte order
//!   mark is skipped), optionally `Content-Encoding: gzip`. `202 {"accepted": N}` once every
//!   output has the events sent or spooled; `400` with the reason and position for a body that
//!   does not decode (nothing of it is taken, unless its events passed the pipeline's chunk
//!   before the bad document: the answer then says how many were), is empty, is a bare scalar,
//!   or was cut off; `401`
//!   without the configured bearer token (scheme case-insensitive); `408` when the body does not
//!   arrive in time; `413` over the size limit (after decompression) or the output limit, naming
//!   the key; `415` for another content encoding; `503` with `Retry-After` while an output
//!   cannot take events (spool full or unwritable) or the bodies in flight fill their budget.
//!   Each refusal is logged (WARN, once per status per 10 s, with the count since).
//! - `GET /healthz`: the process answers. `GET /readyz`: every output delivers (see [`readyz`]
//!   for what makes it fail, and `?spooling=ready`). `GET /metrics`: Prometheus text.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::event::SourceKind;
use crate::pipeline::{IngestError, Pipeline};

pub struct HttpState {
    pub pipeline: Arc<Pipeline>,
    /// The bearer token `POST /v1/ingest` requires, if any.
    pub token: Option<String>,
    pub limits: BodyLimits,
    /// Bytes of bodies held now, over all requests, in KiB permits.
    inflight: Arc<Semaphore>,
    /// Refusals logged, by status code: at most one line per code per 10 s.
    refusals: Mutex<HashMap<u16, (Instant, u64)>>,
}

/// What one request body may be.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// Bytes, after gzip decompression (`http.max_body_bytes`).
    pub max_bytes: usize,
    /// The whole body must arrive within this (`http.body_timeout_seconds`).
    pub timeout: Duration,
    /// Over all requests (`http.max_inflight_body_bytes`).
    pub max_inflight_bytes: usize,
}

impl HttpState {
    pub fn new(pipeline: Arc<Pipeline>, token: Option<String>, limits: BodyLimits) -> HttpState {
        let kib = (limits.max_inflight_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        HttpState {
            pipeline,
            token,
            limits,
            inflight: Arc::new(Semaphore::new(kib)),
            refusals: Mutex::new(HashMap::new()),
        }
    }

    /// Logs a refused request (WARN), once per status code per 10 s with the count since.
    fn log_refusal(&self, status: StatusCode, reason: &str) {
        let Ok(mut seen) = self.refusals.lock() else {
            return;
        };
        let now = Instant::now();
        let entry = seen.entry(status.as_u16()).or_insert((now, 0));
        if entry.1 > 0 && now - entry.0 < Duration::from_secs(10) {
            entry.1 += 1;
            return;
        }
        let unlogged = entry.1.saturating_sub(1);
        *entry = (now, 1);
        tracing::warn!(status = status.as_u16(), %reason, unlogged_since_last = unlogged, "ingest request refused");
    }
}

/// Everything `POST /v1/ingest` and the operations endpoints.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/v1/ingest", post(ingest))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The operations endpoints only, for connections past the connection cap: anything else is
/// answered 503.
pub fn ops_router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            let mut r = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "every connection slot is taken (http.max_connections); try again",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        })
        .with_state(state)
}

#[derive(Deserialize)]
struct IngestQuery {
    source: Option<String>,
}

fn json_error(status: StatusCode, reason: &str) -> Response {
    let body = serde_json::json!({ "error": reason }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Why a request was not taken.
struct Refusal {
    status: StatusCode,
    reason: String,
    /// `Retry-After` seconds, for 503.
    retry_after: Option<&'static str>,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
            retry_after: None,
        }
    }

    fn busy(reason: impl Into<String>, retry_after: &'static str) -> Refusal {
        Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: reason.into(),
            retry_after: Some(retry_after),
        }
    }
}

async fn ingest(
    State(s): State<Arc<HttpState>>,
    Query(q): Query<IngestQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = match take(&s, q, &headers, body).await {
        Ok(records) => {
            let body = serde_json::json!({ "accepted": records }).to_string();
            (
                StatusCode::ACCEPTED,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
        Err(refusal) => {
            s.log_refusal(refusal.status, &refusal.reason);
            let mut r = json_error(refusal.status, &refusal.reason);
            if refusal.status == StatusCode::UNAUTHORIZED {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            if let Some(secs) = refusal.retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
            }
            r
        }
    };
    s.pipeline.telemetry.add(
        "dsm_http_requests_total",
        &[("code", response.status().as_str())],
        1,
    );
    response
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

async fn take(
    s: &HttpState,
    q: IngestQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<u64, Refusal> {
    if let Some(token) = &s.token {
        if !bearer(headers).is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required",
            ));
        }
    }
    let forced = match q.source.as_deref() {
        None | Some("auto") => None,
        Some(k) => match k.parse::<SourceKind>() {
            Ok(k) => Some(k),
            Err(e) => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("source: {e}"),
                ))
            }
        },
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    if !matches!(encoding.as_str(), "identity" | "" | "gzip" | "x-gzip") {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content encoding `{encoding}` (gzip or none)"),
        ));
    }
    let limit = s.limits.max_bytes;
    let mut held = Held::new(s.inflight.clone(), s.limits.max_inflight_bytes);
    let read = tokio::time::timeout(s.limits.timeout, read_body(body, limit, &mut held)).await;
    let raw = match read {
        Ok(r) => r?,
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s (http.body_timeout_seconds)",
                    s.limits.timeout.as_secs()
                ),
            ))
        }
    };
    let (bytes, mut held) = if encoding.starts_with("identity") || encoding.is_empty() {
        (raw, held)
    } else {
        // Decompressed on a blocking thread, holding the budget as the output grows (the
        // compressed body's share included until it is dropped): a small gzip bomb cannot
        // take more than the budget allows.
        let unzipped = tokio::task::spawn_blocking(move || {
            let r = gunzip(&raw, limit, &mut held);
            (r, held)
        })
        .await;
        match unzipped {
            Ok((Ok(out), held)) => (out, held),
            Ok((Err(refusal), _)) => return Err(refusal),
            Err(e) => {
                return Err(Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("decompressing stopped: {e}"),
                ))
            }
        }
    };
    held.keep(bytes.len());
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = 1 + upto.iter().filter(|&&b| b == b'\n').count();
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("body:{line}: not UTF-8 (Defender payloads are UTF-8 JSON)"),
            ));
        }
    };
    // A byte order mark some Windows tools write is not part of the JSON.
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    };
    if text.trim().is_empty() {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "the body is empty"));
    }
    let taken = s
        .pipeline
        .ingest(Arc::new(text), "body", "http", forced)
        .await;
    drop(held);
    match taken {
        Ok(taken) => Ok(taken.records),
        Err(IngestError::Malformed(reason)) => Err(Refusal::new(StatusCode::BAD_REQUEST, reason)),
        Err(IngestError::TooLarge(reason)) => {
            Err(Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, reason))
        }
        Err(IngestError::Unavailable(reason)) => Err(Refusal::busy(reason, "5")),
        Err(IngestError::Failed(reason)) => {
            Err(Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, reason))
        }
    }
}

/// Reads a body of at most `limit` bytes, holding each chunk's bytes against the in-flight
/// budget as it arrives.
async fn read_body(body: Body, limit: usize, held: &mut Held) -> Result<Vec<u8>, Refusal> {
    let mut stream = body.into_data_stream();
    let mut raw = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("the body was cut off: {e}"),
            )
        })?;
        if raw.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        held.hold(raw.len() + chunk.len())?;
        raw.extend_from_slice(&chunk);
    }
    Ok(raw)
}

fn too_large(limit: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {limit} bytes (http.max_body_bytes)"),
    )
}

/// Decompresses a gzip body of at most `limit` bytes once decompressed, in pieces, holding
/// the compressed and decompressed bytes against the budget as they grow.
fn gunzip(raw: &[u8], limit: usize, held: &mut Held) -> Result<Vec<u8>, Refusal> {
    let mut decoder = flate2::read::MultiGzDecoder::new(raw);
    let mut out = Vec::new();
    let mut piece = vec![0u8; 64 * 1024];
    loop {
        let n = decoder
            .read(&mut piece)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("gzip body: {e}")))?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(too_large(limit));
        }
        held.hold(raw.len() + out.len() + n)?;
        out.extend_from_slice(&piece[..n]);
    }
}

/// A request's share of the in-flight body budget, given back when dropped.
struct Held {
    budget: Arc<Semaphore>,
    max_bytes: usize,
    permits: Option<OwnedSemaphorePermit>,
}

impl Held {
    fn new(budget: Arc<Semaphore>, max_bytes: usize) -> Held {
        Held {
            budget,
            max_bytes,
            permits: None,
        }
    }

    /// Holds `bytes` in all (rounded up to KiB); 503 when the budget does not have the more
    /// it needs now.
    fn hold(&mut self, bytes: usize) -> Result<(), Refusal> {
        let want = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        let have = self.permits.as_ref().map_or(0, |p| p.num_permits() as u32);
        if want <= have {
            return Ok(());
        }
        match self.budget.clone().try_acquire_many_owned(want - have) {
            Ok(p) => {
                match self.permits.as_mut() {
                    Some(held) => held.merge(p),
                    None => self.permits = Some(p),
                }
                Ok(())
            }
            Err(_) => Err(Refusal::busy(
                format!(
                    "the service holds {} bytes of request bodies already (http.max_inflight_body_bytes)",
                    self.max_bytes
                ),
                "1",
            )),
        }
    }

    /// Keeps holding only `bytes` (what is still in memory), giving the rest back.
    fn keep(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(1024);
        if let Some(p) = self.permits.as_mut() {
            let have = p.num_permits();
            if have > keep {
                drop(p.split(have - keep));
            }
        }
    }
}

/// Compares a token without leaking, through timing, how much of it matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
struct ReadyQuery {
    /// `ready`: an output that is down but still spooling does not make the service unready.
    spooling: Option<String>,
}

/// Ready when every output delivers. Not ready when an output refuses new events (its spool is
/// full or cannot be written, or a file output cannot write), when an output without a spool
/// is down, when an Event Hubs partition stalled, and, unless `?spooling=ready`, when an output
/// is down while its spool still takes the events (an orchestrator that should keep sending
/// then asks with that parameter).
async fn readyz(State(s): State<Arc<HttpState>>, Query(q): Query<ReadyQuery>) -> Response {
    let spooling_is_ready = q.spooling.as_deref() == Some("ready");
    let mut problems = Vec::new();
    for o in &s.pipeline.outputs {
        let st = &o.handle.stats;
        let spooled = st.spool_max_bytes.load(Ordering::Relaxed) > 0;
        if st.refusing.load(Ordering::Relaxed) {
            problems.push(format!(
                "{}: refusing new events ({})",
                o.handle.name,
                st.problem()
            ));
        } else if st.down.load(Ordering::Relaxed) && !(spooled && spooling_is_ready) {
            let spool = if spooled {
                format!(
                    "; {} events in its spool, which still takes new ones",
                    st.pending.load(Ordering::Relaxed)
                )
            } else {
                String::new()
            };
            problems.push(format!("{}: down ({}){spool}", o.handle.name, st.problem()));
        }
    }
    for stalled in s.pipeline.telemetry.nonzero("dsm_eventhub_stalled") {
        problems.push(format!("partition stalled ({stalled})"));
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
    }
}

async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let outputs: Vec<(&str, &crate::output::worker::OutputStats)> = s
        .pipeline
        .outputs
        .iter()
        .map(|o| (o.handle.name.as_str(), &*o.handle.stats))
        .collect();
    let text = s.pipeline.telemetry.render(&outputs, now);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}
