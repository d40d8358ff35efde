//! The HTTP ingest endpoint and the operations endpoints (axum).
//!
//! - `POST /v1/ingest[?source=KIND]`: a body in any shape `translate` reads, optionally
//!   `Content-Encoding: gzip`. `202 {"accepted": N}` once every output has the events sent or
//!   spooled; `400` with the reason and position for a body that does not decode (nothing of it
//!   is taken); `401` without the configured bearer token; `413` over the size limit (after
//!   decompression); `415` for another content encoding; `503` with `Retry-After` while a spool
//!   is full.
//! - `GET /healthz`: the process answers. `GET /readyz`: every output delivers (see [`readyz`]
//!   for what makes it fail, and `?spooling=ready`). `GET /metrics`: Prometheus text.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::event::SourceKind;
use crate::pipeline::{IngestError, Pipeline};

pub struct HttpState {
    pub pipeline: Arc<Pipeline>,
    /// The bearer token `POST /v1/ingest` requires, if any.
    pub token: Option<String>,
    pub max_body_bytes: usize,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/v1/ingest", post(ingest))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::disable())
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

async fn ingest(
    State(s): State<Arc<HttpState>>,
    Query(q): Query<IngestQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = take(&s, q, &headers, body).await;
    s.pipeline.telemetry.add(
        "dsm_http_requests_total",
        &[("code", response.status().as_str())],
        1,
    );
    response
}

async fn take(s: &HttpState, q: IngestQuery, headers: &HeaderMap, body: Body) -> Response {
    if let Some(token) = &s.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            let mut r = json_error(StatusCode::UNAUTHORIZED, "a bearer token is required");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let forced = match q.source.as_deref() {
        None | Some("auto") => None,
        Some(k) => match k.parse::<SourceKind>() {
            Ok(k) => Some(k),
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("source: {e}")),
        },
    };
    let limit = s.max_body_bytes;
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than {limit} bytes"),
        )
    };
    let raw: Bytes = match axum::body::to_bytes(body, limit.saturating_add(1)).await {
        Ok(b) if b.len() <= limit => b,
        Ok(_) => return too_large(),
        Err(_) => return too_large(),
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "identity" | "" => raw.to_vec(),
        "gzip" | "x-gzip" => {
            let mut out = Vec::new();
            let read = flate2::read::MultiGzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out);
            match read {
                Ok(_) if out.len() > limit => return too_large(),
                Ok(_) => out,
                Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("gzip body: {e}")),
            }
        }
        other => {
            return json_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("content encoding `{other}` (gzip or none)"),
            )
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = 1 + upto.iter().filter(|&&b| b == b'\n').count();
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("body:{line}: not UTF-8 (Defender payloads are UTF-8 JSON)"),
            );
        }
    };
    match s
        .pipeline
        .ingest(Arc::new(text), "body", "http", forced)
        .await
    {
        Ok(taken) => {
            let body = serde_json::json!({ "accepted": taken.records }).to_string();
            (
                StatusCode::ACCEPTED,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
        Err(IngestError::Malformed(reason)) => json_error(StatusCode::BAD_REQUEST, &reason),
        Err(IngestError::TooLarge(reason)) => json_error(StatusCode::PAYLOAD_TOO_LARGE, &reason),
        Err(IngestError::Unavailable(reason)) => {
            let mut r = json_error(StatusCode::SERVICE_UNAVAILABLE, &reason);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
        Err(IngestError::Failed(reason)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &reason),
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
