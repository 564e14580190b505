//! A `Dictionary<Int32, Utf8>` column builder tuned for access logs.
//!
//! Arrow's `StringDictionaryBuilder` hashes every appended value. In a proxy's log most
//! columns repeat the previous row's value (the same reporter, protocol, method, often the same
//! source), so this builder first compares with the previous row's value and only hashes when
//! it differs. Measured by `cargo bench --bench parse`.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{DictionaryArray, Int32Array, StringBuilder};
use arrow::datatypes::Int32Type;

/// Builds one dictionary-encoded string column; keys are `i32` in first-seen order.
#[derive(Debug)]
pub(crate) struct DictColumn {
    keys: Vec<i32>,
    nulls: NullBufferBuilder,
    values: StringBuilder,
    /// The distinct values with their keys, looked up by [`short_eq`].
    index: hashbrown::HashTable<(Box<str>, i32)>,
    hasher: foldhash::fast::RandomState,
    last: Option<i32>,
    last_value: String,
}

impl DictColumn {
    pub(crate) fn new() -> Self {
        DictColumn {
            keys: Vec::new(),
            nulls: NullBufferBuilder::new(0),
            values: StringBuilder::new(),
            index: hashbrown::HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            last: None,
            last_value: String::new(),
        }
    }

    pub(crate) fn append(&mut self, value: &str) {
        let key = match self.last {
            Some(k) if short_eq(self.last_value.as_bytes(), value.as_bytes()) => k,
            _ => {
                let hash = self.hasher.hash_one(value);
                let found = self
                    .index
                    .find(hash, |(v, _)| short_eq(v.as_bytes(), value.as_bytes()));
                let k = match found {
                    Some(&(_, k)) => k,
                    None => {
                        let k = i32::try_from(self.index.len())
                            .expect("fewer than 2^31 distinct values in one batch");
                        self.values.append_value(value);
                        let hasher = &self.hasher;
                        self.index
                            .insert_unique(hash, (value.into(), k), |(v, _)| hasher.hash_one(&**v));
                        k
                    }
                };
                self.last = Some(k);
                self.last_value.clear();
                self.last_value.push_str(value);
                k
            }
        };
        self.keys.push(key);
        self.nulls.append_non_null();
    }

    /// Makes room for `rows` more keys.
    pub(crate) fn reserve(&mut self, rows: usize) {
        self.keys.reserve(rows);
    }

    /// Bytes of the distinct values stored so far.
    pub(crate) fn value_bytes(&self) -> usize {
        self.values.values_slice().len()
    }

    pub(crate) fn append_option(&mut self, value: Option<&str>) {
        match value {
            Some(v) => self.append(v),
            None => {
                self.keys.push(0);
                self.nulls.append_null();
            }
        }
    }

    /// Takes the column built so far and starts a new, empty one (with a new dictionary).
    pub(crate) fn finish(&mut self) -> DictionaryArray<Int32Type> {
        let keys = Int32Array::new(std::mem::take(&mut self.keys).into(), self.nulls.finish());
        let values = Arc::new(self.values.finish());
        self.index.clear();
        self.last = None;
        DictionaryArray::try_new(keys, values).expect("every non-null key indexes the values")
    }
}

/// Whether `a` and `b` hold the same bytes, compared in place with word loads: names, keys
/// and addresses in access logs are a few to a few dozen bytes, where a call to the C
/// library's `memcmp` costs more than the comparison (measured by `benches/peers.sh`).
#[inline]
pub fn short_eq(a: &[u8], b: &[u8]) -> bool {
    #[inline(always)]
    fn word(s: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"))
    }
    #[inline(always)]
    fn half(s: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"))
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0..4 => a.iter().zip(b).all(|(x, y)| x == y),
        4..8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=32 => {
            let mut at = 0;
            while at + 8 < n {
                if word(a, at) != word(b, at) {
                    return false;
                }
                at += 8;
            }
            // the last word, overlapping the one before when `n` is not a multiple of 8
            word(a, n - 8) == word(b, n - 8)
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};

    use super::*;

    #[test]
    fn repeats_and_switches_share_keys() {
        let mut c = DictColumn::new();
        for v in [Some("a"), Some("a"), Some("b"), None, Some("a"), Some("b")] {
            c.append_option(v);
        }
        let d = c.finish();
        assert_eq!(d.values().len(), 2);
        let keys: Vec<Option<i32>> = d.keys().iter().collect();
        assert_eq!(keys, [Some(0), Some(0), Some(1), None, Some(0), Some(1)]);
        assert_eq!(d.values().as_string::<i32>().value(1), "b");
        // A new batch starts a new dictionary.
        c.append("b");
        let d = c.finish();
        assert_eq!(d.keys().value(0), 0);
        assert_eq!(d.values().as_string::<i32>().value(0), "b");
    }

    #[test]
    fn short_eq_compares_every_byte_at_every_length() {
        for n in 0..=40usize {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(short_eq(&a, &a.clone()), "length {n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!short_eq(&a, &b), "length {n}, byte {at} differs");
            }
            let mut longer = a.clone();
            longer.push(b'a');
            assert!(!short_eq(&a, &longer), "lengths {n} and {}", n + 1);
        }
    }

    #[test]
    fn all_null_column_is_valid() {
        let mut c = DictColumn::new();
        c.append_option(None);
        c.append_option(None);
        let d = c.finish();
        assert_eq!(d.null_count(), 2);
        assert_eq!(d.values().len(), 0);
    }
}
