//! `translate --syslog URL`: the LEEF events sent to syslog receivers instead of stdout.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::format::{render_leef_within, Fit, RenderOptions};
use crate::mapping::MappedEvent;
use crate::output::syslog::{Framing, SyslogOutput, SyslogTarget, TlsSettings};

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

/// Open connections to every receiver, for the whole run.
pub struct Senders {
    outputs: Vec<SyslogOutput>,
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
        let outputs = runtime.block_on(async {
            let mut outputs = Vec::new();
            for t in targets {
                outputs.push(SyslogOutput::connect(t).await?);
            }
            Ok::<_, anyhow::Error>(outputs)
        })?;
        Ok(Senders {
            outputs,
            runtime,
            max,
        })
    }

    pub fn send(&mut self, frames: &Frames) -> Result<()> {
        let outputs = &mut self.outputs;
        self.runtime.block_on(async {
            for out in outputs.iter_mut() {
                for ev in &frames.events {
                    out.send(ev).await?;
                }
                out.flush().await?;
            }
            Ok(())
        })
    }

    /// Closes every connection and says what each receiver got.
    pub fn close(self) -> Result<String> {
        let Senders {
            outputs, runtime, ..
        } = self;
        runtime.block_on(async {
            let mut report = Vec::new();
            for out in outputs {
                let t = out.target();
                report.push(format!(
                    "{}:{} {} events, {} reconnects",
                    t.host, t.port, out.sent, out.reconnects
                ));
                out.close().await?;
            }
            Ok(report.join("; "))
        })
    }
}
