//! SASL OAUTHBEARER for the Event Hubs Kafka endpoint: librdkafka asks for a token when it
//! connects and again before the token expires; the answer is an Entra ID access token for the
//! namespace (`https://<namespace>.servicebus.windows.net/.default`), from the same credentials
//! as the AMQP input (client secret, managed identity, workload identity).

use std::error::Error;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::consumer::ConsumerContext;

/// The consumer's context: Entra tokens when the input signs in with them.
pub struct KafkaContext {
    pub entra: Option<EntraTokens>,
}

/// Where tokens come from, for which scope.
pub struct EntraTokens {
    pub credential: Arc<dyn TokenCredential>,
    pub scope: String,
    /// The service's runtime: the SDK credentials are async.
    pub runtime: tokio::runtime::Handle,
}

impl EntraTokens {
    /// The scope Event Hubs expects for a namespace, from a `host:port` broker list.
    pub fn scope_for(brokers: &str) -> String {
        let first = brokers.split(',').next().unwrap_or_default().trim();
        let host = first.rsplit_once(':').map_or(first, |(h, _)| h);
        format!("https://{host}/.default")
    }

    /// A token and its expiry, fetched on a thread of its own: librdkafka asks from whatever
    /// thread polls the consumer, a runtime worker included, where blocking on the runtime is
    /// not allowed.
    pub fn fetch(&self) -> Result<OAuthToken, Box<dyn Error>> {
        let (credential, scope, runtime) = (
            self.credential.clone(),
            self.scope.clone(),
            self.runtime.clone(),
        );
        let fetched = std::thread::scope(|s| {
            s.spawn(move || runtime.block_on(credential.get_token(&[scope.as_str()], None)))
                .join()
        })
        .map_err(|_| "the token request's thread failed")?;
        let token = fetched.map_err(|e| format!("Entra sign-in for the Kafka endpoint: {e}"))?;
        Ok(OAuthToken {
            token: token.token.secret().to_string(),
            principal_name: "defender-dsm".into(),
            lifetime_ms: i64::try_from(token.expires_on.unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(i64::MAX),
        })
    }
}

impl ClientContext for KafkaContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn Error>> {
        match &self.entra {
            Some(e) => e.fetch(),
            None => {
                Err("sasl.mechanism OAUTHBEARER needs a credential in the [[kafka]] input".into())
            }
        }
    }
}

impl ConsumerContext for KafkaContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_is_the_namespace() {
        assert_eq!(
            EntraTokens::scope_for("contoso.servicebus.windows.net:9093"),
            "https://contoso.servicebus.windows.net/.default"
        );
        assert_eq!(
            EntraTokens::scope_for(" a.servicebus.windows.net:9093,b:9093"),
            "https://a.servicebus.windows.net/.default"
        );
    }
}
