//! The pollers of one tenant: Graph `alerts_v2` and `incidents`, Defender for Endpoint alerts
//! and vulnerabilities, the legacy SIEM API. Each feed runs on its own interval.
//!
//! Incremental feeds (alerts, incidents, SIEM detections) sweep from their watermark less an
//! overlap window (items land late), follow `@odata.nextLink`, and drop what the overlap brings
//! again (an LRU of id and change time, persisted with the cursor). An item seen before with
//! another change time is an update: it is sent again, marked `"dsmUpdate": true`. After each
//! page the outputs have taken, the cursor (with the page to fetch next) is saved; a restart
//! resumes from there. The vulnerability feed is a full sync on a schedule: the CVE list,
//! machines and machine vulnerabilities, joined by [`crate::correlate`].

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lru::LruCache;
use tokio::sync::watch;

use super::api::{ApiClient, ApiError};
use super::auth::Audience;
use super::checkpoint::CheckpointFile;
use crate::event::SourceKind;
use crate::mapping::time::Timestamp;
use crate::pipeline::{IngestError, Pipeline};

/// What a feed is, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    GraphAlerts,
    GraphIncidents,
    MdeAlerts,
    MdeVulnerabilities,
    SiemAlerts,
}

impl FeedKind {
    pub const ALL: [FeedKind; 5] = [
        FeedKind::GraphAlerts,
        FeedKind::GraphIncidents,
        FeedKind::MdeAlerts,
        FeedKind::MdeVulnerabilities,
        FeedKind::SiemAlerts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::GraphAlerts => "graph-alerts",
            FeedKind::GraphIncidents => "graph-incidents",
            FeedKind::MdeAlerts => "mde-alerts",
            FeedKind::MdeVulnerabilities => "mde-vulnerabilities",
            FeedKind::SiemAlerts => "siem-alerts",
        }
    }

    /// The application permission a 403 names.
    pub fn permission(self) -> &'static str {
        match self {
            FeedKind::GraphAlerts => "SecurityAlert.Read.All (Microsoft Graph)",
            FeedKind::GraphIncidents => "SecurityIncident.Read.All (Microsoft Graph)",
            FeedKind::MdeAlerts => "Alert.Read.All (WindowsDefenderATP)",
            FeedKind::MdeVulnerabilities => {
                "Vulnerability.Read.All and Machine.Read.All (WindowsDefenderATP)"
            }
            FeedKind::SiemAlerts => "the SIEM integration app (Settings > SIEM)",
        }
    }
}

/// Where one tenant's APIs are and how to poll them.
#[derive(Debug, Clone)]
pub struct TenantSettings {
    pub name: String,
    /// The Entra tenant id, carried into records that do not say it.
    pub tenant_id: String,
    pub graph_url: String,
    pub mde_url: String,
    pub siem_url: String,
    pub interval: Duration,
    pub overlap: Duration,
    /// How far back the first sweep reaches.
    pub lookback: Duration,
    pub full_sync_interval: Duration,
    pub graph_alerts_top: u32,
    pub incidents_top: u32,
    pub mde_top: u32,
    /// A cursor that has not advanced for this long raises `dsm_poller_stale`.
    pub stale_after: Duration,
}

const SEEN_CAPACITY: usize = 200_000;

pub struct Poller {
    pub tenant: TenantSettings,
    pub feed: FeedKind,
    pub api: Arc<ApiClient>,
    pub pipeline: Arc<Pipeline>,
    pub cursors: PathBuf,
}

enum Sweep {
    Done,
    Stopped,
}

impl Poller {
    /// Polls until `stop` turns true; a sweep in progress finishes its current page first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let file = CheckpointFile::new(&self.cursors, &self.tenant.name, self.feed.as_str());
        let mut last_advance = std::time::Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            let result = match self.feed {
                FeedKind::MdeVulnerabilities => {
                    self.full_sync(&file, &stop).await.map(|_| Sweep::Done)
                }
                _ => self.sweep(&file, &stop).await,
            };
            let labels = [
                ("tenant", self.tenant.name.as_str()),
                ("feed", self.feed.as_str()),
            ];
            match result {
                Ok(Sweep::Stopped) => return,
                Ok(Sweep::Done) => last_advance = std::time::Instant::now(),
                Err(e) => {
                    let kind = match &e {
                        PollError::Api(
                            ApiError::Forbidden { .. } | ApiError::Unauthorized { .. },
                        )
                        | PollError::Api(ApiError::Auth(_)) => "auth",
                        PollError::Api(_) => "api",
                        PollError::Ingest(_) => "outputs",
                        PollError::Cursor(_) => "cursor",
                    };
                    self.pipeline.telemetry.add(
                        "dsm_poller_errors_total",
                        &[labels[0], labels[1], ("kind", kind)],
                        1,
                    );
                    tracing::error!(tenant = %self.tenant.name, feed = self.feed.as_str(), error = %e, "poll failed; the cursor stays");
                }
            }
            let stale = last_advance.elapsed() > self.tenant.stale_after;
            self.pipeline
                .telemetry
                .set("dsm_poller_stale", &labels, u64::from(stale));
            tokio::select! {
                _ = tokio::time::sleep(self.tenant.interval) => {}
                _ = stop.changed() => {}
            }
        }
    }

    fn origin(&self) -> String {
        format!("{}/{}", self.tenant.name, self.feed.as_str())
    }

    async fn ingest(&self, text: String, source: SourceKind) -> Result<u64, PollError> {
        let text = Arc::new(text);
        // A full spool clears when its endpoint returns: the page waits, it is not skipped.
        loop {
            match self
                .pipeline
                .ingest(text.clone(), &self.origin(), "poller", Some(source))
                .await
            {
                Ok(taken) => return Ok(taken.records),
                Err(IngestError::Unavailable(reason)) => {
                    tracing::warn!(%reason, "outputs full; the page waits");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                // The same page would be cut at the same record again: what was taken stands,
                // the rest is reported, and the feed moves on rather than stall on it.
                Err(IngestError::TooLarge(reason)) => {
                    self.pipeline.telemetry.add(
                        "dsm_poller_errors_total",
                        &[
                            ("tenant", &self.tenant.name),
                            ("feed", self.feed.as_str()),
                            ("kind", "too_large"),
                        ],
                        1,
                    );
                    tracing::error!(tenant = %self.tenant.name, feed = self.feed.as_str(), %reason, "a page's events pass max_payload_output_bytes; the records after the cut are not sent");
                    return Ok(0);
                }
                Err(e) => return Err(PollError::Ingest(e.to_string())),
            }
        }
    }

    fn incremental(&self) -> Incremental {
        let t = &self.tenant;
        let graph = Audience::Scope(format!("{}/.default", scope_base(&t.graph_url)));
        let mde = Audience::Scope("https://api.securitycenter.microsoft.com/.default".into());
        match self.feed {
            FeedKind::GraphAlerts => Incremental {
                url: format!("{}/v1.0/security/alerts_v2", t.graph_url),
                time_field: "lastUpdateDateTime",
                id_field: "id",
                query: vec![("$top", t.graph_alerts_top.to_string())],
                fallback: None,
                audience: graph,
                source: SourceKind::GraphAlert,
                since_param: None,
                bare_array: false,
            },
            FeedKind::GraphIncidents => Incremental {
                url: format!("{}/v1.0/security/incidents", t.graph_url),
                time_field: "lastUpdateDateTime",
                id_field: "id",
                query: vec![
                    ("$top", t.incidents_top.min(50).to_string()),
                    ("$expand", "alerts".into()),
                ],
                fallback: Some(vec![("$top", t.incidents_top.min(50).to_string())]),
                audience: graph,
                source: SourceKind::GraphIncident,
                since_param: None,
                bare_array: false,
            },
            FeedKind::MdeAlerts => Incremental {
                url: format!("{}/api/alerts", t.mde_url),
                time_field: "lastUpdateTime",
                id_field: "id",
                query: vec![
                    ("$top", t.mde_top.to_string()),
                    ("$expand", "evidence".into()),
                ],
                fallback: None,
                audience: mde,
                source: SourceKind::MdeAlert,
                since_param: None,
                bare_array: false,
            },
            // Between full syncs: the changes since the last one (data generated every 6 h).
            FeedKind::MdeVulnerabilities => Incremental {
                url: format!(
                    "{}/api/machines/SoftwareVulnerabilityChangesByMachine",
                    t.mde_url
                ),
                time_field: "eventTimestamp",
                id_field: "id",
                query: vec![("pageSize", t.mde_top.to_string())],
                fallback: None,
                audience: mde,
                source: SourceKind::MdeVulnerability,
                since_param: Some("sinceTime"),
                bare_array: false,
            },
            FeedKind::SiemAlerts => Incremental {
                url: format!("{}/api/alerts", t.siem_url),
                time_field: "LastProcessedTimeUtc",
                id_field: "FullId",
                query: Vec::new(),
                fallback: None,
                audience: Audience::Resource("https://graph.windows.net".into()),
                source: SourceKind::SiemAlert,
                since_param: Some("sinceTimeUtc"),
                bare_array: true,
            },
        }
    }

    async fn sweep(
        &self,
        file: &CheckpointFile,
        stop: &watch::Receiver<bool>,
    ) -> Result<Sweep, PollError> {
        let feed = self.incremental();
        let mut cp = file.load().map_err(PollError::Cursor)?;
        let mut seen = seen_from(&cp.seen);
        let from = cp
            .watermark
            .as_deref()
            .and_then(Timestamp::parse)
            .map(|w| w.unix_nanos() - self.tenant.overlap.as_nanos() as i64)
            .unwrap_or_else(|| now_nanos() - self.tenant.lookback.as_nanos() as i64);
        let from = Timestamp::from_unix_nanos(from).iso_millis();
        let mut query = feed.query.clone();
        let mut url = match cp.next_link.clone() {
            Some(link) => link,
            None => feed.first_url(&query, &from),
        };
        let headers = [("prefer", "include-unknown-enum-members")];
        let mut first_page = cp.next_link.is_none();
        // The first request of this sweep is a next link saved by an earlier one.
        let mut resumed = cp.next_link.is_some();
        loop {
            let body = match self
                .api
                .get(&url, &feed.audience, self.feed.permission(), &headers)
                .await
            {
                Ok(b) => b,
                // Large tenants see `$expand=alerts` fail: the incidents come without their
                // alerts (alerts_v2 brings those).
                Err(ApiError::Rejected { .. } | ApiError::Unavailable { .. })
                    if first_page && feed.fallback.as_ref().is_some_and(|f| *f != query) =>
                {
                    tracing::warn!(
                        feed = self.feed.as_str(),
                        "the expanded request keeps failing; fetching without $expand"
                    );
                    query = feed.fallback.clone().unwrap_or_default();
                    url = feed.first_url(&query, &from);
                    continue;
                }
                // A saved next link the service no longer honours (an expired skip token):
                // sweep again from the cursor; what was delivered is recognised and skipped.
                Err(ApiError::Rejected { reason, .. }) if resumed => {
                    tracing::warn!(feed = self.feed.as_str(), %reason, "the saved next link was refused; sweeping again from the cursor");
                    cp.next_link = None;
                    url = feed.first_url(&query, &from);
                    first_page = true;
                    resumed = false;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            first_page = false;
            resumed = false;
            let page: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
                PollError::Api(ApiError::Rejected {
                    url: url.clone(),
                    status: 200,
                    reason: format!("not JSON: {e}"),
                })
            })?;
            let items = if feed.bare_array {
                page.as_array().cloned().unwrap_or_default()
            } else {
                page["value"].as_array().cloned().unwrap_or_default()
            };
            let mut fresh = Vec::new();
            let mut taken_keys = Vec::new();
            for mut item in items {
                // The SIEM API's detections do not say their tenant: the poller knows it.
                if let Some(o) = item.as_object_mut() {
                    if !o.contains_key("tenantId") && !o.contains_key("aadTenantId") {
                        o.insert(
                            "tenantId".into(),
                            serde_json::Value::String(self.tenant.tenant_id.clone()),
                        );
                    }
                }
                let id = item[feed.id_field].as_str().unwrap_or_default().to_string();
                let time = item[feed.time_field]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                match seen.peek(&id) {
                    Some(t) if *t == time => continue,
                    Some(_) => {
                        if let Some(o) = item.as_object_mut() {
                            o.insert("dsmUpdate".into(), serde_json::Value::Bool(true));
                        }
                    }
                    None => {}
                }
                if later(&time, cp.sweep_max.as_deref()) {
                    cp.sweep_max = Some(time.clone());
                }
                taken_keys.push((id, time));
                fresh.push(item);
            }
            if !fresh.is_empty() {
                let n = fresh.len() as u64;
                let text = if feed.bare_array {
                    serde_json::Value::Array(fresh).to_string()
                } else {
                    serde_json::json!({ "value": fresh }).to_string()
                };
                self.ingest(text, feed.source).await?;
                self.pipeline.telemetry.add(
                    "dsm_poller_items_total",
                    &[("tenant", &self.tenant.name), ("feed", self.feed.as_str())],
                    n,
                );
            }
            for (id, time) in taken_keys {
                seen.put(id, time);
            }
            let next = page["@odata.nextLink"].as_str().map(str::to_string);
            cp.next_link = next.clone();
            cp.seen = seen_to(&seen);
            file.save(&cp).map_err(PollError::Cursor)?;
            match next {
                Some(n) if !*stop.borrow() => url = n,
                Some(_) => return Ok(Sweep::Stopped),
                None => break,
            }
        }
        if later(
            cp.sweep_max.as_deref().unwrap_or_default(),
            cp.watermark.as_deref(),
        ) {
            cp.watermark = cp.sweep_max.take();
        }
        cp.sweep_max = None;
        cp.next_link = None;
        // Keys older than the next sweep's start cannot come again.
        if let Some(w) = cp.watermark.as_deref().and_then(Timestamp::parse) {
            let horizon = w.unix_nanos() - self.tenant.overlap.as_nanos() as i64;
            let keep: Vec<(String, String)> = seen
                .iter()
                .filter(|(_, t)| Timestamp::parse(t).is_none_or(|t| t.unix_nanos() >= horizon))
                .map(|(i, t)| (i.clone(), t.clone()))
                .collect();
            seen.clear();
            for (i, t) in keep.into_iter().rev() {
                seen.put(i, t);
            }
        }
        cp.seen = seen_to(&seen);
        file.save(&cp).map_err(PollError::Cursor)?;
        Ok(Sweep::Done)
    }

    /// The vulnerability snapshot when the last one is older than the sync interval, else the
    /// changes since (the delta export), swept like the alerts with a cursor of their own.
    async fn full_sync(
        &self,
        file: &CheckpointFile,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), PollError> {
        let mut cp = file.load().map_err(PollError::Cursor)?;
        let now = now_nanos();
        if let Some(last) = cp.last_full_sync.as_deref().and_then(Timestamp::parse) {
            if now - last.unix_nanos() < self.tenant.full_sync_interval.as_nanos() as i64 {
                let delta = CheckpointFile::new(
                    &self.cursors,
                    &self.tenant.name,
                    "mde-vulnerabilities-delta",
                );
                let mut dcp = delta.load().map_err(PollError::Cursor)?;
                if dcp.watermark.is_none() {
                    // Changes older than the snapshot are in it already.
                    dcp.watermark = cp.last_full_sync.clone();
                    delta.save(&dcp).map_err(PollError::Cursor)?;
                }
                return self.sweep(&delta, stop).await.map(|_| ());
            }
        }
        let base = &self.tenant.mde_url;
        let top = self.tenant.mde_top;
        let vulnerabilities = self
            .fetch_all(&format!("{base}/api/vulnerabilities"), top.min(8000))
            .await?;
        let machines = self
            .fetch_all(&format!("{base}/api/machines"), top.min(10_000))
            .await?;
        let rows = self
            .fetch_all(
                &format!("{base}/api/vulnerabilities/machinesVulnerabilities"),
                top.min(10_000),
            )
            .await?;
        let fetched = Timestamp::from_unix_nanos(now).iso_millis();
        let bundle = serde_json::json!({
            "vulnerabilities": vulnerabilities,
            "machines": machines,
            "machinesVulnerabilities": rows,
            "fetchedDateTime": fetched,
            "tenantId": self.tenant.tenant_id,
        });
        let n = self
            .ingest(bundle.to_string(), SourceKind::MdeVulnerability)
            .await?;
        self.pipeline.telemetry.add(
            "dsm_poller_items_total",
            &[("tenant", &self.tenant.name), ("feed", self.feed.as_str())],
            n,
        );
        cp.last_full_sync = Some(fetched);
        file.save(&cp).map_err(PollError::Cursor)
    }

    /// Every page of an OData list: `@odata.nextLink` when given, else `$top`/`$skip` until a
    /// short page. 404 on machines means none were seen recently: an empty list.
    async fn fetch_all(&self, base: &str, top: u32) -> Result<Vec<serde_json::Value>, PollError> {
        let audience = Audience::Scope("https://api.securitycenter.microsoft.com/.default".into());
        let mut all = Vec::new();
        let mut skip = 0u64;
        let mut url = format!("{base}?$top={top}");
        loop {
            let body = match self
                .api
                .get(&url, &audience, self.feed.permission(), &[])
                .await
            {
                Ok(b) => b,
                Err(ApiError::Rejected { status: 404, .. }) => return Ok(all),
                Err(e) => return Err(e.into()),
            };
            let page: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let items = page["value"].as_array().cloned().unwrap_or_default();
            let n = items.len() as u64;
            all.extend(items);
            if let Some(next) = page["@odata.nextLink"].as_str() {
                url = next.to_string();
                continue;
            }
            if n < u64::from(top) || n == 0 {
                return Ok(all);
            }
            skip += n;
            url = format!("{base}?$top={top}&$skip={skip}");
        }
    }
}

struct Incremental {
    url: String,
    time_field: &'static str,
    id_field: &'static str,
    query: Vec<(&'static str, String)>,
    /// The query to fall back to when the first one keeps failing.
    fallback: Option<Vec<(&'static str, String)>>,
    audience: Audience,
    source: SourceKind,
    /// A query parameter for the start time (`sinceTimeUtc`, `sinceTime`) instead of `$filter`.
    since_param: Option<&'static str>,
    /// The response is a bare array (the SIEM API), not `{"value": [...]}`.
    bare_array: bool,
}

impl Incremental {
    fn first_url(&self, query: &[(&'static str, String)], from: &str) -> String {
        let mut url = match reqwest::Url::parse(&self.url) {
            Ok(u) => u,
            Err(_) => return self.url.clone(),
        };
        {
            let mut q = url.query_pairs_mut();
            match self.since_param {
                Some(p) => q.append_pair(p, from),
                None => q.append_pair("$filter", &format!("{} ge {from}", self.time_field)),
            };
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url.to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("outputs: {0}")]
    Ingest(String),
    #[error("cursor: {0}")]
    Cursor(String),
}

/// The scope's app-ID URI for a Graph base URL (a stand-in's URL maps to Graph's).
fn scope_base(graph_url: &str) -> &str {
    if graph_url.contains("graph.microsoft.us") {
        "https://graph.microsoft.us"
    } else {
        "https://graph.microsoft.com"
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// `a` is a later time than `b` (a missing `b` is earlier than anything).
fn later(a: &str, b: Option<&str>) -> bool {
    match (Timestamp::parse(a), b.and_then(Timestamp::parse)) {
        (Some(a), Some(b)) => a.unix_nanos() > b.unix_nanos(),
        (Some(_), None) => true,
        _ => false,
    }
}

fn seen_from(keys: &[String]) -> LruCache<String, String> {
    let mut lru = LruCache::new(NonZeroUsize::new(SEEN_CAPACITY).unwrap_or(NonZeroUsize::MIN));
    for k in keys {
        if let Some((id, time)) = k.split_once('|') {
            lru.put(id.to_string(), time.to_string());
        }
    }
    lru
}

/// Oldest first, so that loading puts them back in the same recency order.
fn seen_to(lru: &LruCache<String, String>) -> Vec<String> {
    lru.iter().rev().map(|(i, t)| format!("{i}|{t}")).collect()
}
