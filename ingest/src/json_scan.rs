//! An allocation-free cursor over one flat JSON object, for the fast paths of the JSON formats
//! (`flow-json`, Envoy `json_format`).
//!
//! It reads the shape proxies and graywatch write (strings without escapes, integers, plain
//! decimals, `true`/`false`/`null`) and answers `None` for anything else: an escape, an object
//! or array where the caller expects a scalar, a syntax error. The caller then reads the line
//! again with serde_json, which gives the answer and the error message, so the fast path never
//! decides a line differently (each format's property test checks it).

use crate::swar::{below, splat};

/// A cursor over a JSON text: every method returns `None` for what it does not read.
pub(crate) struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

/// The keys of an object as last seen, each spelled `"key":`, with the field it sets (`None`:
/// a key the caller does not know). A writer puts its keys in the same order on every line,
/// so [`KeyOrder::key`] first checks the key it expects at each position, a comparison of a
/// few bytes, and reads (and remembers) the key only when the line differs.
#[derive(Debug, Default, Clone)]
pub(crate) struct KeyOrder(Vec<(Box<[u8]>, Option<u8>)>);

impl KeyOrder {
    /// Reads the key at `position` (0 for an object's first) and its `:`, and returns the
    /// field `field_of` gives it: `Some(None)` for a key it does not know, `None` when the
    /// text is not a key.
    #[inline]
    pub(crate) fn key(
        &mut self,
        s: &mut Scanner<'_>,
        position: usize,
        field_of: impl Fn(&str) -> Option<u8>,
    ) -> Option<Option<u8>> {
        if let Some((spelled, field)) = self.0.get(position)
            && s.skip(spelled)
        {
            return Some(*field);
        }
        let key = s.string()?;
        s.byte(b':')?;
        let field = field_of(key);
        self.0.truncate(position);
        self.0
            .push((format!("\"{key}\":").into_bytes().into_boxed_slice(), field));
        Some(field)
    }
}

/// A JSON number as its parts, read without rounding: `-`, the digits as an integer, and the
/// power of ten to apply (`12.5e1` → `(false, 125, 0)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Number {
    pub(crate) negative: bool,
    pub(crate) digits: u64,
    pub(crate) exponent: i32,
    /// Spelled without fraction or exponent (serde_json reads it as an integer).
    pub(crate) integer: bool,
}

/// Powers of ten that an `f64` holds exactly (10^0 ..= 10^22).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl Number {
    /// The value as an `f64` when one IEEE multiplication or division of two exact values
    /// gives it (digits below 2^53, |exponent| ≤ 22): then it is correctly rounded, as
    /// serde_json computes it on this path. `None` otherwise (serde_json decides).
    pub(crate) fn to_f64(self) -> Option<f64> {
        if self.digits >= 1 << 53 {
            return None;
        }
        let m = self.digits as f64;
        let p = *POW10.get(self.exponent.unsigned_abs() as usize)?;
        let v = if self.exponent < 0 { m / p } else { m * p };
        Some(if self.negative { -v } else { v })
    }
}

/// The position of the first `"`, `\` or control character (below 0x20) in `bytes`: where a
/// JSON string without escapes ends, or where it stops being one. Reads 8 bytes per step.
fn string_end(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    let mut words = bytes.chunks_exact(8);
    for chunk in words.by_ref() {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let hits = below(w, 0x20) | below(w ^ splat(b'"'), 1) | below(w ^ splat(b'\\'), 1);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|i| at + i)
}

impl<'a> Scanner<'a> {
    /// A cursor at the start of `text`.
    pub(crate) fn new(text: &'a str) -> Self {
        Scanner { text, at: 0 }
    }

    fn skip_ws(&mut self) {
        let b = self.text.as_bytes();
        // compact JSON: most tokens follow each other directly
        while let Some(&c) = b.get(self.at)
            && c <= b' '
            && matches!(c, b' ' | b'\t' | b'\n' | b'\r')
        {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.text.as_bytes().get(self.at).copied()
    }

    /// The next byte that is not whitespace, consumed.
    pub(crate) fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    /// Consumes `want` (after whitespace).
    pub(crate) fn byte(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// Consumes `bytes` if the text goes on with them after whitespace.
    #[inline]
    pub(crate) fn skip(&mut self, bytes: &[u8]) -> bool {
        self.skip_ws();
        let rest = &self.text.as_bytes()[self.at..];
        let found = rest.len() >= bytes.len() && schemas::short_eq(&rest[..bytes.len()], bytes);
        if found {
            self.at += bytes.len();
        }
        found
    }

    /// Only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.at == self.text.len()
    }

    /// A string without escapes or control characters, its quotes consumed.
    pub(crate) fn string(&mut self) -> Option<&'a str> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string_here()
    }

    /// [`Scanner::string`] when [`Scanner::peek`] has just seen its opening quote.
    pub(crate) fn string_here(&mut self) -> Option<&'a str> {
        self.at += 1;
        let rest = &self.text.as_bytes()[self.at..];
        let len = string_end(rest)?;
        if rest[len] != b'"' {
            return None;
        }
        let value = &self.text[self.at..self.at + len];
        self.at += len + 1;
        Some(value)
    }

    /// `null` (consumed: `Some(true)`), something else (not consumed: `Some(false)`), or a
    /// word that starts like `null` and isn't.
    pub(crate) fn null(&mut self) -> Option<bool> {
        self.literal(b"null")
    }

    /// `word` consumed (`Some(true)`), or another value (`Some(false)`, not consumed); `None`
    /// when the text starts with `word`'s first byte but is not `word`.
    pub(crate) fn literal(&mut self, word: &[u8]) -> Option<bool> {
        if self.peek()? != word[0] {
            return Some(false);
        }
        if self.text.as_bytes()[self.at..].starts_with(word) {
            self.at += word.len();
            return Some(true);
        }
        None
    }

    /// A string that may be `null`.
    pub(crate) fn opt_string(&mut self) -> Option<Option<&'a str>> {
        match self.peek()? {
            b'"' => Some(Some(self.string_here()?)),
            b'n' if self.text.as_bytes()[self.at..].starts_with(b"null") => {
                self.at += 4;
                Some(None)
            }
            _ => None,
        }
    }

    /// An integer without fraction or exponent that fits an i64.
    #[inline]
    pub(crate) fn int(&mut self) -> Option<i64> {
        // the common case, up to 18 digits (below 2^63 whatever they are), without the
        // checked arithmetic of `number`
        self.skip_ws();
        let b = self.text.as_bytes();
        let negative = b.get(self.at) == Some(&b'-');
        let first = self.at + usize::from(negative);
        let mut at = first;
        let mut v: u64 = 0;
        while let Some(&c) = b.get(at) {
            let d = c.wrapping_sub(b'0');
            if d > 9 || at - first == 18 {
                break;
            }
            v = v * 10 + u64::from(d);
            at += 1;
        }
        let n = at - first;
        let ends = !matches!(b.get(at), Some(b'0'..=b'9' | b'.' | b'e' | b'E'));
        if n > 0 && ends && (n == 1 || b[first] != b'0') {
            self.at = at;
            let v = v as i64;
            return Some(if negative { -v } else { v });
        }
        self.int_by_grammar()
    }

    /// [`Scanner::int`] by JSON's number grammar, for what its common case leaves.
    fn int_by_grammar(&mut self) -> Option<i64> {
        let start = self.at;
        let n = self.number()?;
        if !n.integer {
            self.at = start;
            return None;
        }
        let v = i64::try_from(n.digits).ok()?;
        Some(if n.negative { -v } else { v })
    }

    /// An unsigned integer that may be `null`.
    pub(crate) fn opt_uint(&mut self) -> Option<Option<u64>> {
        if self.null()? {
            return Some(None);
        }
        Some(Some(u64::try_from(self.int()?).ok()?))
    }

    /// A number by JSON's grammar (RFC 8259 §6: `-`? int frac? exp?) whose digits fit a u64
    /// (leading zeros of a fraction count: `0.000001` is 1e-6).
    pub(crate) fn number(&mut self) -> Option<Number> {
        self.skip_ws();
        let start = self.at;
        if let Some(n) = self.number_of_few_digits() {
            return Some(n);
        }
        self.at = start;
        self.number_by_grammar()
    }

    /// [`Scanner::number`] in the common case: at most 19 digits (below 10^19 < 2^64,
    /// whatever they are), summed without checked arithmetic, and a plain exponent. `None`
    /// (cursor moved) for anything else, which [`Scanner::number_by_grammar`] decides.
    #[inline]
    fn number_of_few_digits(&mut self) -> Option<Number> {
        let b = self.text.as_bytes();
        let negative = b.get(self.at) == Some(&b'-');
        self.at += usize::from(negative);
        let int_start = self.at;
        let mut digits: u64 = 0;
        let mut accumulate = |at: &mut usize| {
            let from = *at;
            while let Some(&c) = b.get(*at) {
                let d = c.wrapping_sub(b'0');
                if d > 9 {
                    break;
                }
                digits = digits.wrapping_mul(10).wrapping_add(u64::from(d));
                *at += 1;
            }
            *at - from
        };
        let mut at = self.at;
        let n = accumulate(&mut at);
        // at least one digit, no leading zero
        if n == 0 || (n > 1 && b[int_start] == b'0') {
            return None;
        }
        let mut exponent: i32 = 0;
        let mut count = n;
        if b.get(at) == Some(&b'.') {
            at += 1;
            let f = accumulate(&mut at);
            if f == 0 {
                return None;
            }
            count += f;
            exponent = -i32::try_from(f).ok()?;
        }
        if count > 19 || matches!(b.get(at), Some(b'e' | b'E')) {
            return None;
        }
        self.at = at;
        Some(Number {
            negative,
            digits,
            exponent,
            integer: exponent == 0 && count == n,
        })
    }

    /// [`Scanner::number`] by the whole grammar, with checked arithmetic.
    fn number_by_grammar(&mut self) -> Option<Number> {
        let b = self.text.as_bytes();
        let start = self.at;
        let fail = |s: &mut Self| {
            s.at = start;
            None
        };
        let negative = b.get(self.at) == Some(&b'-');
        self.at += usize::from(negative);
        let int_start = self.at;
        let mut digits: u64 = 0;
        let accumulate = |s: &mut Self, digits: &mut u64| -> Option<usize> {
            let from = s.at;
            while let Some(&c) = b.get(s.at).filter(|c| c.is_ascii_digit()) {
                *digits = digits.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                s.at += 1;
            }
            Some(s.at - from)
        };
        let Some(n) = accumulate(self, &mut digits) else {
            return fail(self);
        };
        // at least one digit, no leading zero
        if n == 0 || (n > 1 && b[int_start] == b'0') {
            return fail(self);
        }
        let mut exponent: i32 = 0;
        if b.get(self.at) == Some(&b'.') {
            self.at += 1;
            match accumulate(self, &mut digits) {
                Some(0) | None => return fail(self),
                Some(f) => exponent = -i32::try_from(f).ok()?,
            }
        }
        if matches!(b.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            let sign = match b.get(self.at) {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            self.at += usize::from(sign != 0);
            let mut e: i32 = 0;
            let from = self.at;
            while let Some(&c) = b.get(self.at).filter(|c| c.is_ascii_digit()) {
                e = e.checked_mul(10)?.checked_add(i32::from(c - b'0'))?;
                self.at += 1;
            }
            if self.at == from {
                return fail(self);
            }
            exponent = exponent.checked_add(if sign < 0 { -e } else { e })?;
        }
        let integer = !b[int_start..self.at]
            .iter()
            .any(|c| matches!(c, b'.' | b'e' | b'E'));
        Some(Number {
            negative,
            digits,
            exponent,
            integer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Option<(Number, usize)> {
        let mut s = Scanner::new(text);
        s.number().map(|n| (n, s.at))
    }

    #[test]
    fn numbers_follow_json_grammar() {
        let n = |negative, digits, exponent| Number {
            negative,
            digits,
            exponent,
            integer: false,
        };
        assert_eq!(number("12.5e1,"), Some((n(false, 125, 0), 6)));
        assert_eq!(number("-0.000123"), Some((n(true, 123, -6), 9)));
        assert_eq!(number("7E-2"), Some((n(false, 7, -2), 4)));
        let zero = Number {
            integer: true,
            ..n(false, 0, 0)
        };
        assert_eq!(number("0"), Some((zero, 1)));
        for bad in [
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "+1",
            "99999999999999999999",
        ] {
            assert_eq!(number(bad), None, "{bad}");
        }
        assert_eq!(n(false, 1353, -3).to_f64(), Some(1.353));
        assert_eq!(n(false, 1 << 53, 0).to_f64(), None);
        assert_eq!(n(false, 1, -23).to_f64(), None);
    }

    proptest::proptest! {
        /// The common case's shortcut reads what the whole grammar reads, to the same byte:
        /// numbers of up to 25 digits (around the 19 it takes), fractions, exponents, junk.
        #[test]
        fn the_shortcut_for_few_digits_agrees_with_the_grammar(
            text in "-?[0-9]{0,25}(\\.[0-9]{0,8})?([eE][+-]?[0-9]{0,3})?[,}x ]?",
        ) {
            let mut fast = Scanner::new(&text);
            let mut full = Scanner::new(&text);
            let a = fast.number();
            let b = full.number_by_grammar();
            proptest::prop_assert_eq!(a, b);
            if a.is_some() {
                proptest::prop_assert_eq!(fast.at, full.at);
            }
        }

        /// The common case of `int` reads what the grammar reads, and stops where it stops:
        /// any digits (18, 19, 20 of them, leading zeros), signs, fractions and exponents.
        #[test]
        fn ints_read_as_the_grammar_reads_them(
            text in "[ ]?-?[0-9]{0,21}(\\.[0-9]{0,2})?([eE][+-]?[0-9]?)?[,}x]?",
        ) {
            let mut fast = Scanner::new(&text);
            let mut grammar = Scanner::new(&text);
            grammar.skip_ws();
            let want = grammar.int_by_grammar();
            proptest::prop_assert_eq!(fast.int(), want);
            if want.is_some() {
                proptest::prop_assert_eq!(fast.at, grammar.at);
            }
        }
    }

    #[test]
    fn ints_of_every_length_to_the_limits() {
        let int = |t: &str| Scanner::new(t).int();
        assert_eq!(int("1767614400000000,"), Some(1_767_614_400_000_000));
        assert_eq!(int("-42}"), Some(-42));
        assert_eq!(int("999999999999999999"), Some(999_999_999_999_999_999));
        // 19 digits: by the grammar, up to i64::MAX
        assert_eq!(int("9223372036854775807"), Some(i64::MAX));
        assert_eq!(int("9223372036854775808"), None);
        assert_eq!(int("-9223372036854775807"), Some(-i64::MAX));
        for bad in ["01", "-", "1.5", "1e3", "", "x"] {
            assert_eq!(int(bad), None, "{bad}");
        }
    }

    #[test]
    fn string_ends_are_found_in_every_lane() {
        for len in 0..20 {
            for stop in [b'"', b'\\', b'\n', 0x1f] {
                let mut text = vec![b'a'; len];
                text.push(stop);
                text.extend_from_slice(b"\"zz\\");
                assert_eq!(string_end(&text), Some(len), "{len} {stop}");
            }
            // bytes just above the stops, and UTF-8, are not stops
            let text: Vec<u8> = b" !#[]\x7f\xc3\xa9".repeat(3)[..len].to_vec();
            assert_eq!(string_end(&text), None, "{len}");
        }
    }

    #[test]
    fn strings_with_escapes_or_control_characters_go_to_serde() {
        assert_eq!(Scanner::new(r#""a b":"#).string(), Some("a b"));
        assert_eq!(Scanner::new(r#""a\"b""#).string(), None);
        assert_eq!(Scanner::new("\"a\tb\"").string(), None);
        assert_eq!(Scanner::new("nul").null(), None);
        assert_eq!(Scanner::new(" null").null(), Some(true));
        assert_eq!(Scanner::new("1").null(), Some(false));
    }
}
