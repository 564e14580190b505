//! RFC 3339 times for people, beside the µs timestamps of the JSON documents.
//!
//! Every timestamp graywatch writes in a JSON document is an integer of µs since the Unix
//! epoch (`start_us`, `issued_at_us`, `at_us`, …): exact, and cheap to compare. Next to each,
//! the document carries the same instant as an RFC 3339 UTC time for people (`start`,
//! `issued_at`, `at`, …): `"start_us": 1764770400000000` comes with
//! `"start": "2025-12-03T14:00:00Z"`. The text is derived: readers take the µs value, and
//! refuse a document whose text names another instant (so an unsigned text can't say
//! something its signed µs value doesn't; see `RemediationCommand::canonical_json`). A
//! document without the text is read as well. Binary encodings (checkpoints, the repartition
//! topic) leave the text out: only human-readable serializers
//! ([`serde::Serializer::is_human_readable`]) write it.

use std::fmt;

use serde::{Serialize, Serializer};

/// µs since the Unix epoch (UTC), displayed (and serialized) as an RFC 3339 time: whole
/// seconds as `2025-12-03T14:00:00Z`, others with six fractional digits (µs) as
/// `2025-12-03T14:00:00.250000Z`. Years outside 0000 to 9999, which RFC 3339 can't write,
/// are written with a sign and at least five digits (ISO 8601's expanded form, e.g.
/// `+10000-01-01T00:00:00Z`), never a panic.
///
/// ```
/// use schemas::time::Rfc3339;
/// assert_eq!(Rfc3339(1_764_770_400_000_000).to_string(), "2025-12-03T14:00:00Z");
/// assert_eq!(Rfc3339(1_764_770_400_250_000).to_string(), "2025-12-03T14:00:00.250000Z");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rfc3339(pub i64);

/// The longest text [`Rfc3339::common`] writes: `9999-12-31T23:59:59.999999Z`.
const COMMON_LEN: usize = 27;

/// The fields of an instant: year, month, day, second of the day, µs of the second.
struct Parts {
    year: i64,
    month: u32,
    day: u32,
    second: u32,
    micros: u32,
}

impl Rfc3339 {
    fn parts(self) -> Parts {
        let secs = self.0.div_euclid(1_000_000);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        Parts {
            year,
            month,
            day,
            second: secs.rem_euclid(86_400) as u32,
            micros: self.0.rem_euclid(1_000_000) as u32,
        }
    }

    /// The text of an instant in the years 0 to 9999 (nearly every instant a log holds),
    /// written digit by digit into `buf` without the formatting machinery (measured by
    /// `benches/peers.sh`: the windows' timestamps were a tenth of an NGINX replay); `None`
    /// for other years, which [`fmt::Display`] writes with a sign.
    fn common<'b>(p: &Parts, buf: &'b mut [u8; COMMON_LEN]) -> Option<&'b str> {
        fn put(buf: &mut [u8], mut v: u32) {
            for b in buf.iter_mut().rev() {
                *b = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        let year = u32::try_from(p.year).ok().filter(|y| *y <= 9999)?;
        let s = p.second;
        *buf = *b"0000-00-00T00:00:00.000000Z";
        put(&mut buf[0..4], year);
        put(&mut buf[5..7], p.month);
        put(&mut buf[8..10], p.day);
        put(&mut buf[11..13], s / 3600);
        put(&mut buf[14..16], s / 60 % 60);
        put(&mut buf[17..19], s % 60);
        let len = if p.micros == 0 {
            buf[19] = b'Z';
            20
        } else {
            put(&mut buf[20..26], p.micros);
            COMMON_LEN
        };
        std::str::from_utf8(&buf[..len]).ok()
    }

    /// Appends the instant as a JSON string, the bytes its `Serialize` gives through
    /// serde_json (none of its characters needs escaping).
    pub(crate) fn write_json(self, out: &mut Vec<u8>) {
        match Rfc3339::common(&self.parts(), &mut [0; COMMON_LEN]) {
            Some(text) => {
                out.push(b'"');
                out.extend_from_slice(text.as_bytes());
                out.push(b'"');
            }
            None => serde_json::to_writer(&mut *out, &self).expect("an instant serializes"),
        }
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.parts();
        if let Some(text) = Rfc3339::common(&p, &mut [0; COMMON_LEN]) {
            return f.write_str(text);
        }
        let Parts {
            year,
            month,
            day,
            second: s,
            micros,
        } = p;
        write!(
            f,
            "{year:+06}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            s / 3600,
            s / 60 % 60,
            s % 60
        )?;
        if micros != 0 {
            write!(f, ".{micros:06}")?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match Rfc3339::common(&self.parts(), &mut [0; COMMON_LEN]) {
            Some(text) => s.serialize_str(text),
            None => s.collect_str(self),
        }
    }
}

/// The (year, month, day) of the proleptic Gregorian calendar `days` days after 1970-01-01
/// (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms", `civil_from_days`). Exact for
/// every day an `i64` of µs can reach.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The text serde writes when a serializer is human-readable, else nothing (a field with
/// `skip_serializing_if = "Option::is_none"`).
pub(crate) fn beside<S: Serializer>(s: &S, us: i64) -> Option<Rfc3339> {
    s.is_human_readable().then_some(Rfc3339(us))
}

/// Checks that the RFC 3339 text `field` a document gave, if any, is the instant of its µs
/// field (as [`Rfc3339`] writes it); `Err` names both.
pub(crate) fn agrees(field: &str, text: Option<&str>, us: i64) -> Result<(), String> {
    match text {
        Some(t) if t != Rfc3339(us).to_string() => Err(format!(
            "{field} {t:?} is not {field}_us {us} ({})",
            Rfc3339(us)
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_instants() {
        for (us, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1, "1970-01-01T00:00:00.000001Z"),
            (-1, "1969-12-31T23:59:59.999999Z"),
            (951_782_400_000_000, "2000-02-29T00:00:00Z"), // a leap day of a century
            (1_674_981_740_000_000, "2023-01-29T08:42:20Z"),
            (1_767_572_530_500_000, "2026-01-05T00:22:10.500000Z"),
            (253_402_300_799_000_000, "9999-12-31T23:59:59Z"),
            (253_402_300_800_000_000, "+10000-01-01T00:00:00Z"),
            (-62_167_219_200_000_000, "0000-01-01T00:00:00Z"),
            (-62_167_219_200_000_001, "-00001-12-31T23:59:59.999999Z"),
        ] {
            assert_eq!(Rfc3339(us).to_string(), text, "{us}");
        }
        // the extremes don't overflow
        assert_eq!(
            Rfc3339(i64::MAX).to_string(),
            "+294247-01-10T04:00:54.775807Z"
        );
        assert_eq!(
            Rfc3339(i64::MIN).to_string(),
            "-290308-12-21T19:59:05.224192Z"
        );
    }

    #[test]
    fn agrees_names_both_values() {
        assert_eq!(agrees("at", None, 5), Ok(()));
        assert_eq!(agrees("at", Some("1970-01-01T00:00:00.000005Z"), 5), Ok(()));
        assert_eq!(
            agrees("at", Some("1970-01-01T00:00:00Z"), 5).unwrap_err(),
            "at \"1970-01-01T00:00:00Z\" is not at_us 5 (1970-01-01T00:00:00.000005Z)"
        );
    }

    proptest! {
        /// The same instant as humantime's RFC 3339 formatter (µs digits), whole seconds
        /// without a fraction.
        #[test]
        fn agrees_with_humantime(us in 0i64..253_402_300_800_000_000) {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us as u64);
            let reference = humantime::format_rfc3339_micros(t).to_string();
            let expected = if us % 1_000_000 == 0 {
                reference.replace(".000000Z", "Z")
            } else {
                reference
            };
            prop_assert_eq!(Rfc3339(us).to_string(), expected.clone());
            prop_assert_eq!(serde_json::to_string(&Rfc3339(us)).unwrap(), format!("{expected:?}"));
        }
    }
}
