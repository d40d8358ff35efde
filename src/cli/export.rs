//! `export qradar` and `export elastic`: SIEM content generated from the mapping files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::MappingArgs;
use crate::export::{elastic, qradar};

#[derive(Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    target: ExportTarget,
}

#[derive(Subcommand)]
enum ExportTarget {
    /// QID records, DSM event mappings and custom properties for QRadar (see docs/qradar.md).
    Qradar(QradarArgs),
    /// Index templates (typed from the mappings) and ILM/ISM lifecycle policies for
    /// Elasticsearch and OpenSearch (see docs/elastic.md).
    Elastic(ElasticArgs),
}

#[derive(Args)]
struct ElasticArgs {
    #[command(flatten)]
    mappings: MappingArgs,
    /// Directory to write the files into (created if missing).
    #[arg(long, default_value = "elastic-content")]
    out: PathBuf,
    #[command(flatten)]
    templates: TemplateArgs,
}

/// What the Elasticsearch/OpenSearch templates and policies are made of.
#[derive(Args)]
pub(super) struct TemplateArgs {
    /// Days data is kept before the lifecycle policy deletes it.
    #[arg(long, default_value_t = 7)]
    pub retention_days: u32,
    /// Plain indices instead of data streams, for clusters without them (OpenSearch before
    /// 2.6, some emulators).
    #[arg(long)]
    pub plain_indices: bool,
    /// Golden fixtures whose expected ECS documents type the fields copied without a
    /// conversion.
    #[arg(long, default_value = "fixtures")]
    pub fixtures: PathBuf,
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
    match args.target {
        ExportTarget::Qradar(a) => run_qradar(a),
        ExportTarget::Elastic(a) => run_elastic(a),
    }
}

/// `index-template-<name>.json` per data stream, `ilm-policy.json` (Elasticsearch) and
/// `ism-policy.json` (OpenSearch).
fn run_elastic(a: ElasticArgs) -> Result<ExitCode> {
    let set = a.mappings.load()?;
    let policy = elastic::policy_name(a.templates.retention_days);
    let observed = super::replay::observed_types(Some(&a.templates.fixtures))?;
    let templates = elastic::templates(&set, Some(&policy), !a.templates.plain_indices, &observed);
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let write = |name: String, v: &serde_json::Value| -> Result<()> {
        let path = a.out.join(name);
        let text = serde_json::to_string_pretty(v)? + "\n";
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    for t in &templates {
        write(format!("index-template-{}.json", t.name), &t.body)?;
        for c in &t.conflicts {
            eprintln!("export elastic: {}: {c}", t.name);
        }
    }
    write(
        format!("ilm-policy-{policy}.json"),
        &elastic::ilm_policy(a.templates.retention_days),
    )?;
    let datasets: Vec<&str> = templates.iter().map(|t| t.dataset).collect();
    write(
        format!("ism-policy-{policy}.json"),
        &elastic::ism_policy(
            a.templates.retention_days,
            &datasets,
            !a.templates.plain_indices,
        ),
    )?;
    eprintln!(
        "export elastic: {} index templates, ILM and ISM policies ({} days) in {}",
        templates.len(),
        a.templates.retention_days,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_qradar(a: QradarArgs) -> Result<ExitCode> {
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
