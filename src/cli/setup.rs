//! `setup elastic`: index templates and the lifecycle policy in Elasticsearch or OpenSearch.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::export::TemplateArgs;
use super::outputs::BulkAuthArgs;
use super::MappingArgs;
use crate::output::elastic_setup::ElasticSetup;

#[derive(Args)]
pub struct SetupArgs {
    #[command(subcommand)]
    target: SetupTarget,
}

#[derive(Subcommand)]
enum SetupTarget {
    /// Create or update our index templates (typed from the mappings) and the lifecycle policy
    /// (ILM on Elasticsearch, ISM on OpenSearch); running it again changes nothing.
    Elastic(ElasticSetupArgs),
}

#[derive(Args)]
struct ElasticSetupArgs {
    #[command(flatten)]
    mappings: MappingArgs,
    /// The cluster: http(s)://host:port.
    #[arg(long)]
    url: String,
    #[command(flatten)]
    templates: TemplateArgs,
    #[command(flatten)]
    auth: BulkAuthArgs,
    /// PEM file of the CA that signed the cluster's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
}

pub fn run(args: SetupArgs) -> Result<ExitCode> {
    let SetupTarget::Elastic(a) = args.target;
    let auth = a.auth.auth()?;
    let set = a.mappings.load()?;
    let setup = ElasticSetup::new(&a.url, auth, a.ca.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let observed = super::replay::observed_types(Some(&a.templates.fixtures))?;
    let report = runtime.block_on(setup.run(
        &set,
        a.templates.retention_days,
        !a.templates.plain_indices,
        &observed,
    ))?;
    eprintln!("setup elastic: {}", report.distribution);
    for l in &report.lines {
        eprintln!("  {l}");
    }
    Ok(match report.lifecycle_missing {
        Some(why) => {
            eprintln!("setup elastic: {why}");
            ExitCode::from(2)
        }
        None => ExitCode::SUCCESS,
    })
}
