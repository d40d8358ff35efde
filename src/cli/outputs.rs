//! `--syslog URL` and `--bulk URL`: the outputs of `translate` and `replay-dead-letters`, each
//! run by an [`OutputHandle`] with, under `--data-dir`, its spool and dead letters.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::event::RawRecord;
use crate::format::RenderOptions;
use crate::mapping::MappedEvent;
use crate::output::bulk::{BulkAuth, BulkOutput, BulkTarget};
use crate::output::redact_userinfo;
use crate::output::syslog::{Framing, SyslogTarget, TlsSettings};
use crate::output::worker::{
    Batch, Encoding, Endpoint, FullPolicy, OutputHandle, OutputReport, Pending, SpoolSettings,
};
use crate::output::OutputError;

#[derive(Clone, Copy, ValueEnum)]
enum FullArg {
    Block,
    DropOldest,
}

#[derive(Clone, Copy, ValueEnum)]
enum FramingArg {
    Lf,
    OctetCounting,
}

/// Where events go when not to stdout or a file.
#[derive(Args, Clone)]
pub struct OutputArgs {
    /// Send LEEF events to a syslog receiver: udp://, tcp:// or tls://host:port. Repeat for
    /// several receivers (each gets every event).
    #[arg(long = "syslog", value_name = "URL")]
    syslog: Vec<String>,
    /// Framing on TCP and TLS: a line feed after each event, or RFC 6587 octet counting.
    #[arg(long, value_enum, default_value = "lf")]
    syslog_framing: FramingArg,
    /// Largest event in bytes; longer ones have their longest values cut (see docs/qradar.md).
    /// Default: 65,536 (TCP, TLS), 65,507 (UDP).
    #[arg(long)]
    max_message_size: Option<usize>,
    /// TLS: PEM file of the CA that signed the receiver's certificate.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// TLS: client certificate (PEM), for receivers that ask for one.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS: the client certificate's private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// TLS: name to check the receiver's certificate against (default: the URL's host).
    #[arg(long)]
    tls_server_name: Option<String>,
    /// Without --data-dir: reconnects (with backoff) before a receiver counts as down.
    #[arg(long, default_value_t = 5)]
    syslog_retries: u32,

    /// Send ECS documents to Elasticsearch or OpenSearch (`_bulk`): http(s)://host:port.
    /// Repeat for several clusters.
    #[arg(long = "bulk", value_name = "URL")]
    bulk: Vec<String>,
    /// Data stream namespace: documents go to logs-<dataset>-<namespace>.
    #[arg(long, default_value = "default")]
    bulk_namespace: String,
    #[command(flatten)]
    bulk_auth: BulkAuthArgs,
    /// PEM file of the CA that signed the cluster's certificate (default: the system's roots).
    #[arg(long)]
    bulk_ca: Option<PathBuf>,
    /// Events per `_bulk` request, at most.
    #[arg(long, default_value_t = 1000)]
    bulk_max_docs: usize,
    /// Bytes per `_bulk` request before compression, at most.
    #[arg(long, default_value_t = 5 << 20)]
    bulk_max_bytes: usize,
    /// Send requests uncompressed (default: gzip).
    #[arg(long)]
    bulk_no_gzip: bool,
    /// Sends of a request (or of its items answered 429/5xx) before the cluster counts as down.
    #[arg(long, default_value_t = 5)]
    bulk_retries: u32,
    /// `pipeline=` on each request (`_none` skips the index's default ingest pipeline).
    #[arg(long)]
    bulk_pipeline: Option<String>,

    /// Keep each output's spool (events not yet delivered, durable, drained in order on the
    /// next run) and dead letters (events refused for good) under this directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Largest spool per output, in bytes of events not yet delivered.
    #[arg(long, default_value_t = 1 << 30)]
    spool_max_bytes: u64,
    /// A full spool: block (drain, else stop without accepting more; the default, nothing is
    /// lost) or drop-oldest (make room by giving up the oldest events, counted).
    #[arg(long, value_enum, default_value = "block")]
    spool_full: FullArg,
}

/// How a bulk output (or `setup elastic`) proves who it is; secrets better from the environment,
/// which other users cannot read in the process list.
#[derive(Args, Clone)]
pub struct BulkAuthArgs {
    /// Basic authentication user (the password from DEFENDER_DSM_BULK_PASSWORD).
    #[arg(long, env = "DEFENDER_DSM_BULK_USER")]
    bulk_user: Option<String>,
    #[arg(
        long,
        env = "DEFENDER_DSM_BULK_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    bulk_password: Option<String>,
    /// API key authentication: the base64 id:key (better from DEFENDER_DSM_BULK_API_KEY).
    #[arg(long, env = "DEFENDER_DSM_BULK_API_KEY", hide_env_values = true)]
    bulk_api_key: Option<String>,
    /// Bearer token authentication (better from DEFENDER_DSM_BULK_TOKEN).
    #[arg(long, env = "DEFENDER_DSM_BULK_TOKEN", hide_env_values = true)]
    bulk_token: Option<String>,
}

impl BulkAuthArgs {
    pub fn auth(&self) -> Result<BulkAuth> {
        Ok(
            match (
                &self.bulk_user,
                &self.bulk_password,
                &self.bulk_api_key,
                &self.bulk_token,
            ) {
                (None, None, None, None) => BulkAuth::None,
                (Some(user), Some(password), None, None) => BulkAuth::Basic {
                    user: user.clone(),
                    password: password.clone(),
                },
                (Some(_), None, None, None) => {
                    anyhow::bail!("--bulk-user: set the password in DEFENDER_DSM_BULK_PASSWORD")
                }
                (None, None, Some(key), None) => BulkAuth::ApiKey(key.clone()),
                (None, None, None, Some(token)) => BulkAuth::Bearer(token.clone()),
                _ => anyhow::bail!("give one of user and password, an API key or a bearer token"),
            },
        )
    }
}

/// Events encoded per output before they are handed over.
const CHUNK: usize = 1000;
/// Chunks waiting in an output's queue, at most.
const QUEUE: usize = 4;

impl OutputArgs {
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    pub fn enabled(&self) -> bool {
        !self.syslog.is_empty() || !self.bulk.is_empty()
    }

    fn syslog_target(&self, url: &str) -> Result<SyslogTarget, OutputError> {
        let mut t = SyslogTarget::parse(url)?;
        t.framing = match self.syslog_framing {
            FramingArg::Lf => Framing::Lf,
            FramingArg::OctetCounting => Framing::OctetCounting,
        };
        if let Some(m) = self.max_message_size {
            t.max_message_size = m;
        }
        t.retries = self.syslog_retries;
        t.tls = TlsSettings {
            ca_file: self.tls_ca.clone(),
            client_cert: self.tls_cert.clone(),
            client_key: self.tls_key.clone(),
            server_name: self.tls_server_name.clone(),
        };
        Ok(t)
    }

    fn bulk_target(&self, url: &str) -> Result<BulkTarget> {
        let mut t = BulkTarget::new(url)?;
        t.auth = self.bulk_auth.auth()?;
        if !self
            .bulk_namespace
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
            || self.bulk_namespace.is_empty()
        {
            anyhow::bail!(
                "--bulk-namespace `{}`: a data stream namespace is lower-case letters, digits, `_` and `.`",
                self.bulk_namespace
            );
        }
        t.namespace = self.bulk_namespace.clone();
        t.ca_file = self.bulk_ca.clone();
        t.max_docs = self.bulk_max_docs.max(1);
        t.max_bytes = self.bulk_max_bytes;
        t.gzip = !self.bulk_no_gzip;
        t.retries = self.bulk_retries;
        t.pipeline = self.bulk_pipeline.clone();
        Ok(t)
    }
}

/// Every output of a run, on a runtime of their own, fed from the CLI's thread.
pub struct Outputs {
    runtime: tokio::runtime::Runtime,
    handles: Vec<OutputHandle>,
    batches: Vec<Batch>,
    waiting: Vec<Pending>,
    render: RenderOptions,
    mapping_version: String,
}

impl Outputs {
    pub fn open(args: &OutputArgs, render: RenderOptions, mapping_version: &str) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the I/O runtime")?;
        let mut endpoints = Vec::new();
        for url in &args.syslog {
            let t = args.syslog_target(url)?;
            let enc = Encoding::Leef {
                max: t.max_message_size,
            };
            endpoints.push((redact_userinfo(url).into_owned(), enc, Endpoint::Syslog(t)));
        }
        for url in &args.bulk {
            let t = args.bulk_target(url)?;
            let enc = Encoding::Bulk {
                namespace: t.namespace.clone(),
            };
            let out = BulkOutput::new(t)?;
            endpoints.push((
                redact_userinfo(url).into_owned(),
                enc,
                Endpoint::Bulk(Box::new(out)),
            ));
        }
        let mut handles = Vec::new();
        let _guard = runtime.enter();
        for (name, enc, endpoint) in endpoints {
            let full = match args.spool_full {
                FullArg::Block => FullPolicy::Block,
                FullArg::DropOldest => FullPolicy::DropOldest,
            };
            let spool = args
                .data_dir
                .as_ref()
                .map(|d| SpoolSettings::in_data_dir(d, &name, args.spool_max_bytes, full));
            let dead = args.data_dir.as_ref().map(|d| d.join("dead-letters"));
            let (handle, recovered) =
                OutputHandle::start(name.clone(), enc, endpoint, spool, dead, QUEUE)?;
            if let Some(n) = recovered.filter(|&n| n > 0) {
                eprintln!("spool for {name}: {n} events waiting from an earlier run go first");
            }
            handles.push(handle);
        }
        let batches = handles.iter().map(|_| Batch::default()).collect();
        Ok(Outputs {
            runtime,
            handles,
            batches,
            waiting: Vec::new(),
            render,
            mapping_version: mapping_version.to_string(),
        })
    }

    /// Names of the outputs, as dead letters record them.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handles.iter().map(|h| h.name.as_str())
    }

    /// Encodes one event for every output (or those `only` names) and hands full chunks over.
    pub fn add(&mut self, ev: &MappedEvent, rec: &RawRecord, only: Option<&str>) {
        for (h, batch) in self.handles.iter().zip(self.batches.iter_mut()) {
            if only.is_some_and(|o| o != h.name) {
                continue;
            }
            batch.add(&h.encoding, ev, rec, &self.render, &self.mapping_version);
            if batch.len() >= CHUNK {
                self.waiting.push(h.submit_blocking(std::mem::take(batch)));
            }
        }
    }

    /// Hands over what is left and waits until every output has every event added so far sent
    /// or spooled: the point at which an input counts as taken.
    pub fn commit(&mut self) -> Result<()> {
        for (h, batch) in self.handles.iter().zip(self.batches.iter_mut()) {
            if !batch.is_empty() {
                self.waiting.push(h.submit_blocking(std::mem::take(batch)));
            }
        }
        let mut first_error = None;
        for p in self.waiting.drain(..) {
            if let Err(e) = p.wait_blocking() {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(anyhow::anyhow!(e)),
            None => Ok(()),
        }
    }

    /// Drains what the endpoints take and reports per output.
    pub fn close(self) -> Vec<OutputReport> {
        let Outputs {
            runtime, handles, ..
        } = self;
        runtime.block_on(async {
            let mut reports = Vec::new();
            for h in handles {
                reports.push(h.close().await);
            }
            reports
        })
    }
}
