//! A local stand-in for the Microsoft APIs the pollers call, written from their documented
//! behaviour (shared/reference/microsoft-defender-apis.md): the Entra token endpoint (v2 with
//! numeric `expires_in`, v1 with strings), Graph `alerts_v2` and `incidents` (`$filter` on
//! `lastUpdateDateTime ge`, `$top` limits of 2000 and 50 answered with 400 above them,
//! `@odata.nextLink` paging, `$expand=alerts`), Defender for Endpoint `/api/alerts`,
//! `/api/vulnerabilities`, `/api/machines` (404 when empty) and machine vulnerabilities
//! (`$top`/`$skip`), and the SIEM API (`sinceTimeUtc`, a bare array). Tokens expire; faults are
//! scripted by request number: 429 with a fractional `Retry-After`, 5xx bursts, every token
//! revoked, and an `$expand` that keeps failing.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::common::Background;

#[derive(Default)]
pub struct Data {
    pub graph_alerts: Vec<Value>,
    pub incidents: Vec<Value>,
    pub mde_alerts: Vec<Value>,
    pub siem: Vec<Value>,
    pub vulnerabilities: Vec<Value>,
    pub machines: Vec<Value>,
    pub machine_vulnerabilities: Vec<Value>,
    /// `SoftwareVulnerabilityChangesByMachine` rows (with `eventTimestamp`).
    pub changes: Vec<Value>,
}

#[derive(Default)]
pub struct Faults {
    /// Request numbers (counting API requests from 0) answered 429 with `Retry-After: 0.3`.
    pub throttle: BTreeSet<usize>,
    /// Request numbers answered 503 without `Retry-After` (a burst of server errors).
    pub server_error: BTreeSet<usize>,
    /// Before these request numbers every issued token is revoked (a token expiry).
    pub revoke: BTreeSet<usize>,
    /// Incidents with `$expand=alerts` answer 500.
    pub expand_fails: bool,
    /// Routes (as recorded in `requests`) answered 403, as for a permission not granted.
    pub forbidden: BTreeSet<String>,
}

pub struct Shared {
    pub data: Mutex<Data>,
    pub faults: Mutex<Faults>,
    pub secret: String,
    pub lifetime: Duration,
    tokens: Mutex<HashMap<String, Instant>>,
    /// API requests so far, and token requests.
    pub requests: Mutex<Vec<String>>,
    pub token_requests: Mutex<usize>,
    /// Milliseconds each API page takes (a slow service, for a restart while paging).
    pub delay_ms: Mutex<u64>,
    /// Graph next links carry the generation they were issued in; a link of an older one is
    /// refused (400), as Graph refuses a `$skiptoken` that expired.
    pub link_generation: Mutex<u64>,
}

pub struct MsApi {
    pub url: String,
    pub shared: Arc<Shared>,
    _server: Background,
}

impl MsApi {
    pub fn start(data: Data, faults: Faults, secret: &str, lifetime: Duration) -> MsApi {
        let shared = Arc::new(Shared {
            data: Mutex::new(data),
            faults: Mutex::new(faults),
            secret: secret.to_string(),
            lifetime,
            tokens: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            token_requests: Mutex::new(0),
            delay_ms: Mutex::new(0),
            link_generation: Mutex::new(0),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token_v2))
            .route("/{tenant}/oauth2/token", post(token_v1))
            .route("/v1.0/security/alerts_v2", get(graph_alerts))
            .route("/v1.0/security/incidents", get(incidents))
            .route("/api/alerts", get(api_alerts))
            .route("/api/vulnerabilities", get(vulnerabilities))
            .route("/api/machines", get(machines))
            .route(
                "/api/vulnerabilities/machinesVulnerabilities",
                get(machine_vulnerabilities),
            )
            .route(
                "/api/machines/SoftwareVulnerabilityChangesByMachine",
                get(changes),
            )
            .with_state(shared.clone());
        MsApi {
            url,
            shared,
            _server: Background::serve(listener, app),
        }
    }
}

type Q = Query<HashMap<String, String>>;

fn json_response(v: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}}).to_string();
    (status, [("content-type", "application/json")], body).into_response()
}

fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect()
}

fn decode(v: &str) -> String {
    let bytes = v.replace('+', " ").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn issue(s: &Shared, body: &str) -> Result<(String, u64), Box<Response>> {
    *s.token_requests.lock().expect("count") += 1;
    let f = form(body);
    if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type",
        )));
    }
    if f.get("client_secret") != Some(&s.secret) {
        let body = json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}).to_string();
        return Err(Box::new((StatusCode::UNAUTHORIZED, body).into_response()));
    }
    let mut tokens = s.tokens.lock().expect("tokens");
    let token = format!("tok-{}", tokens.len() + 1);
    tokens.insert(token.clone(), Instant::now() + s.lifetime);
    Ok((token, s.lifetime.as_secs().max(1)))
}

async fn token_v2(State(s): State<Arc<Shared>>, Path(_t): Path<String>, body: String) -> Response {
    match issue(&s, &body) {
        Ok((token, secs)) => json_response(json!({"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": token})).into_response(),
        Err(r) => *r,
    }
}

async fn token_v1(State(s): State<Arc<Shared>>, Path(_t): Path<String>, body: String) -> Response {
    match issue(&s, &body) {
        // The v1 endpoint sends its numbers as strings.
        Ok((token, secs)) => json_response(json!({"token_type": "Bearer", "expires_in": secs.to_string(), "ext_expires_in": "0", "resource": "https://graph.windows.net", "access_token": token})).into_response(),
        Err(r) => *r,
    }
}

/// Authorisation and scripted faults, common to every API route.
async fn gate(s: &Shared, headers: &HeaderMap, what: String) -> Result<(), Response> {
    let n = {
        let mut r = s.requests.lock().expect("requests");
        r.push(what);
        r.len() - 1
    };
    let delay = *s.delay_ms.lock().expect("delay");
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (throttle, server_error, revoke, forbidden) = {
        let f = s.faults.lock().expect("faults");
        let what = s.requests.lock().expect("requests")[n].clone();
        (
            f.throttle.contains(&n),
            f.server_error.contains(&n),
            f.revoke.contains(&n),
            f.forbidden.contains(&what),
        )
    };
    if revoke {
        s.tokens.lock().expect("tokens").clear();
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let valid = s
        .tokens
        .lock()
        .expect("tokens")
        .get(&token)
        .is_some_and(|until| Instant::now() < *until);
    if !valid {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        ));
    }
    if forbidden {
        return Err(error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Missing application roles.",
        ));
    }
    if throttle {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Please retry again later.",
        );
        r.headers_mut()
            .insert("retry-after", "0.3".parse().expect("header"));
        return Err(r);
    }
    if server_error {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "burst",
        ));
    }
    Ok(())
}

/// `field ge value` from an OData `$filter`.
fn since(q: &HashMap<String, String>, field: &str) -> Option<String> {
    let f = q.get("$filter")?;
    let rest = f.strip_prefix(field)?.trim_start().strip_prefix("ge")?;
    Some(rest.trim().to_string())
}

fn time_of(v: &Value, field: &str) -> i64 {
    v[field].as_str().and_then(parse_ms).unwrap_or(i64::MIN)
}

/// Milliseconds of an ISO time (`2026-10-14T08:31:02.123Z`), enough for the stand-in.
fn parse_ms(s: &str) -> Option<i64> {
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let ms: i64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?;
    let days = (d[0] - 1970) * 365
        + (d[0] - 1969) / 4
        + [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][(d[1] - 1) as usize]
        + if d[1] > 2 && d[0] % 4 == 0 { 1 } else { 0 }
        + d[2]
        - 1;
    Some(((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + ms)
}

/// One OData page of `items` changed since the filter, ordered by change time.
fn page(
    base: &str,
    q: &HashMap<String, String>,
    items: &[Value],
    field: &str,
    max_top: usize,
    generation: u64,
) -> Response {
    if q.get("gen").is_some_and(|g| *g != generation.to_string()) {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the skip token has expired",
        );
    }
    let top: usize = match q.get("$top").map(|t| t.parse()) {
        Some(Ok(t)) if t <= max_top => t,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("$top must be at most {max_top}"),
            )
        }
        None => max_top,
    };
    let skip: usize = q.get("$skip").and_then(|s| s.parse().ok()).unwrap_or(0);
    let from = since(q, field).and_then(|f| parse_ms(&f));
    let mut selected: Vec<&Value> = items
        .iter()
        .filter(|v| from.is_none_or(|f| time_of(v, field) >= f))
        .collect();
    selected.sort_by_key(|v| time_of(v, field));
    let chunk: Vec<Value> = selected
        .iter()
        .skip(skip)
        .take(top)
        .map(|v| (*v).clone())
        .collect();
    let mut body = json!({"@odata.context": format!("{base}/$metadata"), "value": chunk});
    if skip + top < selected.len() {
        let mut next = reqwest::Url::parse(base).expect("base");
        {
            let mut p = next.query_pairs_mut();
            for (k, v) in q {
                if k != "$skip" && k != "gen" {
                    p.append_pair(k, v);
                }
            }
            p.append_pair("$skip", &(skip + top).to_string());
            p.append_pair("gen", &generation.to_string());
        }
        body["@odata.nextLink"] = Value::String(next.to_string());
    }
    json_response(body).into_response()
}

fn base(headers: &HeaderMap, path: &str) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}{path}")
}

async fn graph_alerts(State(s): State<Arc<Shared>>, headers: HeaderMap, Query(q): Q) -> Response {
    if let Err(r) = gate(&s, &headers, "alerts_v2".into()).await {
        return r;
    }
    let items = s.data.lock().expect("data").graph_alerts.clone();
    page(
        &base(&headers, "/v1.0/security/alerts_v2"),
        &q,
        &items,
        "lastUpdateDateTime",
        2000,
        *s.link_generation.lock().expect("generation"),
    )
}

async fn incidents(State(s): State<Arc<Shared>>, headers: HeaderMap, Query(q): Q) -> Response {
    let expand = q.get("$expand").map(String::as_str) == Some("alerts");
    if let Err(r) = gate(&s, &headers, format!("incidents expand={expand}")).await {
        return r;
    }
    if expand && s.faults.lock().expect("faults").expand_fails {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "expand failed",
        );
    }
    let mut items = s.data.lock().expect("data").incidents.clone();
    if !expand {
        for i in &mut items {
            if let Some(o) = i.as_object_mut() {
                o.remove("alerts");
            }
        }
    }
    page(
        &base(&headers, "/v1.0/security/incidents"),
        &q,
        &items,
        "lastUpdateDateTime",
        50,
        *s.link_generation.lock().expect("generation"),
    )
}

async fn api_alerts(State(s): State<Arc<Shared>>, headers: HeaderMap, Query(q): Q) -> Response {
    if let Some(since) = q.get("sinceTimeUtc") {
        if let Err(r) = gate(&s, &headers, "siem".into()).await {
            return r;
        }
        let from = parse_ms(since);
        let items: Vec<Value> = s
            .data
            .lock()
            .expect("data")
            .siem
            .iter()
            .filter(|v| from.is_none_or(|f| time_of(v, "LastProcessedTimeUtc") >= f))
            .cloned()
            .collect();
        return json_response(Value::Array(items)).into_response();
    }
    if let Err(r) = gate(&s, &headers, "mde alerts".into()).await {
        return r;
    }
    let items = s.data.lock().expect("data").mde_alerts.clone();
    page(
        &base(&headers, "/api/alerts"),
        &q,
        &items,
        "lastUpdateTime",
        10_000,
        *s.link_generation.lock().expect("generation"),
    )
}

/// `$top`/`$skip` without nextLink, as the MDE lists are paged in practice.
fn plain(q: &HashMap<String, String>, items: &[Value], max_top: usize) -> Response {
    let top: usize = q
        .get("$top")
        .and_then(|t| t.parse().ok())
        .unwrap_or(max_top)
        .min(max_top);
    let skip: usize = q.get("$skip").and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunk: Vec<Value> = items.iter().skip(skip).take(top).cloned().collect();
    json_response(json!({"value": chunk})).into_response()
}

async fn vulnerabilities(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    if let Err(r) = gate(&s, &headers, "vulnerabilities".into()).await {
        return r;
    }
    let items = s.data.lock().expect("data").vulnerabilities.clone();
    plain(&q, &items, 8000)
}

async fn machines(State(s): State<Arc<Shared>>, headers: HeaderMap, Query(q): Q) -> Response {
    if let Err(r) = gate(&s, &headers, "machines".into()).await {
        return r;
    }
    let items = s.data.lock().expect("data").machines.clone();
    if items.is_empty() {
        return error(StatusCode::NOT_FOUND, "NotFound", "no recent machines");
    }
    plain(&q, &items, 10_000)
}

async fn machine_vulnerabilities(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    if let Err(r) = gate(&s, &headers, "machinesVulnerabilities".into()).await {
        return r;
    }
    let items = s.data.lock().expect("data").machine_vulnerabilities.clone();
    plain(&q, &items, 10_000)
}

/// The delta export: rows changed since `sinceTime` (required), `pageSize` per page, nextLink.
async fn changes(State(s): State<Arc<Shared>>, headers: HeaderMap, Query(q): Q) -> Response {
    if let Err(r) = gate(&s, &headers, "changes".into()).await {
        return r;
    }
    let Some(since) = q.get("sinceTime") else {
        return error(
            StatusCode::BAD_REQUEST,
            "MissingRequiredParameter",
            "sinceTime",
        );
    };
    let mut odata: HashMap<String, String> = HashMap::new();
    odata.insert("$filter".into(), format!("eventTimestamp ge {since}"));
    if let Some(n) = q.get("pageSize") {
        odata.insert("$top".into(), n.clone());
    }
    if let Some(skip) = q.get("$skip") {
        odata.insert("$skip".into(), skip.clone());
    }
    let items = s.data.lock().expect("data").changes.clone();
    page(
        &base(
            &headers,
            "/api/machines/SoftwareVulnerabilityChangesByMachine",
        ),
        &odata,
        &items,
        "eventTimestamp",
        200_000,
        *s.link_generation.lock().expect("generation"),
    )
}
