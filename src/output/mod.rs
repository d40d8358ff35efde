//! Where translated events go. Outputs do the I/O (sockets, files); what they send comes from
//! the pure `format` module.

pub mod batch;
pub mod bulk;
pub mod dead_letter;
mod delivery;
pub mod elastic_setup;
pub mod file;
mod sink;
pub mod spool;
pub mod syslog;
pub mod worker;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// What went wrong with an output: its settings, or I/O with the place it writes to.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{0}")]
    Config(String),
    #[error("{target}: {source}")]
    Io {
        target: String,
        source: std::io::Error,
    },
    #[error("{target}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        target: String,
        attempts: u32,
        last: String,
    },
}

/// 100 ms doubling to 30 s, each delay drawn between half and the whole of its step, so that
/// many forwarders do not reconnect in step.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let step = 100u64.saturating_mul(1 << attempt.min(9)).min(30_000);
    let random = RandomState::new().build_hasher().finish();
    Duration::from_millis(step / 2 + random % (step / 2 + 1))
}

/// TLS (syslog and HTTPS alike) uses ring, installed as the process's provider before any rustls
/// config is built (our reqwest is built without a provider of its own). rustls cannot choose one
/// itself: the Azure SDK's dependencies enable its aws-lc-rs feature beside our ring.
pub(crate) fn install_crypto_provider() {
    // An Err only says a provider is already installed.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

/// `text` with the user and password of every URL in it (`http://user:pass@host`) replaced by
/// `***`: output names, errors and reports are logged, and credentials must not be.
pub fn redact_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first `/`, `?`, `#` or whitespace; userinfo before an `@`.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c == ')')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(userinfo) => {
                out.push_str("***");
                rest = &tail[userinfo..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// A name for an output that is safe as a file or directory name (`tcp_127.0.0.1_514`).
pub fn dir_name(name: &str) -> String {
    name.replace("://", "_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact_userinfo("http://elastic:s3cret@es.example:9200/_bulk failed (https://u@h)"),
            "http://***@es.example:9200/_bulk failed (https://***@h)"
        );
        assert_eq!(redact_userinfo("tcp://q:514 a@b"), "tcp://q:514 a@b");
        assert_eq!(redact_userinfo("no url"), "no url");
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_bounded() {
        for attempt in 1..20 {
            let d = backoff(attempt).as_millis() as u64;
            let step = (100u64 << attempt.min(9)).min(30_000);
            assert!(d >= step / 2 && d <= step, "{attempt}: {d}");
        }
    }
}
