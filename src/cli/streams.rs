//! The Streaming API inputs of `serve`: Event Hubs through the Kafka endpoint and over AMQP.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use azure_core::credentials::TokenCredential;
use tokio::sync::watch;

use crate::config::{secret, EntraCredential, ServiceConfig, StartAt};
use crate::inputs::amqp::{AmqpInput, AmqpSettings};
use crate::inputs::kafka::{KafkaInput, KafkaSettings};
use crate::pipeline::Pipeline;

/// One consumer task per Kafka input.
pub fn start_kafka(
    cfg: &ServiceConfig,
    pipeline: &Arc<Pipeline>,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for k in &cfg.kafka {
        let connection_string = secret(
            k.connection_string_env.as_deref(),
            k.connection_string_file.as_deref(),
            &format!("kafka ({}).connection_string", k.name),
        )
        .map_err(anyhow::Error::msg)?;
        let at = format!("kafka ({})", k.name);
        let credential = match &k.credential {
            Some(c) => Some(entra_credential(c, &at)?),
            None => None,
        };
        let input = KafkaInput::new(
            KafkaSettings {
                name: k.name.clone(),
                brokers: k.brokers.clone(),
                topics: k.topics.clone(),
                group_id: k.group_id.clone(),
                connection_string,
                credential,
                properties: k.properties.clone(),
                dead_letters: cfg.data_dir.join("dead-letters"),
                stall_after: Duration::from_secs(k.stall_after_seconds),
            },
            pipeline.clone(),
            &tokio::runtime::Handle::current(),
        )
        .map_err(anyhow::Error::msg)?;
        tracing::info!(input = %k.name, brokers = %k.brokers, topics = ?k.topics, group = %k.group_id, "consuming");
        tasks.push(tokio::spawn(input.run(stop.clone())));
    }
    Ok(tasks)
}

/// One consumer per AMQP input (a processor per event hub inside it).
pub fn start_eventhubs(
    cfg: &ServiceConfig,
    pipeline: &Arc<Pipeline>,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for e in &cfg.eventhubs {
        let at = format!("eventhubs ({})", e.name);
        let credential = entra_credential(&e.credential, &at)?;
        let sas = secret(
            e.checkpoint_sas_url_env.as_deref(),
            e.checkpoint_sas_url_file.as_deref(),
            &format!("{at}.checkpoint_sas_url"),
        )
        .map_err(anyhow::Error::msg)?;
        let container = sas
            .as_deref()
            .or(e.checkpoint_container_url.as_deref())
            .unwrap_or_default();
        // A SAS URL is a secret: the error names the key, not the URL.
        let checkpoint_container = url::Url::parse(container)
            .map_err(|err| anyhow::anyhow!("{at}: the checkpoint container URL: {err}"))?;
        let instance_id = e.instance_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "defender-dsm".into());
            format!("{host}-{}", std::process::id())
        });
        let settings = AmqpSettings {
            name: e.name.clone(),
            namespace: e.namespace.clone(),
            hubs: e.hubs.clone(),
            consumer_group: e.consumer_group.clone(),
            endpoint: e.endpoint.clone(),
            credential,
            checkpoint_container,
            checkpoint_sas: sas.is_some(),
            start_earliest: e.start == StartAt::Earliest,
            instance_id,
            balance_every: Duration::from_secs(e.balance_seconds),
            ownership_expiry: Duration::from_secs(e.ownership_expiry_seconds),
            prefetch: e.prefetch,
            dead_letters: cfg.data_dir.join("dead-letters"),
            stall_after: Duration::from_secs(e.stall_after_seconds),
        };
        tracing::info!(input = %e.name, namespace = %e.namespace, hubs = ?e.hubs, group = %e.consumer_group, instance = %settings.instance_id, "consuming over AMQP");
        let input = AmqpInput::new(settings, pipeline.clone());
        tasks.push(tokio::spawn(input.run(stop.clone())));
    }
    Ok(tasks)
}

fn entra_credential(c: &EntraCredential, at: &str) -> Result<Arc<dyn TokenCredential>> {
    Ok(match c {
        EntraCredential::ClientSecret {
            tenant_id,
            client_id,
            client_secret_env,
            client_secret_file,
            authority,
        } => {
            super::serve::client_secret_app(
                (client_secret_env.as_deref(), client_secret_file.as_deref()),
                &format!("{at}.credential.client_secret"),
                (authority, tenant_id, client_id),
            )?
            .1
        }
        EntraCredential::ManagedIdentity { client_id } => {
            let options = azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: client_id
                    .clone()
                    .map(azure_identity::UserAssignedId::ClientId),
                ..Default::default()
            };
            azure_identity::ManagedIdentityCredential::new(Some(options))
                .map_err(|e| anyhow::anyhow!("{at}.credential (managed identity): {e}"))?
        }
        EntraCredential::WorkloadIdentity => azure_identity::WorkloadIdentityCredential::new(None)
            .map_err(|e| anyhow::anyhow!("{at}.credential (workload identity): {e}"))?,
    })
}
