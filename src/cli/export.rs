//! `export qradar`: QRadar content generated from the mapping files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::MappingArgs;
use crate::export::qradar;

#[derive(Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    target: ExportTarget,
}

#[derive(Subcommand)]
enum ExportTarget {
    /// QID records, DSM event mappings and custom properties for QRadar (see docs/qradar.md).
    Qradar(QradarArgs),
}

#[derive(Args)]
struct QradarArgs {
    #[command(flatten)]
    mappings: MappingArgs,
    /// Directory to write the files into (created if missing).
    #[arg(long, default_value = "qradar-content")]
    out: PathBuf,
    /// The id of the log source type the events arrive under (QRadar: Admin > DSM Editor, or
    /// GET /api/config/event_sources/log_source_management/log_source_types); written into the
    /// REST bodies. Without it they carry null and the import script asks for it.
    #[arg(long)]
    log_source_type_id: Option<u64>,
}

pub fn run(args: ExportArgs) -> Result<ExitCode> {
    let ExportTarget::Qradar(a) = args.target;
    let set = a.mappings.load()?;
    let content = qradar::content(&set).context("building the QRadar content")?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    for (name, text) in qradar::files(&content, a.log_source_type_id) {
        let path = a.out.join(&name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let script = a.out.join("qradar_import.py");
    std::fs::write(&script, qradar::IMPORT_SCRIPT)
        .with_context(|| format!("writing {}", script.display()))?;
    eprintln!(
        "export qradar: {} QID records, {} event mappings, {} custom properties in {}",
        content.records.len(),
        content.mappings.len(),
        content.keys.len(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
