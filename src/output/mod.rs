//! Where translated events go. Outputs do the I/O (sockets, files); what they send comes from
//! the pure `format` module.

pub mod file;
pub mod spool;
pub mod syslog;

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
