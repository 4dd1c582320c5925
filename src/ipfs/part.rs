//! A byte range of content fetched on its own, whatever kind of gateway serves it: the whole
//! content's length (the client's `Content-Range` needs it before the first byte) and exactly
//! the range's bytes.
//!
//! Gateways are not trusted to frame a part honestly: their `Content-Range` is checked against
//! what was asked, and a body that carries more or fewer bytes than the part ends in an error,
//! never cleanly.

use std::ops::RangeInclusive;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};

use crate::byte_range::ByteRange;
use crate::ipfs::fetch_error::FetchError;

pub struct PartResponse {
    /// The whole content's length.
    pub total: u64,
    /// The bytes `body` carries; `None` when the range lies outside the content (416).
    pub range: Option<RangeInclusive<u64>>,
    pub body: BoxStream<'static, Result<Bytes, FetchError>>,
}

impl PartResponse {
    /// The range cut from content already in hand (a verified raw block, an identity CID).
    pub fn cut(bytes: Bytes, wanted: &ByteRange, max_bytes: u64) -> Result<Self, FetchError> {
        let total = bytes.len() as u64;
        check_size(total, max_bytes)?;
        let range = wanted.resolve(total);
        let part = range.as_ref().map_or_else(Bytes::new, |r| {
            bytes.slice(*r.start() as usize..=*r.end() as usize)
        });
        Ok(Self {
            total,
            range,
            body: futures_util::stream::once(async move { Ok(part) }).boxed(),
        })
    }

    /// Nothing to send: the range is outside content of `total` bytes.
    pub fn outside(total: u64) -> Self {
        Self {
            total,
            range: None,
            body: futures_util::stream::empty().boxed(),
        }
    }

    /// The part `range` of content of `total` bytes, whose bytes are `body`.
    pub fn new(
        total: u64,
        range: RangeInclusive<u64>,
        body: impl Stream<Item = Result<Bytes, FetchError>> + Send + 'static,
    ) -> Self {
        let len = range.end() - range.start() + 1;
        Self {
            total,
            range: Some(range),
            body: exactly(body, len).boxed(),
        }
    }
}

/// A part is refused exactly when the whole would be (`media.max_bytes`), so that a range
/// never serves content a full download refuses.
pub fn check_size(total: u64, max_bytes: u64) -> Result<(), FetchError> {
    if total > max_bytes {
        return Err(FetchError::TooLarge { limit: max_bytes });
    }
    Ok(())
}

/// `body`, which must carry exactly `len` bytes: a byte too many or too few is an error, and
/// nothing follows an error.
pub fn exactly<S>(body: S, len: u64) -> impl Stream<Item = Result<Bytes, FetchError>>
where
    S: Stream<Item = Result<Bytes, FetchError>>,
{
    futures_util::stream::unfold(Some((Box::pin(body), 0u64)), move |state| async move {
        let (mut body, sent) = state?;
        match body.next().await {
            Some(Ok(chunk)) => {
                let sent = sent + chunk.len() as u64;
                if sent > len {
                    let error =
                        FetchError::Upstream("the gateway sent more bytes than the range".into());
                    return Some((Err(error), None));
                }
                Some((Ok(chunk), Some((body, sent))))
            }
            Some(Err(error)) => Some((Err(error), None)),
            None if sent == len => None,
            None => {
                let error =
                    FetchError::Upstream("the gateway's part ended before the range did".into());
                Some((Err(error), None))
            }
        }
    })
}

/// The bytes `[skip, skip + take)` of a stream; ends as soon as the range is out, so nothing
/// past it is read.
pub fn slice_stream<S>(
    chunks: S,
    skip: u64,
    take: Option<u64>,
) -> impl Stream<Item = Result<Bytes, FetchError>>
where
    S: Stream<Item = Result<Bytes, FetchError>>,
{
    let end = take.map(|t| skip + t);
    chunks
        .scan(0u64, move |position, chunk| {
            if end.is_some_and(|e| *position >= e) {
                return std::future::ready(None);
            }
            let item = match chunk {
                Err(e) => Some(Err(e)),
                Ok(chunk) => {
                    let start = *position;
                    let len = chunk.len() as u64;
                    *position = start + len;
                    let from = skip.saturating_sub(start).min(len) as usize;
                    let to = end.map_or(len, |e| e.saturating_sub(start).min(len)) as usize;
                    (from < to).then(|| Ok(chunk.slice(from..to)))
                }
            };
            std::future::ready(Some(item))
        })
        .filter_map(std::future::ready)
}

/// A gateway's `Content-Range` (RFC 9110 §14.4), read strictly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes first-last/total`
    Part {
        range: RangeInclusive<u64>,
        total: u64,
    },
    /// `bytes */total` (with a 416)
    Unsatisfied { total: u64 },
}

impl ContentRange {
    /// `None` for anything but the two forms above with a known total and a range inside it.
    pub fn parse(value: &str) -> Option<Self> {
        let rest = value.strip_prefix("bytes ")?;
        let (range, total) = rest.split_once('/')?;
        let total = digits(total)?;
        if range == "*" {
            return Some(ContentRange::Unsatisfied { total });
        }
        let (first, last) = range.split_once('-')?;
        let (first, last) = (digits(first)?, digits(last)?);
        (first <= last && last < total).then_some(ContentRange::Part {
            range: first..=last,
            total,
        })
    }
}

fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, FetchError>> {
        stream::iter(
            parts
                .iter()
                .map(|c| Ok(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        )
    }

    async fn collect_range(parts: &[&'static [u8]], skip: u64, take: Option<u64>) -> Vec<u8> {
        let out: Vec<_> = slice_stream(chunks(parts), skip, take).collect().await;
        out.into_iter().flat_map(|p| p.unwrap().to_vec()).collect()
    }

    #[tokio::test]
    async fn ranges_across_chunks() {
        let parts: &[&[u8]] = &[b"0123", b"4567", b"89"];
        assert_eq!(collect_range(parts, 0, None).await, b"0123456789");
        assert_eq!(collect_range(parts, 3, Some(3)).await, b"345");
        assert_eq!(collect_range(parts, 8, None).await, b"89");
        assert_eq!(collect_range(parts, 4, Some(4)).await, b"4567");
        assert_eq!(collect_range(parts, 9, Some(1)).await, b"9");
    }

    async fn exact(parts: &[&'static [u8]], len: u64) -> (Vec<u8>, Option<FetchError>) {
        let out: Vec<_> = exactly(chunks(parts), len).collect().await;
        let mut bytes = Vec::new();
        let mut error = None;
        for item in out {
            assert!(error.is_none(), "nothing follows an error");
            match item {
                Ok(b) => bytes.extend_from_slice(&b),
                Err(e) => error = Some(e),
            }
        }
        (bytes, error)
    }

    #[tokio::test]
    async fn a_part_must_be_exactly_its_length() {
        assert_eq!(exact(&[b"abc", b"de"], 5).await, (b"abcde".to_vec(), None));
        let (bytes, error) = exact(&[b"abc", b"de"], 6).await;
        assert_eq!(bytes, b"abcde");
        assert!(error.is_some(), "short: must not end cleanly");
        let (bytes, error) = exact(&[b"abc", b"def"], 5).await;
        assert_eq!(bytes, b"abc", "the chunk that overshoots is not sent");
        assert!(error.is_some());
        assert_eq!(exact(&[], 0).await, (Vec::new(), None));
    }

    #[test]
    fn content_range_is_read_strictly() {
        assert_eq!(
            ContentRange::parse("bytes 5-9/100"),
            Some(ContentRange::Part {
                range: 5..=9,
                total: 100
            })
        );
        assert_eq!(
            ContentRange::parse("bytes */100"),
            Some(ContentRange::Unsatisfied { total: 100 })
        );
        for bad in [
            "bytes 5-9/*",
            "bytes 9-5/100",
            "bytes 5-100/100",
            "bytes=5-9/100",
            "bytes 5-9",
            "bytes +5-9/100",
            "bytes 5-9/1e3",
            "items 5-9/100",
            "bytes -9/100",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad}");
        }
    }
}
