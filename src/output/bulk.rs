//! `BulkOutput`: ECS documents to Elasticsearch or OpenSearch through the `_bulk` API.
//!
//! Each event travels as one *entry*, the unit the spool keeps and the dead letters record:
//! the `create` action line (data stream name, `_id` = the record id), the ECS document, and a
//! line of metadata (family, mapping version, position and the raw record) that never goes on
//! the wire but lets a permanently rejected event be translated again after a fix.
//!
//! Per item: 2xx is delivered, 409 on `create` is a document already stored by an earlier
//! delivery (delivered, counted as a duplicate), 429 and 5xx are sent again with backoff, any
//! other status is a permanent rejection handed back with its reason. A whole request refused
//! with 413 is split in halves; with 429, 5xx or a broken connection it is sent again after the
//! backoff (honouring `Retry-After`) up to `retries` times.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use super::dead_letter::encode_meta;
use super::{backoff, OutputError};
use crate::event::RawRecord;
use crate::format::render_ecs;
use crate::mapping::MappedEvent;

/// How the bulk output proves who it is.
#[derive(Clone, Default)]
pub enum BulkAuth {
    #[default]
    None,
    Basic {
        user: String,
        password: String,
    },
    /// Elasticsearch API key, the base64 `id:key` form (`Authorization: ApiKey ...`).
    ApiKey(String),
    /// A bearer token (`Authorization: Bearer ...`), e.g. from a service account.
    Bearer(String),
}

#[derive(Clone)]
pub struct BulkTarget {
    /// Base URL of the cluster, `http(s)://host:port[/path]`.
    pub url: String,
    pub auth: BulkAuth,
    /// Data stream namespace: events go to `logs-<dataset>-<namespace>`.
    pub namespace: String,
    /// A request holds at most this many events...
    pub max_docs: usize,
    /// ... and at most this many bytes before compression.
    pub max_bytes: usize,
    pub gzip: bool,
    /// Sends of a request or item after a retryable failure before the output counts as down.
    pub retries: u32,
    /// PEM file of the CA that signed the cluster's certificate (else the system's roots).
    pub ca_file: Option<PathBuf>,
    /// `pipeline=` on the request (`_none` to skip the index's default pipeline).
    pub pipeline: Option<String>,
    pub timeout: Duration,
}

impl BulkTarget {
    pub fn new(url: &str) -> Result<BulkTarget, OutputError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| OutputError::Config(format!("bulk output `{url}`: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(OutputError::Config(format!(
                "bulk output `{url}`: expected http(s)://host:port"
            )));
        }
        Ok(BulkTarget {
            url: url.trim_end_matches('/').to_string(),
            auth: BulkAuth::None,
            namespace: "default".into(),
            max_docs: 1000,
            max_bytes: 5 << 20,
            gzip: true,
            retries: 5,
            ca_file: None,
            pipeline: None,
            timeout: Duration::from_secs(60),
        })
    }
}

/// Appends one entry: action line, ECS document and metadata line, each ending in `\n`.
pub fn encode_entry(
    ev: &MappedEvent,
    rec: &RawRecord,
    namespace: &str,
    mapping_version: &str,
    out: &mut Vec<u8>,
) {
    let source = ev.source.or(rec.source);
    // Dataset and namespace are our own names (letters, digits, `_`, `.`), no escaping needed.
    let _ = writeln!(
        out,
        "{{\"create\":{{\"_index\":\"logs-{}-{namespace}\",\"_id\":\"{:032x}\"}}}}",
        crate::event::dataset(source),
        ev.record_id
    );
    render_ecs(ev, out);
    out.push(b'\n');
    encode_meta(ev, rec, mapping_version, out);
}

/// The part of an entry that goes on the wire (action and document lines).
pub fn wire_part(entry: &[u8]) -> &[u8] {
    let mut newlines = entry
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i);
    let _action_end = newlines.next();
    match newlines.next() {
        Some(doc_end) => &entry[..=doc_end],
        None => entry,
    }
}

/// What became of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    Delivered,
    /// 409 on `create`: an earlier delivery stored it.
    Duplicate,
    /// Refused for good (e.g. a 400 mapping error): the reason, for the dead letters.
    Rejected(String),
}

pub struct BulkOutput {
    target: BulkTarget,
    client: reqwest::Client,
    endpoint: reqwest::Url,
    pub sent: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Requests or items sent again after a retryable failure.
    pub retried: u64,
}

/// How one request of entries ended.
enum Chunk {
    /// Every entry settled, in order.
    Settled(Vec<ItemResult>),
    /// The endpoint kept failing: the entries settled before the first unsettled one, and why.
    GaveUp(Vec<ItemResult>, String),
    /// The whole request was refused (413, or a 4xx naming no item): split it to find the one.
    Refused(String),
    /// The endpoint is misconfigured from our side (401, 403, 404): no retry helps now.
    Down(String),
}

/// A failed request that may succeed when sent again, and how long the endpoint asked to wait.
struct Retryable {
    reason: String,
    retry_after: Option<Duration>,
}

impl BulkOutput {
    pub fn new(target: BulkTarget) -> Result<BulkOutput, OutputError> {
        let cfg = |why: String| OutputError::Config(format!("bulk output {}: {why}", target.url));
        super::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(target.timeout)
            .connect_timeout(Duration::from_secs(10));
        if let Some(ca) = &target.ca_file {
            let pem = std::fs::read(ca).map_err(|e| cfg(format!("{}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| cfg(format!("{}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(cfg(format!("{}: no certificate in it", ca.display())));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(|e| cfg(e.to_string()))?;
        let mut endpoint = reqwest::Url::parse(&format!("{}/_bulk", target.url))
            .map_err(|e| cfg(e.to_string()))?;
        if let Some(p) = &target.pipeline {
            endpoint.query_pairs_mut().append_pair("pipeline", p);
        }
        Ok(BulkOutput {
            target,
            client,
            endpoint,
            sent: 0,
            duplicates: 0,
            rejected: 0,
            retried: 0,
        })
    }

    pub fn retries(&self) -> u32 {
        self.target.retries
    }

    /// At most `n` sends again of a request or item before `send` gives up.
    pub fn limit_retries(&mut self, n: u32) {
        self.target.retries = self.target.retries.min(n);
    }

    /// Delivers `entries` in requests within the size bounds, pushing one result per entry, in
    /// order, onto `done`. `Err` when the endpoint gave up: `done` then ends before the first
    /// entry not delivered, and that entry and the rest stay with the caller, to be sent again
    /// later (those that did arrive meanwhile then answer 409).
    pub async fn send(
        &mut self,
        entries: &[&[u8]],
        done: &mut Vec<ItemResult>,
    ) -> Result<(), OutputError> {
        let mut start = 0;
        let mut cap = self.target.max_docs.max(1);
        while start < entries.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < entries.len() && end - start < cap {
                let len = wire_part(entries[end]).len();
                if end > start && bytes + len > self.target.max_bytes {
                    break;
                }
                bytes += len;
                end += 1;
            }
            match self.send_chunk(&entries[start..end]).await {
                Chunk::Settled(results) => {
                    done.extend(results);
                    start = end;
                    cap = self.target.max_docs.max(1);
                }
                Chunk::Refused(reason) if end - start == 1 => {
                    self.rejected += 1;
                    done.push(ItemResult::Rejected(reason));
                    start = end;
                }
                Chunk::Refused(_) => cap = (end - start) / 2,
                Chunk::GaveUp(results, last) => {
                    done.extend(results);
                    return Err(OutputError::GaveUp {
                        target: self.target.url.clone(),
                        attempts: self.target.retries + 1,
                        last,
                    });
                }
                Chunk::Down(reason) => {
                    return Err(OutputError::Config(format!(
                        "{}: {reason}",
                        self.target.url
                    )))
                }
            }
        }
        Ok(())
    }

    /// One request's entries, sending again those answered 429 or 5xx (per item or as a whole)
    /// with backoff until every one is settled or the retries are spent.
    async fn send_chunk(&mut self, entries: &[&[u8]]) -> Chunk {
        let mut results: Vec<Option<ItemResult>> = vec![None; entries.len()];
        let mut attempt = 0;
        loop {
            let pending: Vec<usize> = (0..entries.len())
                .filter(|&i| results[i].is_none())
                .collect();
            if pending.is_empty() {
                return Chunk::Settled(results.into_iter().flatten().collect());
            }
            let wait = match self.post(pending.iter().map(|&i| entries[i])).await {
                Ok(Ok(items)) if items.len() == pending.len() => {
                    let mut again = 0;
                    for (&i, (status, reason)) in pending.iter().zip(items) {
                        results[i] = match status {
                            200..=299 => {
                                self.sent += 1;
                                Some(ItemResult::Delivered)
                            }
                            409 => {
                                self.duplicates += 1;
                                Some(ItemResult::Duplicate)
                            }
                            429 | 500..=599 => {
                                again += 1;
                                None
                            }
                            _ => {
                                self.rejected += 1;
                                Some(ItemResult::Rejected(format!("{status} {reason}")))
                            }
                        };
                    }
                    if again == 0 {
                        continue;
                    }
                    self.retried += again;
                    Retryable {
                        reason: format!("{again} items answered 429 or 5xx"),
                        retry_after: None,
                    }
                }
                Ok(Ok(items)) => Retryable {
                    reason: format!(
                        "the response has {} items for {} documents",
                        items.len(),
                        pending.len()
                    ),
                    retry_after: None,
                },
                Ok(Err(chunk)) => return chunk,
                Err(r) => {
                    self.retried += 1;
                    r
                }
            };
            attempt += 1;
            if attempt > self.target.retries {
                let settled = results.into_iter().map_while(|r| r).collect();
                return Chunk::GaveUp(settled, wait.reason);
            }
            let delay = backoff(attempt).max(wait.retry_after.unwrap_or_default());
            tokio::time::sleep(delay.min(Duration::from_secs(60))).await;
        }
    }

    /// One `_bulk` request: per-item `(status, reason)`, or a verdict on the whole request.
    async fn post<'e>(
        &self,
        entries: impl Iterator<Item = &'e [u8]>,
    ) -> Result<Result<Vec<(u16, String)>, Chunk>, Retryable> {
        let retryable = |reason: String| Retryable {
            reason,
            retry_after: None,
        };
        let mut body = Vec::new();
        for e in entries {
            body.extend_from_slice(wire_part(e));
        }
        let mut req = self
            .client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/x-ndjson");
        if self.target.gzip {
            let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
            gz.write_all(&body)
                .map_err(|e| retryable(format!("gzip: {e}")))?;
            body = gz.finish().map_err(|e| retryable(format!("gzip: {e}")))?;
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        req = match &self.target.auth {
            BulkAuth::None => req,
            BulkAuth::Basic { user, password } => req.basic_auth(user, Some(password)),
            BulkAuth::ApiKey(k) => {
                let mut v = HeaderValue::from_str(&format!("ApiKey {k}"))
                    .map_err(|_| retryable("the API key is not a valid header value".into()))?;
                v.set_sensitive(true);
                req.header(AUTHORIZATION, v)
            }
            BulkAuth::Bearer(t) => req.bearer_auth(t),
        };
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| retryable(error_chain(&e)))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.map_err(|e| retryable(error_chain(&e)))?;
        let short: String = text.chars().take(300).collect();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(Retryable {
                reason: format!("{status}: {short}"),
                retry_after,
            });
        }
        if matches!(status.as_u16(), 401 | 403 | 404 | 405) {
            return Ok(Err(Chunk::Down(format!("{status}: {short}"))));
        }
        if !status.is_success() {
            return Ok(Err(Chunk::Refused(format!("{status}: {short}"))));
        }
        let parsed: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| retryable(format!("the response is not JSON ({e}): {short}")))?;
        let items = parsed
            .get("items")
            .and_then(|v| v.as_array())
            .ok_or_else(|| retryable(format!("the response has no items: {short}")))?;
        Ok(Ok(items
            .iter()
            .map(|item| {
                let result = item
                    .as_object()
                    .and_then(|o| o.values().next())
                    .cloned()
                    .unwrap_or_default();
                let status = result
                    .get("status")
                    .and_then(|s| s.as_u64())
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(500);
                let reason = match result.get("error") {
                    Some(e) => format!(
                        "{}: {}",
                        e.get("type").and_then(|t| t.as_str()).unwrap_or("error"),
                        e.get("reason").and_then(|t| t.as_str()).unwrap_or("")
                    ),
                    None => String::new(),
                };
                (status, reason)
            })
            .collect()))
    }
}

/// An error with its causes, which reqwest keeps apart ("error sending request: connection
/// refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_part_leaves_the_metadata_line_out() {
        let entry = b"{\"create\":{}}\n{\"a\":1}\n{\"family\":\"x\"}\n";
        assert_eq!(wire_part(entry), b"{\"create\":{}}\n{\"a\":1}\n");
    }

    #[test]
    fn targets_need_an_http_url() {
        assert!(BulkTarget::new("http://127.0.0.1:9200/").is_ok());
        for bad in ["127.0.0.1:9200", "tcp://h:1", "http://"] {
            let e = BulkTarget::new(bad).err().expect(bad).to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
