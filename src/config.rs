//! The service's configuration (`serve --config FILE`, TOML), documented key by key in
//! `docs/configuration.md`. Every key has an embedded default, so `serve` runs without a file:
//! HTTP ingest on 127.0.0.1:8080, the bundled mappings, LEEF and ECS files under `./data/out/`
//! and the spools under `./data/`. Unknown keys and bad values are errors that name the key.
//! Secrets (the ingest token, cluster credentials) come from environment variables or files.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod streams;
pub use streams::{EntraCredential, EventHubsConfig, KafkaConfig, StartAt};

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Spools and dead letters live here, one directory per output.
    pub data_dir: PathBuf,
    /// How long shutdown may take to drain queued events to their outputs or spools.
    pub shutdown_grace_seconds: u64,
    /// Most bytes of events one payload (a request body, a page, a message) may become, over
    /// all outputs: the records past it are refused (HTTP 413).
    pub max_payload_output_bytes: usize,
    pub http: HttpConfig,
    pub mappings: MappingsConfig,
    pub logging: LoggingConfig,
    pub outputs: Vec<OutputConfig>,
    /// Tenants whose Microsoft APIs are polled.
    pub tenants: Vec<TenantConfig>,
    /// Event Hubs (Streaming API) consumed through the Kafka endpoint.
    pub kafka: Vec<KafkaConfig>,
    /// Event Hubs (Streaming API) consumed over AMQP, with blob checkpoints.
    pub eventhubs: Vec<EventHubsConfig>,
    pub geoip: GeoIpConfig,
}

/// GeoIP and ASN enrichment of the addresses the mappings mark with `<geo>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoIpConfig {
    /// MaxMind City (or Country) database (`.mmdb`): ECS `*.geo.*`.
    pub city: Option<PathBuf>,
    /// MaxMind ASN database (`.mmdb`): ECS `*.as.*`.
    pub asn: Option<PathBuf>,
    /// Also LEEF keys with each address's country (`srcCountry`, `dstCountry` ...).
    pub leef: bool,
}

/// One tenant polled through its Entra app registration (client credentials).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// A short name: cursors, metrics and logs use it.
    pub name: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// Sign-in authority (`https://login.microsoftonline.us` for US Government clouds).
    #[serde(default = "default_authority")]
    pub authority: String,
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// Defender for Endpoint API base (regional: `https://eu.api.security.microsoft.com` ...).
    #[serde(default = "default_mde_url")]
    pub mde_url: String,
    /// Legacy SIEM API host (regional alert exporter).
    #[serde(default = "default_siem_url")]
    pub siem_url: String,
    /// Which feeds to poll: graph-alerts, graph-incidents, mde-alerts, mde-vulnerabilities,
    /// siem-alerts.
    #[serde(default = "default_feeds")]
    pub feeds: Vec<String>,
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    #[serde(default = "default_overlap")]
    pub overlap_seconds: u64,
    #[serde(default = "default_lookback")]
    pub lookback_hours: u64,
    #[serde(default = "default_full_sync")]
    pub full_sync_hours: u64,
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
    #[serde(default = "default_stale")]
    pub stale_after_seconds: u64,
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_alerts_top")]
    pub graph_alerts_top: u32,
    #[serde(default = "default_incidents_top")]
    pub incidents_top: u32,
    #[serde(default = "default_mde_top")]
    pub mde_top: u32,
}

pub(crate) fn default_authority() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_graph_url() -> String {
    "https://graph.microsoft.com".into()
}
fn default_mde_url() -> String {
    "https://api.security.microsoft.com".into()
}
fn default_siem_url() -> String {
    "https://wdatp-alertexporter-eu.windows.com".into()
}
fn default_feeds() -> Vec<String> {
    vec!["graph-alerts".into(), "graph-incidents".into()]
}
fn default_interval() -> u64 {
    60
}
fn default_overlap() -> u64 {
    300
}
fn default_lookback() -> u64 {
    24
}
fn default_full_sync() -> u64 {
    24
}
fn default_rpm() -> u32 {
    150
}
fn default_stale() -> u64 {
    3600
}
fn default_attempts() -> u32 {
    8
}
fn default_alerts_top() -> u32 {
    2000
}
fn default_incidents_top() -> u32 {
    50
}
fn default_mde_top() -> u32 {
    10_000
}

impl Default for ServiceConfig {
    fn default() -> Self {
        let file = |name: &str, path: &str, format: FileFormat| OutputConfig {
            name: name.into(),
            kind: OutputKind::File,
            path: Some(PathBuf::from(path)),
            format: Some(format),
            ..OutputConfig::default()
        };
        ServiceConfig {
            data_dir: PathBuf::from("./data"),
            shutdown_grace_seconds: 30,
            max_payload_output_bytes: 256 << 20,
            http: HttpConfig::default(),
            mappings: MappingsConfig::default(),
            logging: LoggingConfig::default(),
            outputs: vec![
                file("leef-file", "./data/out/events.leef", FileFormat::Leef),
                file("ecs-file", "./data/out/events.ecs.ndjson", FileFormat::Ecs),
            ],
            tenants: Vec::new(),
            kafka: Vec::new(),
            eventhubs: Vec::new(),
            geoip: GeoIpConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port of the ingest endpoint.
    pub listen: String,
    /// Largest request body, in bytes, after gzip decompression.
    pub max_body_bytes: usize,
    /// Connections served at once (more get 503; a few more still reach health and metrics).
    pub max_connections: usize,
    /// A request's head must arrive within this; also how long a kept-alive connection may
    /// wait for its next request.
    pub header_timeout_seconds: u64,
    /// A request's body must arrive within this (408 otherwise).
    pub body_timeout_seconds: u64,
    /// Bytes of request bodies (received, and decompressed) held at once over all requests;
    /// a request that would pass it gets 503 with `Retry-After`.
    pub max_inflight_body_bytes: usize,
    /// The bearer token `POST /v1/ingest` requires, from this environment variable...
    pub bearer_token_env: Option<String>,
    /// ... or from this file (first line). Neither: no token is required.
    pub bearer_token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain and key (PEM); both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 16 << 20,
            max_connections: 512,
            header_timeout_seconds: 10,
            body_timeout_seconds: 60,
            max_inflight_body_bytes: 256 << 20,
            bearer_token_env: None,
            bearer_token_file: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingsConfig {
    /// A directory of mapping files instead of the bundled set.
    pub dir: Option<PathBuf>,
    /// Golden fixtures a new mapping set must replay cleanly before it replaces the running one.
    pub fixtures: Option<PathBuf>,
    /// Reload when a file in `dir` changes (SIGHUP always reloads).
    pub watch: bool,
    /// How often `dir` is checked for changes, in seconds.
    pub watch_interval_seconds: u64,
}

impl Default for MappingsConfig {
    fn default() -> Self {
        MappingsConfig {
            dir: None,
            fixtures: None,
            watch: true,
            watch_interval_seconds: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `debug`, `defender_dsm=debug,info` ...
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Syslog,
    Bulk,
    #[default]
    File,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Leef,
    Ecs,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FramingConfig {
    Lf,
    OctetCounting,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FullConfig {
    Block,
    DropOldest,
}

/// One output. Which keys apply depends on `type`; a key for another type is an error.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: OutputKind,

    // syslog and bulk
    pub url: Option<String>,
    pub retries: Option<u32>,
    /// Syslog: connecting (TLS handshake included) and each write; bulk: each request.
    pub timeout_seconds: Option<u64>,
    pub spool_max_bytes: Option<u64>,
    /// Size of one spool file: delivered events leave the disk a file at a time.
    pub spool_segment_bytes: Option<u64>,
    pub spool_full: Option<FullConfig>,

    // syslog
    pub framing: Option<FramingConfig>,
    pub max_message_size: Option<usize>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_server_name: Option<String>,

    // bulk
    pub namespace: Option<String>,
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub max_docs: Option<usize>,
    pub max_bytes: Option<usize>,
    pub gzip: Option<bool>,
    pub pipeline: Option<String>,
    /// Create or update the index templates and lifecycle policy at start (`setup elastic`).
    pub setup: Option<bool>,
    /// Days the lifecycle policy keeps data (with `setup`).
    pub retention_days: Option<u32>,
    /// Plain indices instead of data streams (with `setup`).
    pub plain_indices: Option<bool>,
    /// Write into Elastic's `m365_defender` integration: its templates must be installed, and
    /// documents skip its ingest pipeline (`pipeline=_none`).
    pub elastic_integration: Option<bool>,

    // file
    pub path: Option<PathBuf>,
    pub format: Option<FileFormat>,
    pub rotate_bytes: Option<u64>,
    pub keep_files: Option<u32>,

    // routing, any type
    #[serde(default)]
    pub include_families: Vec<String>,
    #[serde(default)]
    pub exclude_families: Vec<String>,
    #[serde(default)]
    pub include_categories: Vec<String>,
    #[serde(default)]
    pub exclude_categories: Vec<String>,
    #[serde(default)]
    pub include_actions: Vec<String>,
    #[serde(default)]
    pub exclude_actions: Vec<String>,
    #[serde(default)]
    pub drop_fields: Vec<String>,
}

impl ServiceConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<ServiceConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<ServiceConfig, ConfigError> {
        let err = |message: String| ConfigError {
            file: file.to_string(),
            message,
        };
        let cfg: ServiceConfig = toml::from_str(text).map_err(|e| err(toml_error(text, &e)))?;
        cfg.check().map_err(err)?;
        Ok(cfg)
    }

    /// What the types cannot say: keys that apply to another output type, missing keys, names.
    fn check(&self) -> Result<(), String> {
        if self.http.bearer_token_env.is_some() && self.http.bearer_token_file.is_some() {
            return Err("http: give bearer_token_env or bearer_token_file, not both".into());
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return Err("http: tls_cert and tls_key go together".into());
        }
        let h = &self.http;
        for (key, value) in [
            ("max_body_bytes", h.max_body_bytes as u64),
            ("max_connections", h.max_connections as u64),
            ("header_timeout_seconds", h.header_timeout_seconds),
            ("body_timeout_seconds", h.body_timeout_seconds),
            ("max_inflight_body_bytes", h.max_inflight_body_bytes as u64),
        ] {
            if value == 0 {
                return Err(format!("http.{key}: must be above 0"));
            }
        }
        if h.max_inflight_body_bytes < h.max_body_bytes {
            return Err(format!(
                "http.max_inflight_body_bytes ({}) is smaller than http.max_body_bytes ({}): no body of the largest size could be taken",
                h.max_inflight_body_bytes, h.max_body_bytes
            ));
        }
        if self.outputs.is_empty() {
            return Err("outputs: at least one output is needed".into());
        }
        let mut names = Vec::new();
        for (i, o) in self.outputs.iter().enumerate() {
            let at = format!("outputs[{i}]");
            check_name(&at, &o.name)?;
            if names.contains(&o.name) {
                return Err(format!("{at}.name: `{}` is used twice", o.name));
            }
            names.push(o.name.clone());
            o.check(&format!("{at} ({})", o.name))?;
        }
        streams::check(&self.kafka, &self.eventhubs)?;
        let mut tenants = Vec::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let at = format!("tenants[{i}]");
            check_name(&at, &t.name)?;
            if tenants.contains(&t.name) {
                return Err(format!("{at}.name: `{}` is used twice", t.name));
            }
            tenants.push(t.name.clone());
            if t.client_secret_env.is_some() == t.client_secret_file.is_some() {
                return Err(format!(
                    "{at} ({}): give client_secret_env or client_secret_file",
                    t.name
                ));
            }
            for f in &t.feeds {
                if !crate::inputs::poller::FeedKind::ALL
                    .iter()
                    .any(|k| k.as_str() == f)
                {
                    return Err(format!(
                        "{at} ({}).feeds: `{f}` is not a feed (graph-alerts, graph-incidents, mde-alerts, mde-vulnerabilities, siem-alerts)",
                        t.name
                    ));
                }
            }
            if t.interval_seconds == 0 || t.requests_per_minute == 0 || t.attempts == 0 {
                return Err(format!(
                    "{at} ({}): interval_seconds, requests_per_minute and attempts must be above 0",
                    t.name
                ));
            }
        }
        Ok(())
    }
}

/// Names go into file names, metric labels and logs: letters, digits, `-` and `_`.
fn check_name(at: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{at}.name: `{name}` is not a name (letters, digits, `-`, `_`)"
        ));
    }
    Ok(())
}

impl OutputConfig {
    fn check(&self, at: &str) -> Result<(), String> {
        let set = |present: bool, key: &str, kinds: &[OutputKind]| -> Result<(), String> {
            if present && !kinds.contains(&self.kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                return Err(format!(
                    "{at}.{key}: applies to {} outputs, this one is `{}`",
                    names.join(" and "),
                    self.kind.as_str()
                ));
            }
            Ok(())
        };
        use OutputKind::{Bulk, File, Syslog};
        set(self.url.is_some(), "url", &[Syslog, Bulk])?;
        set(self.retries.is_some(), "retries", &[Syslog, Bulk])?;
        set(
            self.timeout_seconds.is_some(),
            "timeout_seconds",
            &[Syslog, Bulk],
        )?;
        if self.timeout_seconds == Some(0) {
            return Err(format!("{at}.timeout_seconds: must be above 0"));
        }
        set(
            self.spool_max_bytes.is_some(),
            "spool_max_bytes",
            &[Syslog, Bulk],
        )?;
        set(self.spool_full.is_some(), "spool_full", &[Syslog, Bulk])?;
        set(
            self.spool_segment_bytes.is_some(),
            "spool_segment_bytes",
            &[Syslog, Bulk],
        )?;
        if self.spool_segment_bytes.is_some_and(|b| b < 65_536) {
            return Err(format!("{at}.spool_segment_bytes: at least 65536"));
        }
        set(self.framing.is_some(), "framing", &[Syslog])?;
        set(
            self.max_message_size.is_some(),
            "max_message_size",
            &[Syslog],
        )?;
        set(self.tls_ca.is_some(), "tls_ca", &[Syslog])?;
        set(self.tls_cert.is_some(), "tls_cert", &[Syslog])?;
        set(self.tls_key.is_some(), "tls_key", &[Syslog])?;
        set(self.tls_server_name.is_some(), "tls_server_name", &[Syslog])?;
        for (present, key) in [
            (self.namespace.is_some(), "namespace"),
            (self.user.is_some(), "user"),
            (self.password_env.is_some(), "password_env"),
            (self.password_file.is_some(), "password_file"),
            (self.api_key_env.is_some(), "api_key_env"),
            (self.api_key_file.is_some(), "api_key_file"),
            (self.token_env.is_some(), "token_env"),
            (self.token_file.is_some(), "token_file"),
            (self.ca.is_some(), "ca"),
            (self.max_docs.is_some(), "max_docs"),
            (self.max_bytes.is_some(), "max_bytes"),
            (self.gzip.is_some(), "gzip"),
            (self.pipeline.is_some(), "pipeline"),
            (self.setup.is_some(), "setup"),
            (self.retention_days.is_some(), "retention_days"),
            (self.plain_indices.is_some(), "plain_indices"),
            (self.elastic_integration.is_some(), "elastic_integration"),
        ] {
            set(present, key, &[Bulk])?;
        }
        set(self.path.is_some(), "path", &[File])?;
        set(self.format.is_some(), "format", &[File])?;
        set(self.rotate_bytes.is_some(), "rotate_bytes", &[File])?;
        set(self.keep_files.is_some(), "keep_files", &[File])?;
        match self.kind {
            Syslog | Bulk if self.url.is_none() => Err(format!("{at}.url: missing")),
            File if self.path.is_none() => Err(format!("{at}.path: missing")),
            _ => Ok(()),
        }
    }
}

impl OutputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Syslog => "syslog",
            OutputKind::Bulk => "bulk",
            OutputKind::File => "file",
        }
    }
}

/// A secret from an environment variable or a file (its first line); `what` names it in errors,
/// never its value.
pub fn secret(
    env: Option<&str>,
    file: Option<&Path>,
    what: &str,
) -> Result<Option<String>, String> {
    let value = match (env, file) {
        (Some(_), Some(_)) => {
            return Err(format!("{what}: give the _env or the _file key, not both"))
        }
        (Some(var), None) => std::env::var(var)
            .map_err(|_| format!("{what}: environment variable {var} is not set"))?,
        (None, Some(path)) => {
            warn_if_world_readable(path, what);
            std::fs::read_to_string(path)
                .map(|s| s.lines().next().unwrap_or_default().trim().to_string())
                .map_err(|e| format!("{what}: {}: {e}", path.display()))?
        }
        (None, None) => return Ok(None),
    };
    // An empty secret would start a service that refuses everything (or sends no credentials).
    if value.trim().is_empty() {
        let source = match (env, file) {
            (Some(var), _) => format!("environment variable {var}"),
            (_, Some(path)) => path.display().to_string(),
            _ => String::new(),
        };
        return Err(format!("{what}: {source} is empty"));
    }
    Ok(Some(value))
}

/// A file with a secret (or a private key) that every user may read is used, and said.
pub fn warn_if_world_readable(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.is_file() && m.permissions().mode() & 0o004 != 0 {
            tracing::warn!(file = %path.display(), key = what, "a secret file every user of this host may read: chmod o-r it");
        }
    }
}

/// A TOML error with its line and column, without the source line (which may hold a secret
/// someone wrote where it does not belong).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = 1 + before.matches('\n').count();
            let start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = 1 + before.len() - start;
            // The key of that line (never its value).
            let key = text[start..]
                .lines()
                .next()
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty());
            match key {
                Some(key) => format!("line {line}, column {column}, key `{key}`: {message}"),
                None => format!("line {line}, column {column}: {message}"),
            }
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_means_ingest_on_loopback_and_two_local_files() {
        let c = ServiceConfig::parse("", "x.toml").expect("empty is valid");
        assert_eq!(c.http.listen, "127.0.0.1:8080");
        assert_eq!(c.outputs.len(), 2);
        assert!(c.outputs.iter().all(|o| o.kind == OutputKind::File));
    }

    #[test]
    fn the_example_file_is_valid_and_sets_every_output_type() {
        let c = ServiceConfig::parse(
            include_str!("../defender-dsm.example.toml"),
            "defender-dsm.example.toml",
        )
        .expect("the example parses");
        let kinds: Vec<OutputKind> = c.outputs.iter().map(|o| o.kind).collect();
        assert_eq!(
            kinds,
            [OutputKind::Syslog, OutputKind::Bulk, OutputKind::File]
        );
        assert_eq!(c.tenants.len(), 1);
        assert_eq!(c.eventhubs.len(), 1);
        let docker = ServiceConfig::parse(
            include_str!("../docker/defender-dsm.toml"),
            "docker/defender-dsm.toml",
        )
        .expect("the compose stack's config parses");
        assert_eq!(docker.outputs.len(), 3);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = ServiceConfig::parse("[http]\nlisten = \"x\"\nport = 1\n", "a.toml")
            .expect_err("unknown key")
            .to_string();
        assert!(e.starts_with("a.toml: ") && e.contains("port"), "{e}");
        let e = ServiceConfig::parse("[[outputs]]\nname = \"q\"\ntype = \"kafka\"\n", "a.toml")
            .expect_err("bad type")
            .to_string();
        assert!(e.contains("kafka"), "{e}");
        let e = ServiceConfig::parse(
            "[[outputs]]\nname = \"q\"\ntype = \"bulk\"\nurl = \"http://h:9200\"\nframing = \"lf\"\n",
            "a.toml",
        )
        .expect_err("framing on bulk")
        .to_string();
        assert!(
            e.contains("outputs[0] (q).framing: applies to syslog outputs"),
            "{e}"
        );
        let e = ServiceConfig::parse("[[outputs]]\nname = \"q\"\ntype = \"syslog\"\n", "a.toml")
            .expect_err("no url")
            .to_string();
        assert!(e.contains("outputs[0] (q).url: missing"), "{e}");
        let e = ServiceConfig::parse("shutdown_grace_seconds = \"soon\"\n", "a.toml")
            .expect_err("bad value")
            .to_string();
        assert!(e.contains("shutdown_grace_seconds"), "{e}");
    }
}
