//! Byte ranges (RFC 9110 §14): one range is served as 206, an unsatisfiable one as 416; several
//! ranges, a malformed or invalid header (`bytes=5-3`), or an `If-Range` that is not our ETag
//! get the whole content, which the RFC allows.

use std::ops::RangeInclusive;

use http::header::{self, HeaderMap, HeaderValue};
use http_range_header::{parse_range_header, EndPosition, StartPosition};

use crate::byte_range::ByteRange;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranged {
    Whole,
    Part(RangeInclusive<u64>),
    Unsatisfiable,
}

/// The one range this request asks for, if it is to be answered with a part; decided before
/// the length is known, so that a range can be fetched on its own.
pub fn requested(headers: &HeaderMap, etag: &HeaderValue) -> Option<ByteRange> {
    let range = headers.get(header::RANGE)?.to_str().ok()?;
    if headers.get(header::IF_RANGE).is_some_and(|v| v != etag) {
        return None;
    }
    let parsed = parse_range_header(range).ok()?;
    let [only] = parsed.ranges.as_slice() else {
        return None;
    };
    match (only.start, only.end) {
        (StartPosition::Index(start), EndPosition::LastByte) => {
            Some(ByteRange::From { start, end: None })
        }
        (StartPosition::Index(start), EndPosition::Index(end)) => {
            (end >= start).then_some(ByteRange::From {
                start,
                end: Some(end),
            })
        }
        (StartPosition::FromLast(len), _) => Some(ByteRange::Suffix(len)),
    }
}

/// What `range` selects in content of `total` bytes.
pub fn of(range: &ByteRange, total: u64) -> Ranged {
    match range.resolve(total) {
        Some(part) => Ranged::Part(part),
        None => Ranged::Unsatisfiable,
    }
}

pub fn content_range(part: &RangeInclusive<u64>, total: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes {}-{}/{}", part.start(), part.end(), total))
        .expect("digits are ASCII")
}

pub fn unsatisfied_range(total: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes */{total}")).expect("digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a request's `Range` selects in content of `total` bytes.
    fn select(headers: &HeaderMap, total: u64, etag: &HeaderValue) -> Ranged {
        match requested(headers, etag) {
            None => Ranged::Whole,
            Some(range) => of(&range, total),
        }
    }

    fn with_range(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn forms() {
        let etag = HeaderValue::from_static("\"x\"");
        assert_eq!(select(&HeaderMap::new(), 10, &etag), Ranged::Whole);
        for (range, len, expected) in [
            ("bytes=2-4", 10, Ranged::Part(2..=4)),
            ("bytes=7-", 10, Ranged::Part(7..=9)),
            ("bytes=-3", 10, Ranged::Part(7..=9)),
            ("bytes=20-30", 10, Ranged::Unsatisfiable),
            ("bytes=0-1,4-5", 10, Ranged::Whole),
            ("lines=1-2", 10, Ranged::Whole),
            // Invalid (last before first): ignored, as RFC 9110 §14.1.1 says.
            ("bytes=5-3", 10, Ranged::Whole),
            // A suffix longer than the content is all of it (§14.1.2), not a 416.
            ("bytes=-30", 10, Ranged::Part(0..=9)),
            ("bytes=0-", 0, Ranged::Unsatisfiable),
        ] {
            assert_eq!(select(&with_range(range), len, &etag), expected, "{range}");
        }
    }

    #[test]
    fn if_range_must_match() {
        let etag = HeaderValue::from_static("\"x\"");
        let mut h = with_range("bytes=2-4");
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"y\""));
        assert_eq!(select(&h, 10, &etag), Ranged::Whole);
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"x\""));
        assert_eq!(select(&h, 10, &etag), Ranged::Part(2..=4));
    }
}
