//! `translate --syslog URL`: the LEEF events sent to syslog receivers instead of stdout.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::format::{render_leef_within, Fit, RenderOptions};
use crate::mapping::MappedEvent;
use crate::output::spool::{Spool, SpoolError};
use crate::output::syslog::{Framing, SyslogOutput, SyslogTarget, TlsSettings};
use crate::output::OutputError;

#[derive(Clone, Copy, ValueEnum)]
pub enum FullPolicy {
    Block,
    DropOldest,
}

#[derive(Clone, Copy, ValueEnum)]
enum FramingArg {
    Lf,
    OctetCounting,
}

/// Where LEEF events go when not to stdout.
#[derive(Args, Clone)]
pub struct SyslogArgs {
    /// Send the LEEF events to a syslog receiver: udp://, tcp:// or tls://host:port. Repeat for
    /// several receivers (each gets every event).
    #[arg(long = "syslog", value_name = "URL")]
    targets: Vec<String>,
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
    /// Keep events in a durable spool in this directory (one per receiver) until each receiver
    /// has them: a receiver that is down does not fail the run, its events wait here and go
    /// first, in order, on the next run.
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
    /// Largest spool per receiver, in bytes of events not yet delivered.
    #[arg(long, default_value_t = 1 << 30)]
    spool_max_bytes: u64,
    /// A full spool: block (drain, else stop the run without accepting more; the default,
    /// nothing is lost) or drop-oldest (make room by giving up the oldest events, counted).
    #[arg(long, value_enum, default_value = "block")]
    spool_full: FullPolicy,
    /// Reconnects (with backoff) before a receiver counts as down for this run.
    #[arg(long, default_value_t = 5)]
    syslog_retries: u32,
}

impl SyslogArgs {
    pub fn enabled(&self) -> bool {
        !self.targets.is_empty()
    }

    fn targets(&self) -> Result<Vec<SyslogTarget>> {
        self.targets
            .iter()
            .map(|url| {
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
            })
            .collect()
    }
}

/// The LEEF events of one input, rendered for the smallest limit of the receivers.
#[derive(Default)]
pub struct Frames {
    events: Vec<Vec<u8>>,
    pub trimmed: u64,
    pub too_large: u64,
}

impl Frames {
    pub fn add(&mut self, ev: &MappedEvent, render: &RenderOptions, max: usize) {
        let mut out = Vec::new();
        match render_leef_within(ev, render, max, &mut out) {
            Fit::Whole => self.events.push(out),
            Fit::Trimmed(_) => {
                self.trimmed += 1;
                self.events.push(out);
            }
            Fit::TooLarge => self.too_large += 1,
        }
    }
}

/// One receiver: its connection (none while it is down) and, with `--spool-dir`, its spool.
struct Receiver {
    target: SyslogTarget,
    name: String,
    conn: Option<SyslogOutput>,
    spool: Option<Spool>,
    sent: u64,
    reconnects: u64,
    /// Why the receiver is unreachable, while it is.
    down: Option<String>,
}

impl Receiver {
    async fn connected(&mut self) -> Result<&mut SyslogOutput, OutputError> {
        if self.conn.is_none() {
            self.conn = Some(SyslogOutput::connect(self.target.clone()).await?);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| OutputError::Config("no connection".into()))
    }

    /// Takes the connection away, keeping its counts.
    fn take_connection(&mut self) -> Option<SyslogOutput> {
        let c = self.conn.take()?;
        self.sent += c.sent;
        self.reconnects += c.reconnects;
        Some(c)
    }

    /// Puts one event in the spool. When it is full: `block` drains first and, if the receiver
    /// still cannot take events, stops the run without accepting more (what is spooled stays);
    /// `drop-oldest` gives up the oldest waiting events, counted.
    async fn spool_one(&mut self, ev: &[u8], policy: FullPolicy) -> Result<()> {
        for attempt in 0..2 {
            let Some(spool) = self.spool.as_mut() else {
                return Ok(());
            };
            match spool.append(ev) {
                Ok(_) => return Ok(()),
                Err(SpoolError::Full { .. }) => match policy {
                    FullPolicy::DropOldest => {
                        spool.drop_oldest(1)?;
                    }
                    FullPolicy::Block if attempt == 0 => {
                        spool.sync()?;
                        self.drain().await?;
                    }
                    FullPolicy::Block => {
                        anyhow::bail!(
                            "the spool for {} is full and the receiver is down ({}); events already spooled are kept, the rest of this input was not accepted",
                            self.name,
                            self.down.as_deref().unwrap_or("not taking events")
                        )
                    }
                },
                Err(e) => return Err(e.into()),
            }
        }
        let Some(spool) = self.spool.as_mut() else {
            return Ok(());
        };
        spool.append(ev)?;
        Ok(())
    }

    /// Sends spooled events in order, acknowledging each batch once it is written; stops at
    /// the first failure, leaving the rest spooled.
    async fn drain(&mut self) -> Result<()> {
        loop {
            let Some(spool) = self.spool.as_mut() else {
                return Ok(());
            };
            let batch = spool.peek(1000)?;
            let Some(&(last, _)) = batch.last() else {
                self.down = None;
                return Ok(());
            };
            let sent = async {
                let out = self.connected().await?;
                for (_, ev) in &batch {
                    out.send(ev).await?;
                }
                out.flush().await
            }
            .await;
            if let Err(e) = sent {
                self.take_connection();
                self.down = Some(e.to_string());
                return Ok(());
            }
            if let Some(spool) = self.spool.as_mut() {
                spool.ack(last + 1)?;
            }
        }
    }
}

/// Connections to every receiver, for the whole run.
pub struct Senders {
    receivers: Vec<Receiver>,
    full_policy: FullPolicy,
    runtime: tokio::runtime::Runtime,
    pub max: usize,
}

impl Senders {
    pub fn open(args: &SyslogArgs) -> Result<Senders> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the I/O runtime")?;
        let targets = args.targets()?;
        let max = targets
            .iter()
            .map(|t| t.max_message_size)
            .min()
            .unwrap_or(usize::MAX);
        let mut receivers = Vec::new();
        for t in targets {
            let name = format!("{}:{}", t.host, t.port);
            let spool = match &args.spool_dir {
                Some(dir) => {
                    let sub: String = name
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '.' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    let (spool, recovery) =
                        Spool::open(&dir.join(sub), args.spool_max_bytes, 64 << 20)?;
                    if recovery.pending > 0 || recovery.torn_bytes > 0 || recovery.damaged > 0 {
                        eprintln!(
                            "spool for {name}: {} events waiting from an earlier run ({} bytes of a torn append cut off, {} damaged segments)",
                            recovery.pending, recovery.torn_bytes, recovery.damaged
                        );
                    }
                    Some(spool)
                }
                None => None,
            };
            receivers.push(Receiver {
                target: t,
                name,
                conn: None,
                spool,
                sent: 0,
                reconnects: 0,
                down: None,
            });
        }
        let mut senders = Senders {
            receivers,
            full_policy: args.spool_full,
            runtime,
            max,
        };
        // Without a spool a receiver must be reachable from the start; with one, whatever an
        // earlier run left waiting goes first.
        let receivers = &mut senders.receivers;
        senders.runtime.block_on(async {
            for r in receivers.iter_mut() {
                if r.spool.is_some() {
                    r.drain().await?;
                } else {
                    r.connected().await?;
                }
            }
            Ok::<_, anyhow::Error>(())
        })?;
        Ok(senders)
    }

    /// Hands one input's events to every receiver: spooled (durably) and drained, or sent
    /// directly without a spool.
    pub fn send(&mut self, frames: &Frames) -> Result<()> {
        let policy = self.full_policy;
        let receivers = &mut self.receivers;
        self.runtime.block_on(async {
            for r in receivers.iter_mut() {
                if r.spool.is_some() {
                    for ev in &frames.events {
                        r.spool_one(ev, policy).await?;
                    }
                    if let Some(spool) = r.spool.as_mut() {
                        spool.sync()?;
                    }
                    r.drain().await?;
                } else {
                    let out = r.connected().await?;
                    for ev in &frames.events {
                        out.send(ev).await?;
                    }
                    out.flush().await?;
                }
            }
            Ok(())
        })
    }

    /// Closes every connection and says what each receiver got, and how many events stay
    /// spooled for a later run.
    pub fn close(self) -> Result<(String, u64)> {
        let Senders {
            receivers, runtime, ..
        } = self;
        runtime.block_on(async {
            let mut report = Vec::new();
            let mut waiting = 0;
            for mut r in receivers {
                if r.spool.is_some() {
                    r.drain().await?;
                }
                if let Some(c) = r.take_connection() {
                    c.close().await?;
                }
                let pending = r.spool.as_ref().map_or(0, Spool::pending);
                let dropped = r.spool.as_ref().map_or(0, |s| s.dropped);
                waiting += pending;
                let mut line = format!("{} {} events, {} reconnects", r.name, r.sent, r.reconnects);
                if dropped > 0 {
                    line.push_str(&format!(", {dropped} dropped from a full spool"));
                }
                if pending > 0 {
                    line.push_str(&format!(
                        ", {pending} kept in the spool ({})",
                        r.down.as_deref().unwrap_or("not yet sent")
                    ));
                }
                report.push(line);
            }
            Ok((report.join("; "), waiting))
        })
    }
}
