//! Byte searches a word (8 bytes) at a time, for the short spans between a log line's
//! delimiters, where `memchr`'s vector set-up costs more than the search.

/// `b` repeated in every byte of a word.
pub(crate) const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// Bit 7 of each byte of the result is set where `w`'s byte is below `n` (`n` ≤ 0x80). A byte
/// above a flagged one may be flagged wrongly (the borrow), so only the lowest flag is exact
/// ("hasless", Bit Twiddling Hacks, S. E. Anderson).
pub(crate) const fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(splat(n)) & !w & splat(0x80)
}

/// Bytes looked at a word at a time before [`find_byte`] hands a longer span to `memchr`.
const SHORT_SPAN: usize = 16;

/// The position of the first `b` in `hay`: the first [`SHORT_SPAN`] bytes a word at a time,
/// the rest with `memchr`. Most values between an access log's delimiters (a status, a
/// size, an address, a time) end within them.
#[inline]
pub(crate) fn find_byte(b: u8, hay: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at + 8 <= hay.len() && at < SHORT_SPAN {
        let w = u64::from_le_bytes(hay[at..at + 8].try_into().expect("8 bytes"));
        let hits = below(w ^ splat(b), 1);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    memchr::memchr(b, &hay[at..]).map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_occurrence_at_every_position_and_length() {
        for len in 0..40 {
            for at in 0..=len {
                let mut hay = vec![b'a'; len];
                if at < len {
                    hay[at] = b' ';
                }
                // a second one after it must not be found first
                if at + 3 < len {
                    hay[at + 3] = b' ';
                }
                let want = (at < len).then_some(at);
                assert_eq!(find_byte(b' ', &hay), want, "len {len}, at {at}");
            }
        }
    }

    #[test]
    fn a_byte_just_above_the_searched_one_is_not_a_hit() {
        // 0x21 after 0x20: the borrow of the byte trick must not flag it first
        assert_eq!(find_byte(b' ', b"!!!!!!!!!!!!!!!!!! "), Some(18));
        assert_eq!(find_byte(0x80, &[0x81, 0x7f, 0x00, 0x80]), Some(3));
        assert_eq!(find_byte(0xff, &[0u8; 20]), None);
    }
}
