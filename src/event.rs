//! The records that flow from inputs through the mapping engine to the formatters.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::json::Json;

/// Which Microsoft API a record came from (the CLI's `--source KIND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// Streaming API record, as split out of an Event Hubs `{"records":[...]}` message.
    EventHub,
    /// Graph Security `alerts_v2` item.
    GraphAlert,
    /// Graph Security `incidents` item (alerts possibly expanded).
    GraphIncident,
    /// Defender for Endpoint API `/api/alerts` item.
    MdeAlert,
    /// Legacy Defender for Endpoint SIEM REST API alert.
    SiemAlert,
    /// Defender for Endpoint vulnerability (vulnerability x machine x software).
    MdeVulnerability,
}

impl SourceKind {
    pub const ALL: [SourceKind; 6] = [
        SourceKind::EventHub,
        SourceKind::GraphAlert,
        SourceKind::GraphIncident,
        SourceKind::MdeAlert,
        SourceKind::SiemAlert,
        SourceKind::MdeVulnerability,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::EventHub => "eventhub",
            SourceKind::GraphAlert => "graph-alert",
            SourceKind::GraphIncident => "graph-incident",
            SourceKind::MdeAlert => "mde-alert",
            SourceKind::SiemAlert => "siem-alert",
            SourceKind::MdeVulnerability => "mde-vulnerability",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = SourceKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown source kind `{s}` (expected auto, {})",
                    names.join(", ")
                )
            })
    }
}

/// The dataset of Elastic's integrations that a source's documents belong to.
pub fn dataset(source: Option<SourceKind>) -> &'static str {
    match source {
        Some(SourceKind::EventHub) => "m365_defender.event",
        Some(SourceKind::GraphAlert) => "m365_defender.alert",
        Some(SourceKind::GraphIncident) => "m365_defender.incident",
        Some(SourceKind::SiemAlert) => "m365_defender.log",
        Some(SourceKind::MdeAlert) => "microsoft_defender_endpoint.log",
        Some(SourceKind::MdeVulnerability) => "m365_defender.vulnerability",
        None => "defender_dsm.unmapped",
    }
}

/// Where a record was read: enough to point a user at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// File name, `-` for stdin, or an input's name.
    pub origin: Arc<str>,
    /// 1-based line where the record's document starts.
    pub line: usize,
    /// 0-based index of the record inside its document (`records[i]`, `value[i]`, array index).
    pub index: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} [{}]", self.origin, self.line, self.index)
    }
}

/// One record as an input received it, before mapping; its strings borrow from the input.
#[derive(Debug, Clone)]
pub struct RawRecord<'a> {
    /// `None` when the shape matched no known API (it is then emitted as an unmapped event).
    pub source: Option<SourceKind>,
    pub position: Position,
    pub payload: Json<'a>,
    /// When the service received it (set by the service's pipeline; the CLI leaves it out so
    /// that its output depends on the input alone): the time of an event whose record carries
    /// none.
    pub received: Option<crate::mapping::time::Timestamp>,
}
