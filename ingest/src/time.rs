//! Timestamp parsing for the formats proxies write, to µs since the Unix epoch (UTC).
//!
//! Hand-written rather than a date library: these run once per log line on the hot path and
//! accept exactly the layouts the proxies emit.
//!
//! Every parser here rejects (returns `None`) what no real clock writes: a day past its
//! month's end (`2019-02-30`, `2019-04-31`; February has 29 days in leap years by the
//! Gregorian rule: divisible by 4, except centuries not divisible by 400), hours past 23,
//! minutes past 59, seconds past 60 (a leap second), and UTC offsets past ±14:00 or with
//! minutes past 59 (RFC 3339 §5.6 limits the minutes; ±14:00 is the widest offset of any
//! real zone, `Pacific/Kiritimati`). A time before 1970-01-01T00:00:00Z is rejected as well:
//! a flow record's `start_us` counts µs since the Unix epoch and is never negative.

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

/// Days in `month` (1..=12) of `year`, February by the Gregorian leap-year rule.
fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// µs since the epoch of a local date and time, before its UTC offset is applied; `None` for
/// a date or time that does not exist (see the module docs) or a year before 1970.
fn to_us(year: i64, month: u32, day: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    if year < 1970 || !(1..=12).contains(&month) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400) + (h * 3600 + mi * 60 + s) as i64) * 1_000_000)
}

/// Applies a UTC offset of `sign` (`+`/`-`) `hh`:`mm` to local µs: UTC = local − offset.
/// `None` for an offset past ±14:00, minutes past 59, or a result before the epoch.
fn apply_offset(local_us: i64, sign: u8, hh: [u8; 2], mm: [u8; 2]) -> Option<i64> {
    let h = digits(&hh)?;
    let m = digits(&mm)?;
    if m > 59 || h > 14 || (h == 14 && m > 0) {
        return None;
    }
    let off_us = i64::from(h * 3600 + m * 60) * 1_000_000;
    let utc = match sign {
        b'+' => local_us - off_us,
        b'-' => local_us + off_us,
        _ => return None,
    };
    (utc >= 0).then_some(utc)
}

/// Parses RFC 3339 / ISO 8601 as Envoy's `%START_TIME%` and NGINX's `$time_iso8601` write
/// it: `2019-04-06T06:20:05.972Z`, `2019-04-06T06:20:05+02:00`, fraction of any length up to
/// ns (truncated to µs). Returns µs since the epoch, UTC; `None` for a malformed or
/// impossible time, an offset past ±14:00, or a time before 1970 (see the module docs).
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
        [sign, h1, h2, b':', m1, m2] => apply_offset(us, *sign, [*h1, *h2], [*m1, *m2]),
        _ => None,
    }
}

/// Parses NGINX's `$time_local` (Common Log Format): `07/Dec/2016:11:05:07 +0100`.
/// Returns µs since the epoch, UTC; `None` as for [`parse_rfc3339_us`].
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
    apply_offset(us, s[21], [s[22], s[23]], [s[24], s[25]])
}

/// Parses a decimal number of seconds with up to 6 fraction digits (`0.001`, `12`, `1.5`)
/// as NGINX writes `$request_time`, `$upstream_response_time` and `$msec`. Returns µs.
pub fn parse_seconds_us(s: &[u8]) -> Option<u64> {
    let (int, frac) = match crate::swar::find_byte(b'.', s) {
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
    fn impossible_dates_are_rejected() {
        // February has 28 days in 2019 (not divisible by 4), April always 30.
        assert_eq!(parse_rfc3339_us(b"2019-02-30T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_us(b"2019-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_us(b"2019-04-31T00:00:00Z"), None);
        assert_eq!(parse_clf_us(b"31/Apr/2019:00:00:00 +0000"), None);
        assert_eq!(parse_clf_us(b"29/Feb/1900:00:00:00 +0000"), None);
        assert_eq!(parse_rfc3339_us(b"2019-04-00T00:00:00Z"), None);
        // Leap years by the Gregorian rule: 2020 (÷4) and 2000 (÷400) have a Feb 29th,
        // 2100 (÷100, not ÷400) has not.
        // 2020-02-29 = day 18 321 since 1970-01-01 (18 262 for 2020-01-01 + 31 + 28).
        assert_eq!(
            parse_rfc3339_us(b"2020-02-29T00:00:00Z"),
            Some(18_321 * 86_400 * 1_000_000)
        );
        // 2000-02-29 = day 11 016 (2000-03-01 is day 11 017).
        assert_eq!(
            parse_rfc3339_us(b"2000-02-29T00:00:00Z"),
            Some(11_016 * 86_400 * 1_000_000)
        );
        assert_eq!(parse_rfc3339_us(b"2100-02-29T00:00:00Z"), None);
        assert_eq!(parse_clf_us(b"29/Feb/2100:00:00:00 +0000"), None);
        // The last day of each 31-day month is fine: 2019-12-31 = day 18 261.
        assert_eq!(
            parse_clf_us(b"31/Dec/2019:00:00:00 +0000"),
            Some(18_261 * 86_400 * 1_000_000)
        );
    }

    #[test]
    fn offsets_beyond_fourteen_hours_or_sixty_minutes_are_rejected() {
        assert_eq!(parse_rfc3339_us(b"2019-04-06T06:20:05+99:99"), None);
        assert_eq!(parse_rfc3339_us(b"2019-04-06T06:20:05+14:01"), None);
        assert_eq!(parse_rfc3339_us(b"2019-04-06T06:20:05-15:00"), None);
        assert_eq!(parse_rfc3339_us(b"2019-04-06T06:20:05+05:60"), None);
        assert_eq!(parse_clf_us(b"07/Dec/2016:11:05:07 +9999"), None);
        assert_eq!(parse_clf_us(b"07/Dec/2016:11:05:07 -2400"), None);
        assert_eq!(parse_clf_us(b"07/Dec/2016:11:05:07 +0160"), None);
        // ±14:00 (Line Islands, Kiribati) is the widest real offset: 2019-04-06T06:20:05Z
        // (1 554 531 605 s) is 20:20:05 at +14:00 and 16:20:05 the day before at -14:00.
        assert_eq!(
            parse_rfc3339_us(b"2019-04-06T20:20:05+14:00"),
            Some(1_554_531_605_000_000)
        );
        assert_eq!(
            parse_clf_us(b"05/Apr/2019:16:20:05 -1400"),
            Some(1_554_531_605_000_000)
        );
        // +05:45 (Nepal): 12:05:05 local = 06:20:05Z.
        assert_eq!(
            parse_rfc3339_us(b"2019-04-06T12:05:05+05:45"),
            Some(1_554_531_605_000_000)
        );
    }

    #[test]
    fn times_before_the_unix_epoch_are_rejected() {
        assert_eq!(parse_rfc3339_us(b"1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_clf_us(b"31/Dec/1969:23:59:59 +0000"), None);
        assert_eq!(parse_rfc3339_us(b"0000-01-01T00:00:00Z"), None);
        // 1970-01-01T00:30:00+01:00 is 1969-12-31T23:30:00Z.
        assert_eq!(parse_rfc3339_us(b"1970-01-01T00:30:00+01:00"), None);
        assert_eq!(parse_rfc3339_us(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_clf_us(b"01/Jan/1970:00:00:01 +0000"), Some(1_000_000));
    }

    proptest::proptest! {
        /// A date exists exactly when its day is below the month's length, computed
        /// independently as the distance between two first-of-month day numbers.
        #[test]
        fn a_date_parses_iff_it_exists(y in 1970i64..2500, m in 1u32..=12, d in 0u32..=32) {
            let first = days_from_civil(y, m, 1);
            let next = if m == 12 { days_from_civil(y + 1, 1, 1) } else { days_from_civil(y, m + 1, 1) };
            let exists = d >= 1 && i64::from(d) <= next - first;
            let text = format!("{y:04}-{m:02}-{d:02}T00:00:00Z");
            let want = exists.then(|| (first + i64::from(d) - 1) * 86_400 * 1_000_000);
            proptest::prop_assert_eq!(parse_rfc3339_us(text.as_bytes()), want);
        }
    }

    #[test]
    fn epoch_day_zero() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
