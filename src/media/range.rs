//! Byte ranges (RFC 9110 §14): one range is served as 206, an unsatisfiable one as 416; several
//! ranges, a malformed header, or an `If-Range` that is not our ETag get the whole content,
//! which the RFC allows.

use std::ops::RangeInclusive;

use http::header::{self, HeaderMap, HeaderValue};
use http_range_header::parse_range_header;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranged {
    Whole,
    Part(RangeInclusive<u64>),
    Unsatisfiable,
}

pub fn select(headers: &HeaderMap, total: u64, etag: &HeaderValue) -> Ranged {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ranged::Whole;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        if if_range != etag {
            return Ranged::Whole;
        }
    }
    let Ok(parsed) = parse_range_header(range) else {
        return Ranged::Whole;
    };
    match parsed.validate(total) {
        Ok(ranges) if ranges.len() == 1 => Ranged::Part(ranges[0].clone()),
        Ok(_) => Ranged::Whole,
        Err(_) => Ranged::Unsatisfiable,
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

    fn with_range(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn forms() {
        let etag = HeaderValue::from_static("\"x\"");
        assert_eq!(select(&HeaderMap::new(), 10, &etag), Ranged::Whole);
        assert_eq!(
            select(&with_range("bytes=2-4"), 10, &etag),
            Ranged::Part(2..=4)
        );
        assert_eq!(
            select(&with_range("bytes=7-"), 10, &etag),
            Ranged::Part(7..=9)
        );
        assert_eq!(
            select(&with_range("bytes=-3"), 10, &etag),
            Ranged::Part(7..=9)
        );
        assert_eq!(
            select(&with_range("bytes=20-30"), 10, &etag),
            Ranged::Unsatisfiable
        );
        assert_eq!(
            select(&with_range("bytes=0-1,4-5"), 10, &etag),
            Ranged::Whole
        );
        assert_eq!(select(&with_range("lines=1-2"), 10, &etag), Ranged::Whole);
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
