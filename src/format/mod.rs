//! Rendering a [`MappedEvent`] as a syslog+LEEF line or an ECS JSON document. Pure.

pub mod ecs;
pub mod leef;
pub mod syslog;

use crate::json::Text;

use crate::mapping::family::RECORD_ID_KEY;
use crate::mapping::value::Val;
use crate::mapping::MappedEvent;

/// How events are rendered.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub leef: leef::LeefOptions,
    pub syslog: syslog::SyslogOptions,
}

/// Appends the syslog header and LEEF event (no line terminator; framing is the output's job).
pub fn render_leef(ev: &MappedEvent, opts: &RenderOptions, out: &mut Vec<u8>) {
    render_leef_with(ev, opts, ev.leef.iter().map(|(k, v)| (*k, v)), out);
}

/// The syslog header, the LEEF header, `cat`, `devTime`, then `attrs`.
// The identity `map` below is what lets the attributes' lifetimes shorten to those of the local
// `cat` and `devTime` values (an iterator's item type does not coerce by itself).
#[allow(clippy::map_identity)]
fn render_leef_with<'k, 'v, 'a: 'v>(
    ev: &MappedEvent,
    opts: &RenderOptions,
    attrs: impl Iterator<Item = (&'k str, &'v Val<'a>)>,
    out: &mut Vec<u8>,
) {
    let mut header = String::with_capacity(64);
    syslog::write_header(&opts.syslog, ev.time, ev.severity, &mut header);
    out.extend_from_slice(header.as_bytes());
    let cat = Val::Str(Text::from(ev.category.as_ref()));
    let dev_time = ev.time.map(|t| Val::Int(t.unix_millis()));
    let head = std::iter::once(("cat", &cat)).chain(dev_time.as_ref().map(|t| ("devTime", t)));
    leef::write_leef(
        &opts.leef,
        ["Microsoft", ev.product, ev.version, &ev.event_id],
        head.chain(attrs.map(|(k, v)| (k, v))),
        out,
    );
    // The record id last, written straight from the number (hex needs no escaping).
    out.push(opts.leef.delimiter_byte());
    out.extend_from_slice(RECORD_ID_KEY.as_bytes());
    out.push(b'=');
    let id = ev.record_id;
    for shift in (0..32).rev() {
        out.push(b"0123456789abcdef"[((id >> (shift * 4)) & 0xf) as usize]);
    }
}

/// How a LEEF event was made to fit an output's maximum message size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    /// It fitted as it was.
    Whole,
    /// The longest attribute values were shortened; the event's last attribute, `truncated`,
    /// lists their keys (`truncated=ProcessCommandLine,InitiatingProcessCommandLine`).
    Trimmed(Vec<String>),
    /// Even with every value that may be shortened emptied, the header, `cat`, `devTime`, `sev`
    /// and the keys exceed the limit: nothing was written.
    TooLarge,
}

/// Like [`render_leef`], within `max` bytes. Policy for an oversized event: the longest values
/// are cut first, all to one common length (so a huge command line gives way before a short
/// user name), on character boundaries and never inside an escape; keys, the header, `cat`,
/// `devTime` and `sev` are never cut, and the event says what was cut. Deterministic: the same
/// event and limit always give the same bytes.
pub fn render_leef_within(
    ev: &MappedEvent,
    opts: &RenderOptions,
    max: usize,
    out: &mut Vec<u8>,
) -> Fit {
    let start = out.len();
    render_leef(ev, opts, out);
    let len = out.len() - start;
    if len <= max {
        return Fit::Whole;
    }
    out.truncate(start);
    let delim = opts.leef.delimiter_byte();
    // Escaped length of each value that may be cut.
    let mut scratch = Vec::new();
    let sizes: Vec<(usize, usize)> = ev
        .leef
        .iter()
        .enumerate()
        .filter(|(_, (k, v))| *k != "sev" && matches!(v, Val::Str(_)))
        .map(|(i, (_, v))| {
            scratch.clear();
            leef::escape(&v.to_text(), delim, &mut scratch);
            (i, scratch.len())
        })
        .collect();
    let keys_marker =
        |keys: &[&str]| "\ttruncated=".len() + keys.iter().map(|k| k.len() + 1).sum::<usize>();
    // The common cap: the largest length such that cutting every longer value to it saves
    // enough, counting the marker that names the cut keys.
    let mut candidates: Vec<usize> = sizes.iter().map(|&(_, n)| n).collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    candidates.push(0);
    candidates.dedup();
    let mut cap = None;
    for &c in &candidates {
        let cut: Vec<&str> = sizes
            .iter()
            .filter(|&&(_, n)| n > c)
            .map(|&(i, _)| ev.leef[i].0)
            .collect();
        let saved: usize = sizes.iter().map(|&(_, n)| n.saturating_sub(c)).sum();
        let needed = len - max + keys_marker(&cut);
        if saved >= needed {
            // Raise the cap as far as the savings allow (between c and the next length up).
            let count = cut.len();
            let slack = saved - needed;
            cap = Some(c + slack.checked_div(count).unwrap_or(0));
            break;
        }
    }
    let Some(cap) = cap else {
        return Fit::TooLarge;
    };
    let mut cut_keys = Vec::new();
    let mut attrs: Vec<(&str, Val)> = Vec::with_capacity(ev.leef.len() + 2);
    for (i, (k, v)) in ev.leef.iter().enumerate() {
        let too_long = sizes.iter().any(|&(j, n)| j == i && n > cap);
        if too_long {
            cut_keys.push(k.to_string());
            attrs.push((
                k,
                Val::Str(Text::from(leef::prefix_within(&v.to_text(), delim, cap))),
            ));
        } else {
            attrs.push((k, v.clone()));
        }
    }
    attrs.push(("truncated", Val::Str(Text::from(cut_keys.join(",")))));
    render_leef_with(ev, opts, attrs.iter().map(|(k, v)| (*k, v)), out);
    if out.len() - start > max {
        out.truncate(start);
        return Fit::TooLarge;
    }
    Fit::Trimmed(cut_keys)
}

/// Appends the ECS JSON document (no line terminator).
pub fn render_ecs(ev: &MappedEvent, out: &mut Vec<u8>) {
    ev.plan.write(&ev.ecs, &ev.ecs_dynamic, out);
}
