//! Timestamp parsing for the formats proxies write, to µs since the Unix epoch (UTC).
//!
//! Hand-written rather than a date library: these run once per log line on the hot path and
//! accept exactly the layouts the proxies emit.

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil` algorithm, <http://howardhinnant.github.io/date_algorithms.html>).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 {
        return None;
    }
    let mut v = 0u32;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (b - b'0') as u32;
    }
    Some(v)
}

fn to_us(year: i64, month: u32, day: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400) + (h * 3600 + mi * 60 + s) as i64) * 1_000_000)
}

/// Parses RFC 3339 / ISO 8601 as Envoy's `%START_TIME%` and NGINX's `$time_iso8601` write
/// it: `2019-04-06T06:20:05.972Z`, `2019-04-06T06:20:05+02:00`, fraction of any length up to
/// ns (truncated to µs). Returns µs since the epoch, UTC.
pub fn parse_rfc3339_us(s: &[u8]) -> Option<i64> {
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't' | b' ') {
        return None;
    }
    if s[13] != b':' || s[16] != b':' {
        return None;
    }
    let year = digits(&s[0..4])? as i64;
    let month = digits(&s[5..7])?;
    let day = digits(&s[8..10])?;
    let h = digits(&s[11..13])?;
    let mi = digits(&s[14..16])?;
    let sec = digits(&s[17..19])?;
    let mut us = to_us(year, month, day, h, mi, sec)?;
    let mut rest = &s[19..];
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let frac = &rest[1..1 + n];
        let mut f = 0i64;
        for i in 0..6 {
            f = f * 10 + frac.get(i).map_or(0, |b| (b - b'0') as i64);
        }
        us += f;
        rest = &rest[1 + n..];
    }
    match rest {
        [b'Z' | b'z'] => Some(us),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let off = digits(&[*h1, *h2])? as i64 * 3600 + digits(&[*m1, *m2])? as i64 * 60;
            Some(if *sign == b'+' {
                us - off * 1_000_000
            } else {
                us + off * 1_000_000
            })
        }
        _ => None,
    }
}

/// Parses NGINX's `$time_local` (Common Log Format): `07/Dec/2016:11:05:07 +0100`.
/// Returns µs since the epoch, UTC.
pub fn parse_clf_us(s: &[u8]) -> Option<i64> {
    if s.len() != 26 || s[2] != b'/' || s[6] != b'/' || s[11] != b':' || s[20] != b' ' {
        return None;
    }
    let day = digits(&s[0..2])?;
    let month = match &s[3..6] {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    };
    let year = digits(&s[7..11])? as i64;
    let h = digits(&s[12..14])?;
    let mi = digits(&s[15..17])?;
    let sec = digits(&s[18..20])?;
    let us = to_us(year, month, day, h, mi, sec)?;
    let off = digits(&s[22..24])? as i64 * 3600 + digits(&s[24..26])? as i64 * 60;
    match s[21] {
        b'+' => Some(us - off * 1_000_000),
        b'-' => Some(us + off * 1_000_000),
        _ => None,
    }
}

/// Parses a decimal number of seconds with up to 6 fraction digits (`0.001`, `12`, `1.5`)
/// as NGINX writes `$request_time`, `$upstream_response_time` and `$msec`. Returns µs.
pub fn parse_seconds_us(s: &[u8]) -> Option<u64> {
    let (int, frac) = match memchr::memchr(b'.', s) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &b""[..]),
    };
    if int.is_empty() || int.len() > 12 || frac.len() > 9 {
        return None;
    }
    let mut v = 0u64;
    for &b in int {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (b - b'0') as u64;
    }
    let mut f = 0u64;
    for i in 0..6 {
        let d = match frac.get(i) {
            Some(b) if b.is_ascii_digit() => (b - b'0') as u64,
            Some(_) => return None,
            None => 0,
        };
        f = f * 10 + d;
    }
    if frac.iter().skip(6).any(|b| !b.is_ascii_digit()) {
        return None;
    }
    Some(v * 1_000_000 + f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_millis_and_zulu() {
        // 2019-04-06T06:20:05.972Z, checked with `date -u -d ... +%s` = 1554531605
        assert_eq!(
            parse_rfc3339_us(b"2019-04-06T06:20:05.972Z"),
            Some(1_554_531_605_972_000)
        );
        assert_eq!(
            parse_rfc3339_us(b"2019-04-06T08:20:05.972+02:00"),
            Some(1_554_531_605_972_000)
        );
        assert_eq!(parse_rfc3339_us(b"2019-13-06T06:20:05Z"), None);
        assert_eq!(parse_rfc3339_us(b"2019-04-06T06:20:05"), None);
    }

    #[test]
    fn clf_with_offset() {
        // 07/Dec/2016:11:05:07 +0100 = 2016-12-07T10:05:07Z = 1481105107
        assert_eq!(
            parse_clf_us(b"07/Dec/2016:11:05:07 +0100"),
            Some(1_481_105_107_000_000)
        );
        assert_eq!(parse_clf_us(b"07/Dez/2016:11:05:07 +0100"), None);
    }

    #[test]
    fn seconds_to_us() {
        assert_eq!(parse_seconds_us(b"0.001"), Some(1_000));
        assert_eq!(parse_seconds_us(b"12"), Some(12_000_000));
        assert_eq!(parse_seconds_us(b"1.5"), Some(1_500_000));
        assert_eq!(parse_seconds_us(b"-"), None);
        assert_eq!(parse_seconds_us(b"1.x"), None);
    }

    #[test]
    fn epoch_day_zero() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
