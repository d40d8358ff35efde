//! Rendering a [`MappedEvent`] as a syslog+LEEF line or an ECS JSON document. Pure.

pub mod ecs;
pub mod leef;
pub mod syslog;

use std::borrow::Cow;

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
    let mut header = String::with_capacity(64);
    syslog::write_header(&opts.syslog, ev.time, ev.severity, &mut header);
    out.extend_from_slice(header.as_bytes());
    let cat = Val::Str(Cow::Borrowed(ev.category.as_ref()));
    let dev_time = ev.time.map(|t| Val::Int(t.unix_millis()));
    let head = std::iter::once(("cat", &cat)).chain(dev_time.as_ref().map(|t| ("devTime", t)));
    let attrs = head.chain(ev.leef.iter().map(|(k, v)| (*k, v)));
    leef::write_leef(
        &opts.leef,
        ["Microsoft", ev.product, ev.version, &ev.event_id],
        attrs,
        out,
    );
}

/// Appends the ECS JSON document (no line terminator).
pub fn render_ecs(ev: &MappedEvent, out: &mut Vec<u8>) {
    ev.plan.write(&ev.ecs, &ev.ecs_dynamic, out);
}
