//! Event timestamps as Defender writes them, parsed without a date library.
//!
//! Written here rather than taken from `chrono`/`time` because the accepted grammar is the quirk
//! list itself (0-9 fraction digits, a missing zone meaning UTC, a space instead of `T`), and the
//! three renderings we need (ISO milliseconds, epoch milliseconds, the RFC 3164 stamp) are a few
//! lines each.

/// An instant in UTC, nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(i64);

const NANOS_PER_SEC: i64 = 1_000_000_000;
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl Timestamp {
    pub fn from_unix_nanos(n: i64) -> Self {
        Timestamp(n)
    }

    pub fn unix_nanos(self) -> i64 {
        self.0
    }

    pub fn unix_millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// Parses `YYYY-MM-DD[T| ]hh:mm:ss[.f{1,9}][Z|z|±hh:mm|±hhmm]`; no zone means UTC.
    pub fn parse(s: &str) -> Option<Timestamp> {
        let b = s.trim().as_bytes();
        if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        if !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        let year = digits(&b[0..4])?;
        let month = digits(&b[5..7])?;
        let day = digits(&b[8..10])?;
        let hour = digits(&b[11..13])?;
        let min = digits(&b[14..16])?;
        let sec = digits(&b[17..19])?;
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        if hour > 23 || min > 59 || sec > 60 {
            return None;
        }
        let mut i = 19;
        let mut nanos = 0i64;
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 9 {
                    nanos = nanos * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            let n = i - start;
            if n == 0 {
                return None;
            }
            for _ in n..9 {
                nanos *= 10;
            }
        }
        let offset_secs = match &b[i..] {
            [] | [b'Z'] | [b'z'] => 0,
            [sign @ (b'+' | b'-'), rest @ ..] => {
                let (h, m) = match rest {
                    [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                        (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?)
                    }
                    [h1, h2] => (digits(&[*h1, *h2])?, 0),
                    _ => return None,
                };
                let off = h * 3600 + m * 60;
                if *sign == b'+' {
                    off
                } else {
                    -off
                }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
        Some(Timestamp(
            secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)?,
        ))
    }

    fn parts(self) -> (i64, i64, i64, i64, i64, i64, i64) {
        let secs = self.0.div_euclid(NANOS_PER_SEC);
        let nanos = self.0.rem_euclid(NANOS_PER_SEC);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        (y, m, d, sod / 3600, sod % 3600 / 60, sod % 60, nanos)
    }

    /// `2022-11-07T17:07:42.025Z`: milliseconds, truncated, as Elastic's pipelines write them.
    pub fn write_iso_millis(self, out: &mut String) {
        let mut bytes = Vec::with_capacity(24);
        self.write_iso_millis_bytes(&mut bytes);
        out.push_str(&String::from_utf8_lossy(&bytes));
    }

    /// Same as [`Timestamp::write_iso_millis`], into a byte buffer (the formatters' hot path).
    pub fn write_iso_millis_bytes(self, out: &mut Vec<u8>) {
        let (y, mo, d, h, mi, s, n) = self.parts();
        if !(0..=9999).contains(&y) {
            use std::io::Write as _;
            let _ = write!(
                out,
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
                n / 1_000_000
            );
            return;
        }
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (0..width).rev() {
                buf[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, mo);
        put(8, 2, d);
        put(11, 2, h);
        put(14, 2, mi);
        put(17, 2, s);
        put(20, 3, n / 1_000_000);
        out.extend_from_slice(&buf);
    }

    pub fn iso_millis(self) -> String {
        let mut s = String::with_capacity(24);
        self.write_iso_millis(&mut s);
        s
    }

    /// `Nov  7 17:07:42`: the RFC 3164 stamp (space-padded day, no year, UTC).
    pub fn write_rfc3164(self, out: &mut String) {
        let (_, mo, d, h, mi, s, _) = self.parts();
        let digit = |v: i64| char::from(b'0' + (v % 10) as u8);
        let two = |out: &mut String, v: i64| {
            out.push(digit(v / 10));
            out.push(digit(v));
        };
        out.push_str(MONTHS[(mo - 1) as usize]);
        out.push(' ');
        if d < 10 {
            out.push(' ');
            out.push(digit(d));
        } else {
            two(out, d);
        }
        out.push(' ');
        two(out, h);
        out.push(':');
        two(out, mi);
        out.push(':');
        two(out, s);
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days (public domain algorithms).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_digits_zero_to_nine_and_zones() {
        let base = Timestamp::parse("2022-11-07T17:07:42Z").unwrap();
        assert_eq!(base.unix_millis(), 1_667_840_862_000);
        for (s, extra_nanos) in [
            ("2022-11-07T17:07:42.0259186Z", 25_918_600),
            ("2022-11-07T17:07:42.66Z", 660_000_000),
            ("2022-11-07T17:07:42.322571Z", 322_571_000),
            ("2022-11-07T17:07:42.123456789Z", 123_456_789),
            ("2022-11-07T17:07:42.5", 500_000_000),
            ("2022-11-07 17:07:42", 0),
            ("2022-11-07T18:07:42+01:00", 0),
            ("2022-11-07T16:07:42-0100", 0),
        ] {
            let t = Timestamp::parse(s).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(t.unix_nanos() - base.unix_nanos(), extra_nanos, "{s}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "2022-13-01T00:00:00Z",
            "2022-02-30T00:00:00Z",
            "2022-11-07T17:07:42.Z",
        ] {
            assert!(Timestamp::parse(s).is_none(), "{s}");
        }
        assert!(Timestamp::parse("2022-11-07T17:07:42Zjunk").is_none());
        assert!(Timestamp::parse("20221107T170742Z").is_none());
    }

    #[test]
    fn renders_iso_millis_truncated_and_rfc3164() {
        let t = Timestamp::parse("2024-02-29T03:04:05.9999999Z").unwrap();
        assert_eq!(t.iso_millis(), "2024-02-29T03:04:05.999Z");
        let mut s = String::new();
        t.write_rfc3164(&mut s);
        assert_eq!(s, "Feb 29 03:04:05");
        let old = Timestamp::parse("1969-12-31T23:59:59.5Z").unwrap();
        assert_eq!(old.iso_millis(), "1969-12-31T23:59:59.500Z");
        assert_eq!(old.unix_millis(), -500);
    }
}
