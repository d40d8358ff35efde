//! Command-line interface: `serve`, `translate`, `replay`, `check`, `coverage`, `export`,
//! `replay-dead-letters`.

mod coverage;
mod dead_letters;
mod export;
mod outputs;
pub mod replay;
mod serve;
mod setup;
mod streams;
mod translate;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::format::leef::{LeefOptions, LeefVersion};
use crate::format::syslog::{HeaderFormat, SyslogOptions};
use crate::format::RenderOptions;
use crate::mapping::MappingSet;

#[derive(Parser)]
#[command(
    name = "defender-dsm",
    version,
    about = "Microsoft 365 Defender data to QRadar LEEF and Elastic ECS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: HTTP ingest, outputs with spools, metrics, mapping hot reload.
    Serve(serve::ServeArgs),
    /// Translate Defender payloads (files or stdin) to LEEF syslog lines or ECS JSON, one per line.
    Translate(Box<translate::TranslateArgs>),
    /// Replay the golden fixtures and compare byte for byte (or rewrite them with --bless).
    Replay(replay::ReplayArgs),
    /// Load the mapping files and replay the fixtures without writing; report every problem.
    Check(replay::CheckArgs),
    /// Report, per family and event name, input columns and AdditionalFields keys no field
    /// reads and fields that stayed empty.
    Coverage(coverage::CoverageArgs),
    /// Write SIEM content generated from the mapping files (QRadar QIDs, event mappings, properties).
    Export(export::ExportArgs),
    /// Prepare a SIEM for our data (Elasticsearch/OpenSearch templates and retention).
    Setup(setup::SetupArgs),
    /// Translate the dead letters under --data-dir again (after a mapping or index fix) and send
    /// each to the output that refused it.
    ReplayDeadLetters(Box<dead_letters::ReplayDeadLettersArgs>),
}

/// Where the mapping files come from.
#[derive(Args, Clone)]
pub struct MappingArgs {
    /// Mapping directory (every *.xml below it); default: the mappings bundled in the binary.
    #[arg(long, value_name = "DIR")]
    mappings: Option<PathBuf>,
}

impl MappingArgs {
    fn load(&self) -> Result<MappingSet> {
        match &self.mappings {
            Some(dir) => MappingSet::load_dir(dir)
                .with_context(|| format!("loading mappings from {}", dir.display())),
            None => MappingSet::embedded().context("loading the bundled mappings"),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SyslogHeaderArg {
    Rfc3164,
    Rfc5424,
    None,
}

/// How LEEF lines look.
#[derive(Args, Clone)]
pub struct RenderArgs {
    /// LEEF version: 2 (declared delimiter) or 1 (always tab).
    #[arg(long, default_value = "2", value_parser = ["1", "2"])]
    leef_version: String,
    /// LEEF 2.0 attribute delimiter: one character or its hex code (x09 = tab, x5E = ^).
    #[arg(long, default_value = "x09")]
    leef_delimiter: String,
    /// Syslog header in front of each LEEF event.
    #[arg(long, value_enum, default_value = "rfc3164")]
    syslog_header: SyslogHeaderArg,
    /// Syslog header host: the log source identifier QRadar routes on.
    #[arg(long, default_value = crate::format::syslog::APP_NAME)]
    log_source_id: String,
    /// Syslog facility (0-23).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=23))]
    syslog_facility: u8,
}

impl RenderArgs {
    fn options(&self) -> Result<RenderOptions> {
        let delimiter = LeefOptions::parse_delimiter(&self.leef_delimiter)
            .map_err(anyhow::Error::msg)
            .context("--leef-delimiter")?;
        SyslogOptions::check_log_source_id(&self.log_source_id)
            .map_err(anyhow::Error::msg)
            .context("--log-source-id")?;
        Ok(RenderOptions {
            leef: LeefOptions {
                version: if self.leef_version == "1" {
                    LeefVersion::V1
                } else {
                    LeefVersion::V2
                },
                delimiter,
            },
            syslog: SyslogOptions {
                format: match self.syslog_header {
                    SyslogHeaderArg::Rfc3164 => HeaderFormat::Rfc3164,
                    SyslogHeaderArg::Rfc5424 => HeaderFormat::Rfc5424,
                    SyslogHeaderArg::None => HeaderFormat::None,
                },
                facility: self.syslog_facility,
                log_source_id: self.log_source_id.clone(),
            },
        })
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Translate(a) => translate::run(*a),
        Command::Replay(a) => replay::run_replay(a),
        Command::Check(a) => replay::run_check(a),
        Command::Export(a) => export::run(a),
        Command::Coverage(a) => coverage::run(a),
        Command::Setup(a) => setup::run(a),
        Command::ReplayDeadLetters(a) => dead_letters::run(*a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("defender-dsm: {e:#}");
            ExitCode::from(1)
        }
    }
}
