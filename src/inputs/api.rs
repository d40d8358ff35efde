//! `ApiClient`: GET requests to the Microsoft APIs for one tenant, with the tenant's token, a
//! request budget, and the documented fault handling: 429 and 503 wait out `Retry-After`
//! (seconds, possibly fractional, or an HTTP date), 5xx and network errors back off with
//! jitter, a 401 fetches a new token once, a 403 names the permission the call needs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::auth::{Audience, AuthError, TokenProvider};
use crate::output::backoff;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// 401 even with a fresh token.
    #[error("{url}: 401 Unauthorized with a fresh token: {reason}")]
    Unauthorized { url: String, reason: String },
    #[error("{url}: 403 Forbidden: the app registration needs the {permission} application permission, with admin consent ({reason})")]
    Forbidden {
        url: String,
        permission: String,
        reason: String,
    },
    /// Another 4xx: the request itself is wrong (or, for `$expand`, not served).
    #[error("{url}: {status}: {reason}")]
    Rejected {
        url: String,
        status: u16,
        reason: String,
    },
    /// 429, 5xx or the network, still failing after every retry.
    #[error("{url}: gave up after {attempts} attempts: {reason}")]
    Unavailable {
        url: String,
        attempts: u32,
        reason: String,
    },
}

/// A token bucket: at most `per_minute` requests a minute, spread evenly.
#[derive(Debug)]
pub struct Budget {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Budget {
    pub fn per_minute(n: u32) -> Budget {
        Budget {
            interval: Duration::from_secs(60) / n.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    pub async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

pub struct ApiClient {
    pub http: reqwest::Client,
    pub tokens: Arc<TokenProvider>,
    pub budget: Arc<Budget>,
    /// Attempts of one request before it counts as unavailable.
    pub attempts: u32,
}

impl ApiClient {
    /// GETs `url` and returns the body. `permission` is what a 403 names.
    pub async fn get(
        &self,
        url: &str,
        audience: &Audience,
        permission: &str,
        headers: &[(&str, &str)],
    ) -> Result<String, ApiError> {
        let mut attempt = 0;
        let mut renewed = false;
        loop {
            attempt += 1;
            self.budget.acquire().await;
            let token = self.tokens.token(audience).await?;
            let mut req = self
                .http
                .get(url)
                .bearer_auth(&token)
                .header("accept", "application/json");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let (wait, reason) = match req.send().await {
                Err(e) => (None, format!("{e}")),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let body = match resp.text().await {
                        Ok(b) => b,
                        Err(e) => {
                            if attempt >= self.attempts {
                                return Err(self.unavailable(url, attempt, e.to_string()));
                            }
                            tokio::time::sleep(backoff(attempt)).await;
                            continue;
                        }
                    };
                    match status {
                        200..=299 => return Ok(body),
                        401 if !renewed => {
                            renewed = true;
                            self.tokens.invalidate(audience).await;
                            continue;
                        }
                        401 => {
                            return Err(ApiError::Unauthorized {
                                url: url.to_string(),
                                reason: short(&body),
                            })
                        }
                        403 => {
                            return Err(ApiError::Forbidden {
                                url: url.to_string(),
                                permission: permission.to_string(),
                                reason: short(&body),
                            })
                        }
                        429 | 500..=599 => (retry_after, format!("{status}: {}", short(&body))),
                        _ => {
                            return Err(ApiError::Rejected {
                                url: url.to_string(),
                                status,
                                reason: short(&body),
                            })
                        }
                    }
                }
            };
            if attempt >= self.attempts {
                return Err(self.unavailable(url, attempt, reason));
            }
            let delay = wait.unwrap_or_else(|| backoff(attempt));
            tracing::debug!(%url, ?delay, %reason, "retrying");
            tokio::time::sleep(delay.min(Duration::from_secs(300))).await;
        }
    }

    fn unavailable(&self, url: &str, attempts: u32, reason: String) -> ApiError {
        ApiError::Unavailable {
            url: url.to_string(),
            attempts,
            reason,
        }
    }
}

/// `Retry-After`: decimal seconds (`2.128`), or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate_to_unix(v)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(when.saturating_sub(now)))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` to Unix seconds.
fn httpdate_to_unix(v: &str) -> Option<u64> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u32
        + 1;
    let iso = format!("{year}-{month:02}-{day:0>2}T{time}Z");
    crate::mapping::time::Timestamp::parse(&iso)
        .map(|t| u64::try_from(t.unix_millis() / 1000).unwrap_or(0))
}

fn short(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match v["error"]["message"].as_str() {
        Some(m) => format!("{}: {m}", v["error"]["code"].as_str().unwrap_or("error")),
        None => body.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_decimal_seconds_or_a_date() {
        assert_eq!(
            parse_retry_after("2.128"),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(parse_retry_after(" 10 "), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            httpdate_to_unix("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
