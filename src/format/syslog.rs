//! Syslog headers in front of LEEF. The timestamp is the event's, never the clock's, and the
//! host is the configured log source identifier, never the machine's name: QRadar routes on it,
//! and output stays byte-stable.

use crate::mapping::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFormat {
    /// `<PRI>Mmm dd hh:mm:ss HOST ` (QRadar's default expectation).
    Rfc3164,
    /// `<PRI>1 TIMESTAMP HOST APP-NAME - - - `.
    Rfc5424,
    /// Bare LEEF.
    None,
}

#[derive(Debug, Clone)]
pub struct SyslogOptions {
    pub format: HeaderFormat,
    /// Syslog facility (0-23); 1 = user-level.
    pub facility: u8,
    /// The header HOST: QRadar's log source identifier.
    pub log_source_id: String,
}

pub const APP_NAME: &str = "defender-dsm";

impl Default for SyslogOptions {
    fn default() -> Self {
        SyslogOptions {
            format: HeaderFormat::Rfc3164,
            facility: 1,
            log_source_id: APP_NAME.to_string(),
        }
    }
}

impl SyslogOptions {
    /// A log source identifier QRadar can route on: printable ASCII, no spaces, at most 255.
    pub fn check_log_source_id(id: &str) -> Result<(), String> {
        if id.is_empty() || id.len() > 255 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("log source identifier `{id}` must be 1-255 printable ASCII characters without spaces"));
        }
        if id.contains(':') && id.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(
                "QRadar cannot route on an IPv6 address in the syslog header; use a name".into(),
            );
        }
        Ok(())
    }
}

/// Syslog severity from QRadar's 1-10 scale.
fn syslog_severity(qradar: u8) -> u8 {
    match qradar {
        9.. => 2,
        7..=8 => 3,
        5..=6 => 4,
        3..=4 => 5,
        _ => 6,
    }
}

/// Writes the header (with its trailing space). A record without any time gets the Unix epoch
/// in RFC 3164 (which has no empty value) and `-` in RFC 5424.
pub fn write_header(opts: &SyslogOptions, time: Option<Timestamp>, severity: u8, out: &mut String) {
    let pri = u16::from(opts.facility) * 8 + u16::from(syslog_severity(severity));
    let push_pri = |out: &mut String| {
        out.push('<');
        if pri >= 100 {
            out.push(char::from(b'0' + (pri / 100) as u8));
        }
        if pri >= 10 {
            out.push(char::from(b'0' + (pri / 10 % 10) as u8));
        }
        out.push(char::from(b'0' + (pri % 10) as u8));
        out.push('>');
    };
    match opts.format {
        HeaderFormat::None => {}
        HeaderFormat::Rfc3164 => {
            push_pri(out);
            time.unwrap_or(Timestamp::from_unix_nanos(0))
                .write_rfc3164(out);
            out.push(' ');
            out.push_str(&opts.log_source_id);
            out.push(' ');
        }
        HeaderFormat::Rfc5424 => {
            push_pri(out);
            out.push_str("1 ");
            match time {
                Some(t) => t.write_iso_millis(out),
                None => out.push('-'),
            }
            out.push(' ');
            out.push_str(&opts.log_source_id);
            out.push(' ');
            out.push_str(APP_NAME);
            out.push_str(" - - - ");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let t = Timestamp::parse("2022-11-07T17:07:42.0259186Z");
        let mut s = String::new();
        write_header(&SyslogOptions::default(), t, 3, &mut s);
        assert_eq!(s, "<13>Nov  7 17:07:42 defender-dsm ");
        let mut s = String::new();
        let o = SyslogOptions {
            format: HeaderFormat::Rfc5424,
            facility: 16,
            log_source_id: "m365d-tenant".into(),
        };
        write_header(&o, t, 9, &mut s);
        assert_eq!(
            s,
            "<130>1 2022-11-07T17:07:42.025Z m365d-tenant defender-dsm - - - "
        );
        let mut s = String::new();
        write_header(&o, None, 1, &mut s);
        assert_eq!(s, "<134>1 - m365d-tenant defender-dsm - - - ");
    }

    #[test]
    fn log_source_ids() {
        assert!(SyslogOptions::check_log_source_id("defender-dsm").is_ok());
        assert!(SyslogOptions::check_log_source_id("has space").is_err());
        assert!(SyslogOptions::check_log_source_id("::1").is_err());
        assert!(SyslogOptions::check_log_source_id("").is_err());
    }
}
