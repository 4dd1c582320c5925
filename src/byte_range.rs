//! One requested byte range, before the content's length is known.
//!
//! The same value decides a cached answer (`media::range`), is sent to a path gateway as a
//! `Range` header, to a trustless gateway as `entity-bytes`, and is resolved by the verified
//! walk once the root block gives the file's size: one definition, so an answer cut from the
//! cache and one fetched on its own cover exactly the same bytes.

use std::ops::RangeInclusive;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-` or `bytes=start-end` (`end` inclusive, `end >= start`).
    From { start: u64, end: Option<u64> },
    /// `bytes=-len`: the last `len` bytes (`len > 0`).
    Suffix(u64),
}

impl ByteRange {
    /// The bytes this range selects in content of `total` bytes (RFC 9110 §14.1.2): an end
    /// past the content is cut to its last byte, a suffix longer than the content is all of
    /// it; `None` when nothing is selected (416).
    pub fn resolve(&self, total: u64) -> Option<RangeInclusive<u64>> {
        let last = total.checked_sub(1)?;
        match *self {
            ByteRange::From { start, end } => {
                (start <= last).then(|| start..=end.map_or(last, |e| e.min(last)))
            }
            ByteRange::Suffix(len) => Some(total - len.min(total)..=last),
        }
    }

    /// Where the range starts, when that does not depend on the length.
    pub fn start(&self) -> Option<u64> {
        match *self {
            ByteRange::From { start, .. } => Some(start),
            ByteRange::Suffix(_) => None,
        }
    }

    /// The `Range` header value asking a path gateway for this range.
    pub fn header_value(&self) -> String {
        match *self {
            ByteRange::From { start, end } => {
                format!(
                    "bytes={start}-{}",
                    end.map_or(String::new(), |e| e.to_string())
                )
            }
            ByteRange::Suffix(len) => format!("bytes=-{len}"),
        }
    }

    /// The trustless gateway spec's `entity-bytes=from:to` value (`to` inclusive, `*` for the
    /// end, a negative `from` counting from the end).
    pub fn entity_bytes(&self) -> String {
        match *self {
            ByteRange::From { start, end } => {
                format!("{start}:{}", end.map_or("*".to_owned(), |e| e.to_string()))
            }
            ByteRange::Suffix(len) => format!("-{len}:*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(start: u64, end: Option<u64>) -> ByteRange {
        ByteRange::From { start, end }
    }

    #[test]
    fn resolves_as_rfc_9110_says() {
        assert_eq!(from(2, Some(4)).resolve(10), Some(2..=4));
        assert_eq!(from(2, Some(40)).resolve(10), Some(2..=9));
        assert_eq!(from(7, None).resolve(10), Some(7..=9));
        assert_eq!(from(9, None).resolve(10), Some(9..=9));
        assert_eq!(from(10, None).resolve(10), None);
        assert_eq!(from(10, Some(12)).resolve(10), None);
        assert_eq!(ByteRange::Suffix(3).resolve(10), Some(7..=9));
        assert_eq!(ByteRange::Suffix(30).resolve(10), Some(0..=9));
        // Empty content has no byte to select.
        assert_eq!(from(0, None).resolve(0), None);
        assert_eq!(ByteRange::Suffix(1).resolve(0), None);
    }

    #[test]
    fn spelled_for_gateways() {
        assert_eq!(from(5, Some(9)).header_value(), "bytes=5-9");
        assert_eq!(from(5, None).header_value(), "bytes=5-");
        assert_eq!(ByteRange::Suffix(7).header_value(), "bytes=-7");
        assert_eq!(from(5, Some(9)).entity_bytes(), "5:9");
        assert_eq!(from(5, None).entity_bytes(), "5:*");
        assert_eq!(ByteRange::Suffix(7).entity_bytes(), "-7:*");
    }
}
