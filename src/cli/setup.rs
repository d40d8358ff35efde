//! `setup elastic`: index templates and the lifecycle policy in Elasticsearch or OpenSearch.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::MappingArgs;
use crate::output::bulk::BulkAuth;
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
    /// Days data is kept before the lifecycle policy deletes it.
    #[arg(long, default_value_t = 7)]
    retention_days: u32,
    /// Plain indices instead of data streams, for clusters without them (OpenSearch before
    /// 2.6, some emulators).
    #[arg(long)]
    plain_indices: bool,
    /// Golden fixtures whose expected ECS documents type the fields copied without a
    /// conversion.
    #[arg(long, default_value = "fixtures")]
    fixtures: PathBuf,
    /// Basic authentication user (the password from DEFENDER_DSM_BULK_PASSWORD).
    #[arg(long, env = "DEFENDER_DSM_BULK_USER")]
    user: Option<String>,
    #[arg(
        long,
        env = "DEFENDER_DSM_BULK_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    password: Option<String>,
    /// API key authentication (better from DEFENDER_DSM_BULK_API_KEY).
    #[arg(long, env = "DEFENDER_DSM_BULK_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Bearer token authentication (better from DEFENDER_DSM_BULK_TOKEN).
    #[arg(long, env = "DEFENDER_DSM_BULK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the CA that signed the cluster's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
}

pub fn run(args: SetupArgs) -> Result<ExitCode> {
    let SetupTarget::Elastic(a) = args.target;
    let auth = match (&a.user, &a.password, &a.api_key, &a.token) {
        (None, None, None, None) => BulkAuth::None,
        (Some(u), Some(p), None, None) => BulkAuth::Basic {
            user: u.clone(),
            password: p.clone(),
        },
        (None, None, Some(k), None) => BulkAuth::ApiKey(k.clone()),
        (None, None, None, Some(t)) => BulkAuth::Bearer(t.clone()),
        _ => anyhow::bail!("give one of user and password, an API key or a token"),
    };
    let set = a.mappings.load()?;
    let setup = ElasticSetup::new(&a.url, auth, a.ca.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let observed = super::replay::observed_types(Some(&a.fixtures))?;
    let report =
        runtime.block_on(setup.run(&set, a.retention_days, !a.plain_indices, &observed))?;
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
