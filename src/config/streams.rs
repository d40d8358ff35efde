//! The Streaming API inputs: Event Hubs through its Kafka endpoint (`[[kafka]]`) and over AMQP
//! with blob checkpoints (`[[eventhubs]]`).

use std::path::PathBuf;

use serde::Deserialize;

use super::{check_name, default_authority};

/// An Event Hubs namespace (or any Kafka cluster) carrying Streaming API messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub name: String,
    /// `<namespace>.servicebus.windows.net:9093`.
    pub brokers: String,
    /// The event hubs (Kafka topics) the Streaming API writes to.
    pub topics: Vec<String>,
    /// One consumer group per deployment; instances in it split the partitions.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// The namespace connection string (SASL_SSL, PLAIN, `$ConnectionString`), from the
    /// environment or a file. Neither: plaintext, for a local broker.
    pub connection_string_env: Option<String>,
    pub connection_string_file: Option<PathBuf>,
    /// Or Entra ID (SASL_SSL, OAUTHBEARER; role Azure Event Hubs Data Receiver), as for
    /// `[[eventhubs]]`.
    pub credential: Option<EntraCredential>,
    /// Further librdkafka properties.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
    /// A partition with a backlog that does not move for this long fails `/readyz`.
    #[serde(default = "default_stall")]
    pub stall_after_seconds: u64,
}

fn default_stall() -> u64 {
    300
}

fn default_group() -> String {
    "defender-dsm".into()
}

/// An Event Hubs namespace read over AMQP (every tier), its partitions shared among instances
/// through ownership blobs in a storage container.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventHubsConfig {
    pub name: String,
    /// `<namespace>.servicebus.windows.net`.
    pub namespace: String,
    /// The event hubs the Streaming API writes to.
    pub hubs: Vec<String>,
    #[serde(default = "default_consumer_group")]
    pub consumer_group: String,
    /// An AMQP address in place of the namespace's (a proxy, a private endpoint).
    pub endpoint: Option<String>,
    pub credential: EntraCredential,
    /// `https://<account>.blob.core.windows.net/<container>`, signed in with `credential`
    /// (role: Storage Blob Data Contributor) ...
    pub checkpoint_container_url: Option<String>,
    /// ... or a container SAS URL (read, add, create, write, list), from the environment or a
    /// file.
    pub checkpoint_sas_url_env: Option<String>,
    pub checkpoint_sas_url_file: Option<PathBuf>,
    /// Where a partition without a checkpoint starts.
    #[serde(default)]
    pub start: StartAt,
    /// Names this instance in the ownership blobs (default: host name and process id).
    pub instance_id: Option<String>,
    /// How often partitions are balanced among instances.
    #[serde(default = "default_balance")]
    pub balance_seconds: u64,
    /// An instance that has not renewed its ownership for this long loses its partitions.
    #[serde(default = "default_expiry")]
    pub ownership_expiry_seconds: u64,
    /// Events the SDK fetches ahead per partition.
    #[serde(default = "default_prefetch")]
    pub prefetch: u32,
    /// A partition with a backlog whose checkpoint does not move for this long fails `/readyz`.
    #[serde(default = "default_stall")]
    pub stall_after_seconds: u64,
}

/// How an input signs in to Entra ID.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EntraCredential {
    /// An app registration's client secret.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        client_secret_env: Option<String>,
        client_secret_file: Option<PathBuf>,
        #[serde(default = "default_authority")]
        authority: String,
    },
    /// The Azure host's managed identity; `client_id` picks a user-assigned one.
    ManagedIdentity { client_id: Option<String> },
    /// Kubernetes workload identity (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
    /// `AZURE_FEDERATED_TOKEN_FILE`, as the AKS webhook sets them).
    WorkloadIdentity,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// The oldest retained event: nothing is missed on a first start.
    #[default]
    Earliest,
    /// Only events enqueued from now on.
    Latest,
}

fn default_consumer_group() -> String {
    "$Default".into()
}
fn default_balance() -> u64 {
    10
}
fn default_expiry() -> u64 {
    60
}
/// Bodies reach 1 MB: prefetch x owned partitions x body size bounds the memory held ahead.
fn default_prefetch() -> u32 {
    32
}

/// What the types cannot say: names (unique across both kinds, as dead letters are named after
/// them), secrets given twice, the checkpoint container, the balancing timings.
pub(super) fn check(kafka: &[KafkaConfig], eventhubs: &[EventHubsConfig]) -> Result<(), String> {
    let mut names: Vec<&str> = Vec::new();
    let unique = |names: &[&str], at: &str, value: &str| -> Result<(), String> {
        check_name(at, value)?;
        if names.contains(&value) {
            return Err(format!("{at}.name: `{value}` is used by another input"));
        }
        Ok(())
    };
    for (i, k) in kafka.iter().enumerate() {
        let at = format!("kafka[{i}]");
        unique(&names, &at, &k.name)?;
        names.push(&k.name);
        if k.topics.is_empty() {
            return Err(format!("{at} ({}).topics: at least one", k.name));
        }
        if k.connection_string_env.is_some() && k.connection_string_file.is_some() {
            return Err(format!(
                "{at} ({}): give connection_string_env or connection_string_file, not both",
                k.name
            ));
        }
        let connection_string =
            k.connection_string_env.is_some() || k.connection_string_file.is_some();
        if connection_string && k.credential.is_some() {
            return Err(format!(
                "{at} ({}): give a connection string or a credential, not both",
                k.name
            ));
        }
        if let Some(c) = &k.credential {
            check_credential(&format!("{at} ({})", k.name), c)?;
        }
    }
    for (i, e) in eventhubs.iter().enumerate() {
        let at = format!("eventhubs[{i}]");
        unique(&names, &at, &e.name)?;
        names.push(&e.name);
        let at = format!("{at} ({})", e.name);
        if e.hubs.is_empty() {
            return Err(format!("{at}.hubs: at least one"));
        }
        if e.namespace.is_empty() || e.namespace.contains(['/', ':']) {
            return Err(format!(
                "{at}.namespace: `{}` is not a host name (`<namespace>.servicebus.windows.net`, no scheme or path)",
                e.namespace
            ));
        }
        let sas = e.checkpoint_sas_url_env.is_some() || e.checkpoint_sas_url_file.is_some();
        if e.checkpoint_container_url.is_some() == sas {
            return Err(format!(
                "{at}: give checkpoint_container_url, or checkpoint_sas_url_env or checkpoint_sas_url_file"
            ));
        }
        if let Some(u) = &e.checkpoint_container_url {
            if !u.starts_with("https://") {
                return Err(format!(
                    "{at}.checkpoint_container_url: `{u}` is not https (Entra tokens go over https only; use a SAS URL otherwise)"
                ));
            }
        }
        if e.ownership_expiry_seconds <= e.balance_seconds {
            return Err(format!(
                "{at}.ownership_expiry_seconds: must be longer than balance_seconds ({}), or partitions change hands every round",
                e.balance_seconds
            ));
        }
        check_credential(&at, &e.credential)?;
    }
    Ok(())
}

fn check_credential(at: &str, c: &EntraCredential) -> Result<(), String> {
    if let EntraCredential::ClientSecret {
        client_secret_env,
        client_secret_file,
        ..
    } = c
    {
        if client_secret_env.is_some() == client_secret_file.is_some() {
            return Err(format!(
                "{at}.credential: give client_secret_env or client_secret_file"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::ServiceConfig;

    const HUB: &str =
        "[[eventhubs]]\nname = \"s\"\nnamespace = \"n.servicebus.windows.net\"\nhubs = [\"h\"]\n";

    fn parse(extra: &str) -> Result<ServiceConfig, String> {
        ServiceConfig::parse(&format!("{HUB}{extra}"), "a.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn each_credential_kind_parses() {
        let sas = "checkpoint_sas_url_env = \"SAS\"\n";
        let c = parse(&format!(
            "{sas}credential = {{ kind = \"managed-identity\", client_id = \"x\" }}\n"
        ))
        .expect("managed identity");
        assert_eq!(c.eventhubs[0].consumer_group, "$Default");
        parse(&format!(
            "{sas}credential = {{ kind = \"workload-identity\" }}\n"
        ))
        .expect("workload");
        parse(&format!(
            "{sas}credential = {{ kind = \"client-secret\", tenant_id = \"t\", client_id = \"c\", client_secret_file = \"f\" }}\n"
        ))
        .expect("client secret");
        let e = parse(&format!("{sas}credential = {{ kind = \"certificate\" }}\n"))
            .expect_err("unknown kind");
        assert!(e.contains("certificate"), "{e}");
    }

    #[test]
    fn mistakes_name_the_input_and_key() {
        let mi = "credential = { kind = \"managed-identity\" }\n";
        let cases = [
            (mi.to_string(), "checkpoint_container_url, or checkpoint_sas_url_env"),
            (
                format!("{mi}checkpoint_sas_url_env = \"S\"\ncheckpoint_container_url = \"https://a/c\"\n"),
                "checkpoint_container_url, or",
            ),
            (
                format!("{mi}checkpoint_container_url = \"http://a/c\"\n"),
                "is not https",
            ),

            (
                format!("{mi}checkpoint_sas_url_env = \"S\"\nbalance_seconds = 30\nownership_expiry_seconds = 30\n"),
                "ownership_expiry_seconds: must be longer",
            ),
            (
                "checkpoint_sas_url_env = \"S\"\ncredential = { kind = \"client-secret\", tenant_id = \"t\", client_id = \"c\" }\n".to_string(),
                "give client_secret_env or client_secret_file",
            ),
            (
                format!("{mi}checkpoint_sas_url_env = \"S\"\n[[kafka]]\nname = \"s\"\nbrokers = \"b\"\ntopics = [\"t\"]\n"),
                "`s` is used by another input",
            ),
            (
                format!("{mi}checkpoint_sas_url_env = \"S\"\n[[kafka]]\nname = \"k\"\nbrokers = \"b\"\ntopics = [\"t\"]\nconnection_string_env = \"C\"\n{mi}"),
                "a connection string or a credential, not both",
            ),
        ];
        let e = ServiceConfig::parse(
            &format!(
                "{}{mi}checkpoint_sas_url_env = \"S\"\n",
                HUB.replace("n.servicebus.windows.net", "sb://n/")
            ),
            "a.toml",
        )
        .expect_err("a URL for a namespace")
        .to_string();
        assert!(
            e.contains("eventhubs[0] (s).namespace: `sb://n/` is not a host name"),
            "{e}"
        );
        for (extra, want) in cases {
            let e = parse(&extra).expect_err(want);
            assert!(e.contains("eventhubs[0]") || e.contains("kafka[0]"), "{e}");
            assert!(e.contains(want), "{e}");
        }
    }
}
