//! Entra ID client credentials: access tokens for the Microsoft APIs the pollers call.
//!
//! A token is fetched per scope (v2 endpoint, `scope=<app id URI>/.default`) or per resource
//! (v1 endpoint, `resource=<URI>`, which the legacy SIEM API needs), cached until a minute
//! before it expires, and refreshed once for all concurrent callers (the cache is behind an
//! async mutex held across the request). `expires_in` is accepted as a number or a string, as
//! the v1 endpoint sends strings.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("token endpoint {url}: {reason}")]
    Refused { url: String, reason: String },
    #[error("token endpoint {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

/// What a token is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Audience {
    /// v2: `scope=https://graph.microsoft.com/.default`.
    Scope(String),
    /// v1: `resource=https://graph.windows.net`.
    Resource(String),
}

pub struct TokenProvider {
    client: reqwest::Client,
    authority: String,
    tenant_id: String,
    client_id: String,
    secret: String,
    cache: Mutex<HashMap<Audience, (String, Instant)>>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("authority", &self.authority)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    pub fn new(
        client: reqwest::Client,
        authority: &str,
        tenant_id: &str,
        client_id: &str,
        secret: String,
    ) -> TokenProvider {
        TokenProvider {
            client,
            authority: authority.trim_end_matches('/').to_string(),
            tenant_id: tenant_id.to_string(),
            client_id: client_id.to_string(),
            secret,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A valid token for `audience`, from the cache or fetched now.
    pub async fn token(&self, audience: &Audience) -> Result<String, AuthError> {
        Ok(self.token_until(audience).await?.0)
    }

    /// A valid token and when it is to be renewed.
    async fn token_until(&self, audience: &Audience) -> Result<(String, Instant), AuthError> {
        let mut cache = self.cache.lock().await;
        if let Some((token, until)) = cache.get(audience) {
            if Instant::now() < *until {
                return Ok((token.clone(), *until));
            }
        }
        let (token, lifetime) = self.fetch(audience).await?;
        // Renewed a minute early (or at half its life, for short-lived tokens).
        let margin = Duration::from_secs(60).min(lifetime / 2);
        let until = Instant::now() + lifetime - margin;
        cache.insert(audience.clone(), (token.clone(), until));
        Ok((token, until))
    }

    /// Forgets a token the API refused (401), so the next call fetches a new one.
    pub async fn invalidate(&self, audience: &Audience) {
        self.cache.lock().await.remove(audience);
    }

    async fn fetch(&self, audience: &Audience) -> Result<(String, Duration), AuthError> {
        let (url, key, value) = match audience {
            Audience::Scope(s) => (
                format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant_id),
                "scope",
                s,
            ),
            Audience::Resource(r) => (
                format!("{}/{}/oauth2/token", self.authority, self.tenant_id),
                "resource",
                r,
            ),
        };
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.as_str()),
            (key, value.as_str()),
        ];
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let unreachable = |reason: String| AuthError::Unreachable {
            url: url.clone(),
            reason,
        };
        let resp = self
            .client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| unreachable(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if !status.is_success() {
            let reason = match (v["error"].as_str(), v["error_description"].as_str()) {
                (Some(code), Some(desc)) => format!(
                    "{status} {code}: {}",
                    desc.lines().next().unwrap_or_default()
                ),
                _ => format!("{status}: {}", text.chars().take(200).collect::<String>()),
            };
            return Err(if status.is_server_error() {
                unreachable(reason)
            } else {
                AuthError::Refused {
                    url: url.clone(),
                    reason: format!(
                        "{reason} (check the tenant id, client id and secret of the app registration)"
                    ),
                }
            });
        }
        let token = v["access_token"]
            .as_str()
            .ok_or_else(|| unreachable("the response has no access_token".into()))?;
        let secs = match &v["expires_in"] {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .unwrap_or(3599);
        Ok((token.to_string(), Duration::from_secs(secs.max(1))))
    }
}

/// The Azure SDK (Event Hubs AMQP, the blob checkpoint store) and the Kafka endpoint's
/// OAUTHBEARER sign in through the same client-secret provider as the pollers: one token cache, one authority setting (sovereign
/// clouds), one code path the stand-in tests cover. The SDK is told the renewal time as the
/// expiry, so it asks again when the cache would renew.
#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for TokenProvider {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let audience = Audience::Scope(scopes.join(" "));
        // The SDK (and librdkafka) report a failed sign-in only as a failed connection: the
        // reason is logged here.
        let (token, until) = self.token_until(&audience).await.map_err(|e| {
            tracing::warn!(tenant = %self.tenant_id, client = %self.client_id, error = %e, "Entra sign-in failed");
            azure_core::Error::with_message(azure_core::error::ErrorKind::Credential, e.to_string())
        })?;
        let valid_for = until.saturating_duration_since(Instant::now());
        Ok(azure_core::credentials::AccessToken::new(
            token,
            azure_core::time::OffsetDateTime::now_utc() + valid_for,
        ))
    }
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(
            form_encode("https://graph.microsoft.com/.default"),
            "https%3A%2F%2Fgraph.microsoft.com%2F.default"
        );
        assert_eq!(form_encode("a b+c~"), "a+b%2Bc%7E");
    }
}
