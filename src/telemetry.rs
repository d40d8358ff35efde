//! Counters of the service and their Prometheus text rendering (`GET /metrics`). Every metric
//! is declared in [`METRICS`]; labels come from fixed sets (input kinds, family names from the
//! mapping set, outcomes, status codes, output names from the config).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crate::output::worker::OutputStats;

/// Name, type and help of every metric the service exports.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        "dsm_records_total",
        "counter",
        "Records received, by input, family (none: no family mapped it) and outcome (mapped, unmapped, failed).",
    ),
    ("dsm_input_bytes_total", "counter", "Bytes of payload received, by input."),
    ("dsm_http_requests_total", "counter", "Ingest requests answered, by status code."),
    (
        "dsm_output_events_total",
        "counter",
        "Events handed to an output, by output and result (delivered, duplicate, dead_lettered, dropped).",
    ),
    (
        "dsm_output_bytes_total",
        "counter",
        "Bytes of events delivered by an output (before framing or compression).",
    ),
    ("dsm_output_spool_events", "gauge", "Events waiting in an output's spool."),
    ("dsm_output_spool_bytes", "gauge", "Bytes of events waiting in an output's spool."),
    (
        "dsm_output_spool_age_seconds",
        "gauge",
        "How long an output's spool has not been empty (0: empty).",
    ),
    (
        "dsm_output_last_success_timestamp_seconds",
        "gauge",
        "Unix time of an output's last delivery (0: none yet).",
    ),
    ("dsm_output_up", "gauge", "1 when the output's last attempt succeeded."),
    (
        "dsm_output_filtered_total",
        "counter",
        "Events an output's route kept out, by output and reason (family, category, action).",
    ),
    (
        "dsm_output_down_total",
        "counter",
        "Times an output's endpoint went down (its delivery failed after working).",
    ),
    (
        "dsm_output_refusing_total",
        "counter",
        "Times an output started refusing new events (spool full or unwritable, file unwritable).",
    ),
    (
        "dsm_mapping_reloads_total",
        "counter",
        "Mapping reloads, by result (applied, rejected).",
    ),
    ("dsm_mapping_info", "gauge", "The mapping set in use, by version."),
    (
        "dsm_poller_items_total",
        "counter",
        "Items a poller handed to the outputs, by tenant and feed.",
    ),
    (
        "dsm_poller_errors_total",
        "counter",
        "Failed polls, by tenant, feed and kind (auth, api, outputs, cursor, too_large: a page cut at max_payload_output_bytes).",
    ),
    (
        "dsm_eventhub_records_total",
        "counter",
        "Records consumed from Event Hubs (Kafka endpoint or AMQP), by input, hub and partition.",
    ),
    (
        "dsm_eventhub_delay_seconds",
        "gauge",
        "Seconds between a partition's last message being enqueued and taken, by input, hub and partition.",
    ),
    (
        "dsm_eventhub_dead_letters_total",
        "counter",
        "Messages that were not JSON, kept with their hub, partition and position, by input.",
    ),
    (
        "dsm_eventhub_errors_total",
        "counter",
        "Event Hubs client errors (receive, checkpoint, ownership), by input.",
    ),
    (
        "dsm_eventhub_lag",
        "gauge",
        "Messages after the checkpoint (last enqueued less checkpointed), by input, hub and partition.",
    ),
    (
        "dsm_eventhub_checkpoint_age_seconds",
        "gauge",
        "Seconds since a partition's checkpoint last moved, by input, hub and partition.",
    ),
    (
        "dsm_eventhub_stalled",
        "gauge",
        "1 when a partition has a backlog and its checkpoint has not moved for stall_after_seconds.",
    ),
    (
        "dsm_poller_stale",
        "gauge",
        "1 when a feed's cursor has not advanced for longer than its stale_after.",
    ),
];

type Labels = Vec<(&'static str, String)>;

/// A sample's key: a declared metric and its labels.
fn key(metric: &'static str, labels: &[(&'static str, &str)]) -> (&'static str, Labels) {
    debug_assert!(METRICS.iter().any(|(m, _, _)| *m == metric));
    (
        metric,
        labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
    )
}

#[derive(Default)]
pub struct Telemetry {
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
    mapping_version: Mutex<String>,
}

impl Telemetry {
    pub fn add(&self, metric: &'static str, labels: &[(&'static str, &str)], n: u64) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry(key(metric, labels)).or_default() += n;
        }
    }

    /// Sets a gauge.
    pub fn set(&self, metric: &'static str, labels: &[(&'static str, &str)], v: u64) {
        if let Ok(mut c) = self.counters.lock() {
            c.insert(key(metric, labels), v);
        }
    }

    /// Drops a gauge's series (a partition this instance no longer owns).
    pub fn forget(&self, metric: &'static str, labels: &[(&'static str, &str)]) {
        if let Ok(mut c) = self.counters.lock() {
            c.remove(&key(metric, labels));
        }
    }

    /// The label sets of `metric` whose value is not 0.
    pub fn nonzero(&self, metric: &str) -> Vec<String> {
        let Ok(c) = self.counters.lock() else {
            return Vec::new();
        };
        c.iter()
            .filter(|((m, _), v)| *m == metric && **v != 0)
            .map(|((_, labels), _)| {
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    pub fn set_mapping_version(&self, version: &str) {
        if let Ok(mut v) = self.mapping_version.lock() {
            *v = version.to_string();
        }
    }

    /// The Prometheus text exposition of every metric; `now` is Unix seconds.
    pub fn render(&self, outputs: &[(&str, &OutputStats)], now: u64) -> String {
        let mut samples: BTreeMap<&str, Vec<(Labels, u64)>> = BTreeMap::new();
        if let Ok(c) = self.counters.lock() {
            for ((metric, labels), n) in c.iter() {
                samples
                    .entry(metric)
                    .or_default()
                    .push((labels.clone(), *n));
            }
        }
        for (name, s) in outputs {
            let out = |extra: Option<(&'static str, &str)>| -> Labels {
                let mut l = vec![("output", name.to_string())];
                l.extend(extra.map(|(k, v)| (k, v.to_string())));
                l
            };
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let events = samples.entry("dsm_output_events_total").or_default();
            for (result, n) in [
                ("delivered", load(&s.delivered)),
                ("duplicate", load(&s.duplicates)),
                ("dead_lettered", load(&s.dead_lettered)),
                ("dropped", load(&s.dropped)),
            ] {
                events.push((out(Some(("result", result))), n));
            }
            let since = load(&s.backlog_since);
            for (metric, v) in [
                ("dsm_output_bytes_total", load(&s.bytes)),
                ("dsm_output_spool_events", load(&s.pending)),
                ("dsm_output_spool_bytes", load(&s.spool_bytes)),
                (
                    "dsm_output_spool_age_seconds",
                    if since == 0 {
                        0
                    } else {
                        now.saturating_sub(since)
                    },
                ),
                (
                    "dsm_output_last_success_timestamp_seconds",
                    load(&s.last_success),
                ),
                ("dsm_output_up", u64::from(!s.down.load(Ordering::Relaxed))),
                ("dsm_output_down_total", load(&s.down_transitions)),
                ("dsm_output_refusing_total", load(&s.refusing_transitions)),
            ] {
                samples.entry(metric).or_default().push((out(None), v));
            }
        }
        if let Ok(v) = self.mapping_version.lock() {
            samples
                .entry("dsm_mapping_info")
                .or_default()
                .push((vec![("version", v.clone())], 1));
        }
        let mut text = String::new();
        for (name, kind, help) in METRICS {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples.get(name).map_or(&[][..], Vec::as_slice) {
                text.push_str(name);
                if !labels.is_empty() {
                    text.push('{');
                    for (i, (k, val)) in labels.iter().enumerate() {
                        if i > 0 {
                            text.push(',');
                        }
                        let escaped = val
                            .replace('\\', "\\\\")
                            .replace('"', "\\\"")
                            .replace('\n', "\\n");
                        let _ = write!(text, "{k}=\"{escaped}\"");
                    }
                    text.push('}');
                }
                let _ = writeln!(text, " {v}");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_declared_metrics_with_escaped_labels() {
        let t = Telemetry::default();
        t.add(
            "dsm_records_total",
            &[("input", "http"), ("family", "a\"b"), ("outcome", "mapped")],
            3,
        );
        t.add("dsm_http_requests_total", &[("code", "202")], 1);
        let stats = OutputStats::default();
        stats.pending.store(5, Ordering::Relaxed);
        stats.backlog_since.store(100, Ordering::Relaxed);
        let text = t.render(&[("qradar", &stats)], 160);
        assert!(text.contains(
            "dsm_records_total{input=\"http\",family=\"a\\\"b\",outcome=\"mapped\"} 3\n"
        ));
        assert!(text.contains("dsm_output_spool_events{output=\"qradar\"} 5\n"));
        assert!(text.contains("dsm_output_spool_age_seconds{output=\"qradar\"} 60\n"));
        assert!(text.contains("dsm_output_up{output=\"qradar\"} 1\n"));
        assert!(text.contains("# TYPE dsm_http_requests_total counter\n"));
    }
}
