//! `serve [--config FILE]`: the HTTP ingest endpoint and the outputs as a long-running service,
//! with mapping hot reload (SIGHUP, or a change under the mappings directory) and graceful
//! shutdown (SIGTERM, Ctrl-C).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use super::replay::{compare_all, find_cases};
use super::translate::load_geo;
use crate::config::{secret, LogFormat, OutputKind, ServiceConfig};
use crate::inputs::api::{ApiClient, Budget};
use crate::inputs::auth::TokenProvider;
use crate::inputs::http::{ops_router, router, BodyLimits, HttpState};
use crate::inputs::poller::{FeedKind, Poller, TenantSettings};
use crate::inputs::server::{ConnectionLimits, OPS_CONNECTIONS};
use crate::mapping::{MapOptions, MappingSet};
use crate::output::elastic_setup::ElasticSetup;
use crate::pipeline::{bulk_auth, start_outputs, Pipeline};
use crate::translate::Translator;

#[derive(Args)]
pub struct ServeArgs {
    /// The service's configuration (TOML, see docs/configuration.md); without it, the embedded
    /// defaults: ingest on 127.0.0.1:8080, LEEF and ECS files under ./data/out/.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    crate::output::install_crypto_provider();
    let cfg = match &a.config {
        Some(path) => ServiceConfig::load(path)?,
        None => ServiceConfig::default(),
    };
    init_logging(&cfg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(serve(cfg, a.config));
    // A client library stuck in a blocking call (a broker that does not answer a final commit)
    // must not keep the process from exiting.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// The Azure SDK's crates log every load-balancing round at info: they start at warn unless the
/// configured filter names them.
const QUIET_CRATES: [&str; 6] = [
    "azure_messaging_eventhubs",
    "azure_core_amqp",
    "fe2o3_amqp",
    "azure_core",
    "azure_identity",
    "azure_storage_blob",
];

fn init_logging(cfg: &ServiceConfig) -> Result<()> {
    let mut level = cfg.logging.level.clone();
    for c in QUIET_CRATES {
        if !level.contains(c) {
            level.push_str(&format!(",{c}=warn"));
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .with_context(|| format!("logging.level `{}`", cfg.logging.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match cfg.logging.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("logging: {e}"))
}

/// The mapping set and, when configured, the GeoIP databases (read now: a missing or
/// unreadable file is an error naming it).
fn load_translator(cfg: &ServiceConfig) -> Result<Translator> {
    let mut t = plain_translator(cfg)?;
    t.map = map_options(cfg)?;
    Ok(t)
}

/// The mapping set with default options (as the golden fixtures were made).
fn plain_translator(cfg: &ServiceConfig) -> Result<Translator> {
    let set = match &cfg.mappings.dir {
        Some(dir) => MappingSet::load_dir(dir)?,
        None => MappingSet::embedded()?,
    };
    Ok(Translator::new(
        set,
        MapOptions::default(),
        Default::default(),
    ))
}

fn map_options(cfg: &ServiceConfig) -> Result<MapOptions> {
    Ok(MapOptions {
        geo: load_geo(cfg.geoip.city.as_deref(), cfg.geoip.asn.as_deref())?,
        geo_leef: cfg.geoip.leef,
        ..MapOptions::default()
    })
}

/// The fixtures a reload must replay: the configured directory, else `./fixtures` if present.
fn fixtures_dir(cfg: &ServiceConfig) -> Option<PathBuf> {
    cfg.mappings
        .fixtures
        .clone()
        .or_else(|| Some(PathBuf::from("fixtures")).filter(|p| p.is_dir()))
}

async fn serve(cfg: ServiceConfig, config_path: Option<PathBuf>) -> Result<ExitCode> {
    if let Some(f) = &cfg.mappings.fixtures {
        anyhow::ensure!(
            f.is_dir(),
            "mappings.fixtures: {} is not a directory",
            f.display()
        );
    }
    let token = secret(
        cfg.http.bearer_token_env.as_deref(),
        cfg.http.bearer_token_file.as_deref(),
        "http.bearer_token",
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", config_name(&config_path)))?;
    let tls = match (&cfg.http.tls_cert, &cfg.http.tls_key) {
        (Some(cert), Some(key)) => Some(
            crate::inputs::tls::acceptor(cert, key)
                .map_err(|e| anyhow::anyhow!("{}: {e}", config_name(&config_path)))?,
        ),
        _ => None,
    };
    let translator = load_translator(&cfg).with_context(|| config_name(&config_path))?;
    crate::pipeline::check_routes(&cfg, &translator.mappings)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config_name(&config_path)))?;
    prepare_clusters(&cfg, &translator.mappings).await;
    let outputs =
        start_outputs(&cfg).map_err(|e| anyhow::anyhow!("{}: {e}", config_name(&config_path)))?;
    let mut pipeline = Pipeline::new(translator, outputs);
    pipeline.max_output_bytes = cfg.max_payload_output_bytes;
    let pipeline = Arc::new(pipeline);
    let state = Arc::new(HttpState::new(
        pipeline.clone(),
        token,
        BodyLimits {
            max_bytes: cfg.http.max_body_bytes,
            timeout: Duration::from_secs(cfg.http.body_timeout_seconds),
            max_inflight_bytes: cfg.http.max_inflight_body_bytes,
        },
    ));
    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .with_context(|| {
            format!(
                "{}: http.listen `{}`",
                config_name(&config_path),
                cfg.http.listen
            )
        })?;
    warn_about_exposure(&cfg, &listener, tls.is_some());
    let limits = ConnectionLimits {
        max_connections: connection_cap(cfg.http.max_connections),
        header_timeout: Duration::from_secs(cfg.http.header_timeout_seconds),
    };
    tracing::info!(
        listen = %cfg.http.listen,
        config = %config_name(&config_path),
        outputs = cfg.outputs.len(),
        mappings = %pipeline.translator().mappings.version(),
        max_connections = limits.max_connections,
        "defender-dsm serving"
    );
    let reloader = tokio::spawn(reload_loop(pipeline.clone(), cfg.clone()));
    let (stop_pollers, stop) = tokio::sync::watch::channel(false);
    let mut pollers =
        start_pollers(&cfg, &pipeline, &stop).with_context(|| config_name(&config_path))?;
    pollers.extend(super::streams::start_kafka(&cfg, &pipeline, &stop)?);
    pollers.extend(super::streams::start_eventhubs(&cfg, &pipeline, &stop)?);
    crate::inputs::server::serve(
        listener,
        tls,
        router(state.clone()),
        ops_router(state.clone()),
        limits,
        shutdown_signal(),
        Duration::from_secs(cfg.shutdown_grace_seconds),
    )
    .await;
    drop(state);
    reloader.abort();
    let _ = reloader.await;
    // Pollers finish the page they are on (its cursor saved), consumers the message they are on
    // (its offset committed), within the grace period.
    let _ = stop_pollers.send(true);
    let grace = Duration::from_secs(cfg.shutdown_grace_seconds);
    for mut p in pollers {
        if tokio::time::timeout(grace, &mut p).await.is_err() {
            tracing::warn!("an input did not stop within the grace period; stopped");
            p.abort();
            let _ = p.await;
        }
    }
    tracing::info!(
        grace_seconds = cfg.shutdown_grace_seconds,
        "stopped accepting; draining outputs"
    );
    let Ok(pipeline) = Arc::try_unwrap(pipeline) else {
        tracing::error!("requests still hold the pipeline; exiting without draining");
        return Ok(ExitCode::from(1));
    };
    match tokio::time::timeout(grace, pipeline.close()).await {
        Ok(reports) => {
            for r in reports {
                tracing::info!(output = %r.name, report = %r.line(), "output closed");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(_) => {
            tracing::warn!("grace period over; what was not sent stays in the spools");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn config_name(path: &Option<PathBuf>) -> String {
    path.as_deref()
        .map_or("(embedded defaults)".into(), |p| p.display().to_string())
}

/// Ingest in plain HTTP on an address other hosts reach, and `/metrics` answering anyone there,
/// are allowed but said at start.
fn warn_about_exposure(cfg: &ServiceConfig, listener: &tokio::net::TcpListener, tls: bool) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    if addr.ip().is_loopback() {
        return;
    }
    if !tls {
        tracing::warn!(listen = %addr, "ingest is plain HTTP on an address other hosts reach: set http.tls_cert and http.tls_key, or listen on loopback behind a TLS proxy");
    }
    if cfg.http.bearer_token_env.is_none() && cfg.http.bearer_token_file.is_none() {
        tracing::warn!(listen = %addr, "POST /v1/ingest takes events from anyone who reaches it: set http.bearer_token_env or http.bearer_token_file");
    }
    tracing::warn!(listen = %addr, "/metrics and /readyz answer without a token on an address other hosts reach (output names, spool sizes, reasons)");
}

/// `max_connections`, lowered (with a warning) so that the connections, the few past the cap
/// and the service's own files stay within the process's limit of open files.
fn connection_cap(max_connections: usize) -> usize {
    const OWN_FILES: usize = 256;
    let soft_limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse::<usize>().ok())
        });
    match soft_limit {
        Some(limit) if max_connections + OPS_CONNECTIONS + OWN_FILES > limit => {
            let cap = limit.saturating_sub(OPS_CONNECTIONS + OWN_FILES).max(1);
            tracing::warn!(
                max_connections,
                open_files_limit = limit,
                cap,
                "http.max_connections lowered to fit the process's limit of open files (ulimit -n)"
            );
            cap
        }
        _ => max_connections,
    }
}

/// Bulk outputs with `setup = true` get their templates and lifecycle policy; those writing
/// into Elastic's integration have its templates checked. Problems are logged, not fatal: the
/// outputs spool or dead-letter what the cluster refuses.
async fn prepare_clusters(cfg: &ServiceConfig, set: &MappingSet) {
    for o in cfg.outputs.iter().filter(|o| o.kind == OutputKind::Bulk) {
        let (setup, integration) = (
            o.setup.unwrap_or(false),
            o.elastic_integration.unwrap_or(false),
        );
        if !setup && !integration {
            continue;
        }
        let url = o.url.as_deref().unwrap_or_default();
        let client = bulk_auth(o)
            .map_err(|e| format!("outputs ({}): {e}", o.name))
            .and_then(|auth| {
                ElasticSetup::new(url, auth, o.ca.as_deref()).map_err(|e| e.to_string())
            });
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(output = %o.name, error = %e, "cluster setup");
                continue;
            }
        };
        if setup {
            let retention = o.retention_days.unwrap_or(7);
            let plain = o.plain_indices.unwrap_or(false);
            let observed = match super::replay::observed_types(fixtures_dir(cfg).as_deref()) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "fixtures for field types");
                    Default::default()
                }
            };
            match client.run(set, retention, !plain, &observed).await {
                Ok(report) => {
                    tracing::info!(output = %o.name, cluster = %report.distribution, changes = ?report.lines, "index templates and lifecycle");
                    if let Some(why) = report.lifecycle_missing {
                        tracing::warn!(output = %o.name, "{why}");
                    }
                }
                Err(e) => tracing::error!(output = %o.name, error = %e, "cluster setup"),
            }
        }
        if integration {
            match client.missing_integration_templates().await {
                Ok(missing) if missing.is_empty() => {}
                Ok(missing) => {
                    tracing::warn!(output = %o.name, ?missing, "Elastic's m365_defender integration is not installed (its templates are missing): install it in Kibana (docs/elastic.md) or drop elastic_integration")
                }
                Err(e) => {
                    tracing::error!(output = %o.name, error = %e, "checking the integration's templates")
                }
            }
        }
    }
}

/// An app registration signing in with its client secret (from the environment or a file):
/// the HTTP client its requests go through, and its token provider.
pub(super) fn client_secret_app(
    (secret_env, secret_file): (Option<&str>, Option<&Path>),
    what: &str,
    (authority, tenant_id, client_id): (&str, &str, &str),
) -> Result<(reqwest::Client, Arc<TokenProvider>)> {
    let secret = secret(secret_env, secret_file, what)
        .map_err(anyhow::Error::msg)?
        .unwrap_or_default();
    crate::output::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .connect_timeout(Duration::from_secs(15))
        .build()
        .context("HTTP client")?;
    let tokens = TokenProvider::new(http.clone(), authority, tenant_id, client_id, secret);
    Ok((http, Arc::new(tokens)))
}

/// One task per tenant and feed.
fn start_pollers(
    cfg: &ServiceConfig,
    pipeline: &Arc<Pipeline>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for t in &cfg.tenants {
        let (http, tokens) = client_secret_app(
            (
                t.client_secret_env.as_deref(),
                t.client_secret_file.as_deref(),
            ),
            &format!("tenants ({}).client_secret", t.name),
            (&t.authority, &t.tenant_id, &t.client_id),
        )?;
        let api = Arc::new(ApiClient {
            http,
            tokens,
            budget: Arc::new(Budget::per_minute(t.requests_per_minute)),
            attempts: t.attempts,
        });
        let settings = TenantSettings {
            name: t.name.clone(),
            tenant_id: t.tenant_id.clone(),
            graph_url: t.graph_url.trim_end_matches('/').to_string(),
            mde_url: t.mde_url.trim_end_matches('/').to_string(),
            siem_url: t.siem_url.trim_end_matches('/').to_string(),
            interval: Duration::from_secs(t.interval_seconds),
            overlap: Duration::from_secs(t.overlap_seconds),
            lookback: Duration::from_secs(t.lookback_hours * 3600),
            full_sync_interval: Duration::from_secs(t.full_sync_hours * 3600),
            graph_alerts_top: t.graph_alerts_top,
            incidents_top: t.incidents_top,
            mde_top: t.mde_top,
            stale_after: Duration::from_secs(t.stale_after_seconds),
        };
        for feed in FeedKind::ALL
            .into_iter()
            .filter(|k| t.feeds.iter().any(|f| f == k.as_str()))
        {
            let poller = Poller {
                tenant: settings.clone(),
                feed,
                api: api.clone(),
                pipeline: pipeline.clone(),
                cursors: cfg.data_dir.join("cursors"),
            };
            tracing::info!(tenant = %t.name, feed = feed.as_str(), "polling");
            tasks.push(tokio::spawn(poller.run(stop.clone())));
        }
    }
    Ok(tasks)
}

async fn shutdown_signal() {
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutdown requested");
}

/// Reloads on SIGHUP, and when a file under the mappings directory changes.
async fn reload_loop(pipeline: Arc<Pipeline>, cfg: ServiceConfig) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("SIGHUP cannot be handled; reload by file change only");
        return;
    };
    // The mapping files, and the GeoIP databases (replaced by their updater).
    let mut watched: Vec<PathBuf> = cfg
        .mappings
        .dir
        .clone()
        .filter(|_| cfg.mappings.watch)
        .into_iter()
        .collect();
    watched.extend(cfg.geoip.city.clone());
    watched.extend(cfg.geoip.asn.clone());
    let snapshot =
        |paths: &[PathBuf]| -> Vec<_> { paths.iter().flat_map(|p| fingerprint(p)).collect() };
    let mut seen = snapshot(&watched);
    let mut tick = tokio::time::interval(Duration::from_secs(
        cfg.mappings.watch_interval_seconds.max(1),
    ));
    loop {
        tokio::select! {
            _ = hup.recv() => {}
            _ = tick.tick() => {
                if watched.is_empty() {
                    continue;
                }
                let now = snapshot(&watched);
                if seen == now {
                    continue;
                }
                seen = now;
            }
        }
        let cfg2 = cfg.clone();
        let outcome = tokio::task::spawn_blocking(move || candidate(&cfg2)).await;
        match outcome {
            Ok(Ok(t)) => {
                let version = t.mappings.version().to_string();
                pipeline.replace_translator(t);
                pipeline
                    .telemetry
                    .add("dsm_mapping_reloads_total", &[("result", "applied")], 1);
                tracing::info!(%version, "mappings reloaded");
            }
            Ok(Err(e)) => {
                pipeline
                    .telemetry
                    .add("dsm_mapping_reloads_total", &[("result", "rejected")], 1);
                tracing::error!(reason = %format!("{e:#}"), "mapping reload rejected; the running set stays");
            }
            Err(e) => tracing::error!(%e, "mapping reload failed"),
        }
    }
}

/// A new translator, if the mappings compile, the GeoIP databases read, and every fixture
/// replays unchanged (without enrichment, as the fixtures were made).
fn candidate(cfg: &ServiceConfig) -> Result<Translator> {
    let mut t = plain_translator(cfg)?;
    match fixtures_dir(cfg) {
        Some(dir) => {
            let cases = find_cases(&dir)?;
            let (problems, _) = compare_all(&t, &cases, false)?;
            if !problems.is_empty() {
                anyhow::bail!(
                    "{} fixture problems, first: {}",
                    problems.len(),
                    problems[0]
                );
            }
        }
        None => tracing::warn!("no fixtures to replay: the new mappings were only compiled"),
    }
    t.map = map_options(cfg)?;
    Ok(t)
}

/// Names, sizes and modification times of the files under `dir` (or of the file `dir`).
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut out = Vec::new();
    if let Ok(m) = std::fs::metadata(dir) {
        if m.is_file() {
            out.push((
                dir.to_path_buf(),
                m.len(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ));
            return out;
        }
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) => out.push((p, m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH))),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}
