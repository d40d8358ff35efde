//! A small `_bulk` endpoint with faults on demand: per-item 429 and 400, whole-request 413,
//! 429 with `Retry-After`, 5xx and 401, and outages (the listener closed, later opened again on
//! the same port with what it stored). It stores documents by `_id` and answers a `create` of
//! a stored id with 409, as Elasticsearch does.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use crate::common::Background;

/// One document of a request: its `_id`, index and body.
#[derive(Clone, Debug)]
pub struct Doc {
    pub id: String,
    pub index: String,
    pub body: serde_json::Value,
}

impl Doc {
    /// The Defender `ReportId` our synthetic records carry, as a number.
    pub fn report_id(&self) -> u64 {
        self.body["m365_defender"]["event"]["report_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX)
    }
}

/// What the endpoint answers to a request.
pub enum Reply {
    /// Per document: `None` for the usual answer (201, or 409 for a stored id), else this status.
    Items(Vec<Option<u16>>),
    /// The whole request, with an optional `Retry-After` in seconds.
    Whole(u16, Option<u64>),
}

pub type Rule = Box<dyn Fn(usize, &[Doc]) -> Reply + Send + Sync>;

#[derive(Default)]
pub struct Seen {
    /// Every request's documents, in arrival order.
    pub requests: Vec<Vec<Doc>>,
    pub headers: Vec<HeaderMap>,
    /// Stored documents by id, and ids in the order they were first stored.
    pub stored: HashMap<String, Doc>,
    pub order: Vec<String>,
}

pub struct StandIn {
    pub port: u16,
    pub seen: Arc<Mutex<Seen>>,
    rule: Arc<Mutex<Rule>>,
    server: Background,
}

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Seen>>,
    rule: Arc<Mutex<Rule>>,
}

pub fn accept_all() -> Rule {
    Box::new(|_, docs| Reply::Items(vec![None; docs.len()]))
}

impl StandIn {
    pub fn start(rule: Rule) -> StandIn {
        Self::start_on(0, rule)
    }

    /// On a given port (0: any free one).
    pub fn start_on(port: u16, rule: Rule) -> StandIn {
        let seen = Arc::new(Mutex::new(Seen::default()));
        Self::listen(port, seen, Arc::new(Mutex::new(rule)))
    }

    fn listen(port: u16, seen: Arc<Mutex<Seen>>, rule: Arc<Mutex<Rule>>) -> StandIn {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let shared = Shared {
            seen: seen.clone(),
            rule: rule.clone(),
        };
        let app = Router::new().route("/_bulk", post(bulk)).with_state(shared);
        StandIn {
            port,
            seen,
            rule,
            server: Background::serve(listener, app),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_rule(&self, rule: Rule) {
        *self.rule.lock().expect("rule") = rule;
    }

    /// Closes the listener (connections are refused) and keeps what was stored.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let again = Self::listen(self.port, self.seen.clone(), self.rule.clone());
        *self = again;
    }

    pub fn stored_report_ids(&self) -> Vec<u64> {
        let seen = self.seen.lock().expect("seen");
        seen.order
            .iter()
            .map(|id| seen.stored[id].report_id())
            .collect()
    }
}

async fn bulk(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut text = String::new();
    let decoded = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text)
    } else {
        (&body[..]).read_to_string(&mut text)
    };
    if let Err(e) = decoded {
        return (StatusCode::BAD_REQUEST, format!("body: {e}")).into_response();
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut docs = Vec::new();
    for pair in lines.chunks(2) {
        let (Ok(action), Some(Ok(body))) = (
            serde_json::from_str::<serde_json::Value>(pair[0]),
            pair.get(1)
                .map(|b| serde_json::from_str::<serde_json::Value>(b)),
        ) else {
            return (StatusCode::BAD_REQUEST, "malformed bulk body").into_response();
        };
        let create = &action["create"];
        docs.push(Doc {
            id: create["_id"].as_str().unwrap_or_default().to_string(),
            index: create["_index"].as_str().unwrap_or_default().to_string(),
            body,
        });
    }
    let mut seen = s.seen.lock().expect("seen");
    let n = seen.requests.len();
    seen.requests.push(docs.clone());
    seen.headers.push(headers);
    let reply = (s.rule.lock().expect("rule"))(n, &docs);
    let statuses = match reply {
        Reply::Whole(status, retry_after) => {
            let mut r = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                format!("{{\"error\":\"injected {status}\"}}"),
            )
                .into_response();
            if let Some(secs) = retry_after {
                r.headers_mut()
                    .insert("retry-after", secs.to_string().parse().expect("header"));
            }
            return r;
        }
        Reply::Items(statuses) => statuses,
    };
    let mut items = Vec::new();
    let mut errors = false;
    for (doc, status) in docs.into_iter().zip(statuses) {
        let status = match status {
            Some(s) => s,
            None if seen.stored.contains_key(&doc.id) => 409,
            None => {
                seen.order.push(doc.id.clone());
                seen.stored.insert(doc.id.clone(), doc.clone());
                201
            }
        };
        let mut item = serde_json::json!({"_index": doc.index, "_id": doc.id, "status": status});
        if status >= 300 {
            errors = true;
            let kind = match status {
                400 => "mapper_parsing_exception",
                409 => "version_conflict_engine_exception",
                429 => "es_rejected_execution_exception",
                _ => "injected",
            };
            item["error"] =
                serde_json::json!({"type": kind, "reason": format!("injected {status}")});
        }
        items.push(serde_json::json!({ "create": item }));
    }
    let body = serde_json::json!({"took": 1, "errors": errors, "items": items});
    (StatusCode::OK, body.to_string()).into_response()
}

pub fn unused_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
}
