//! A streaming CARv1 reader with bounded memory.
//!
//! A CARv1 stream is `varint(len) || header` followed by sections `varint(len) || CID || block`
//! (<https://ipld.io/specs/transport/car/carv1/>). The header is DAG-CBOR
//! `{version: 1, roots: [CID, ...]}`.
//!
//! The reader pulls chunks from a `Stream<Item = Result<Bytes, E>>` (what
//! `reqwest::Response::bytes_stream()` gives) and holds at most one header
//! ([`MAX_HEADER_SIZE`]) or one section ([`MAX_SECTION_SIZE`]) of its own, plus the one chunk
//! the stream last handed over (kept as a zero-copy `Bytes`, never copied whole). A length
//! prefix over the cap is refused before anything behind it is read.
//!
//! It does not check hashes: [`super::walk`] does, block by block, with [`super::verify`].
//! It never panics on any input.

use std::error::Error as StdError;

use bytes::{Buf, Bytes, BytesMut};
use cid::Cid;
use futures_util::{Stream, StreamExt};

use super::verify::MAX_BLOCK_SIZE;

/// The largest header accepted. Real headers are about 60 bytes per root.
pub const MAX_HEADER_SIZE: usize = 64 * 1024;
/// Room for the CID in front of a block: a CIDv1 is at most 4 varints (9 bytes each) plus a
/// 64-byte digest in `cid::Cid`; 256 leaves margin.
pub const MAX_CID_SIZE: usize = 256;
/// The largest section accepted: one block at its cap plus its CID.
pub const MAX_SECTION_SIZE: usize = MAX_BLOCK_SIZE + MAX_CID_SIZE;
/// The longest length prefix accepted: the multiformats unsigned-varint spec's 9 bytes
/// (63 bits), far more than the caps above need.
pub const MAX_VARINT_LEN: usize = 9;

/// The decoded CARv1 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarHeader {
    pub version: u64,
    /// As sent; may be empty (the trustless gateway spec leaves their use open).
    pub roots: Vec<Cid>,
}

/// Why a CAR stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CarError {
    #[error("the CAR stream failed: {0}")]
    Stream(#[source] Box<dyn StdError + Send + Sync>),
    #[error("the CAR stream ended in the middle of {0}")]
    Truncated(&'static str),
    #[error("the CAR stream is empty")]
    Empty,
    #[error("bad varint in the CAR stream: {0}")]
    BadVarint(&'static str),
    #[error("CAR header of {len} bytes is over the {limit}-byte limit")]
    HeaderTooLarge { len: u64, limit: usize },
    #[error("bad CAR header: {0}")]
    BadHeader(String),
    #[error("CAR version {0} is not supported (only 1)")]
    UnsupportedVersion(u64),
    #[error("CAR section of {len} bytes is over the {limit}-byte limit")]
    SectionTooLarge { len: u64, limit: usize },
    #[error("empty CAR section")]
    EmptySection,
    #[error("bad CID in a CAR section: {0}")]
    BadCid(String),
    #[error("the CAR stream was abandoned after an earlier error")]
    AfterError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Sections,
    Done,
    Failed,
}

/// Reads a CARv1 stream one section at a time.
///
/// The stream must be `Unpin` (`Box::pin` it, or pass a `BoxStream`).
pub struct CarReader<S> {
    stream: S,
    /// Unread remainder of the last chunk the stream gave.
    rest: Bytes,
    /// The header or section being assembled when it spans chunks; never over the caps.
    buf: BytesMut,
    header: Option<CarHeader>,
    state: State,
    stream_ended: bool,
}

impl<S, E> CarReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    pub fn new(stream: S) -> Self {
        CarReader {
            stream,
            rest: Bytes::new(),
            buf: BytesMut::new(),
            header: None,
            state: State::Start,
            stream_ended: false,
        }
    }

    /// Reads (once) and returns the header. Requires version 1.
    pub async fn header(&mut self) -> Result<&CarHeader, CarError> {
        if self.state == State::Start {
            let header = self.read_header().await;
            self.header = Some(self.poison_on_err(header)?);
            self.state = State::Sections;
        }
        match (&self.header, self.state) {
            (Some(header), _) => Ok(header),
            (None, _) => Err(CarError::AfterError),
        }
    }

    /// The next `(CID, block)`, unverified. `Ok(None)` means the stream ended cleanly at a
    /// section boundary; ending anywhere else is [`CarError::Truncated`]. Reads the header
    /// first if [`Self::header`] was not called.
    pub async fn next_block(&mut self) -> Result<Option<(Cid, Bytes)>, CarError> {
        if self.state == State::Start {
            self.header().await?;
        }
        match self.state {
            State::Sections => {}
            State::Done => return Ok(None),
            State::Start | State::Failed => return Err(CarError::AfterError),
        }
        let section = self.read_section().await;
        let section = self.poison_on_err(section)?;
        if section.is_none() {
            self.state = State::Done;
        }
        Ok(section)
    }

    /// Bytes this reader holds of its own (the partial header or section). The current chunk
    /// of the stream is not counted: it is the stream's allocation, shared zero-copy.
    pub fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    /// Any error poisons the reader, so that it is never resumed mid-section.
    fn poison_on_err<T>(&mut self, result: Result<T, CarError>) -> Result<T, CarError> {
        if result.is_err() {
            self.state = State::Failed;
            self.buf = BytesMut::new();
            self.rest = Bytes::new();
        }
        result
    }

    async fn read_header(&mut self) -> Result<CarHeader, CarError> {
        let len = self.read_varint().await?.ok_or(CarError::Empty)?;
        if len > MAX_HEADER_SIZE as u64 {
            return Err(CarError::HeaderTooLarge {
                len,
                limit: MAX_HEADER_SIZE,
            });
        }
        let bytes = self.read_exact(len as usize, "the header").await?;
        decode_header(&bytes)
    }

    async fn read_section(&mut self) -> Result<Option<(Cid, Bytes)>, CarError> {
        let Some(len) = self.read_varint().await? else {
            return Ok(None);
        };
        if len == 0 {
            return Err(CarError::EmptySection);
        }
        if len > MAX_SECTION_SIZE as u64 {
            return Err(CarError::SectionTooLarge {
                len,
                limit: MAX_SECTION_SIZE,
            });
        }
        let section = self.read_exact(len as usize, "a section").await?;
        let mut cursor = std::io::Cursor::new(&section[..]);
        let cid = Cid::read_bytes(&mut cursor).map_err(|e| CarError::BadCid(e.to_string()))?;
        let at = cursor.position() as usize;
        Ok(Some((cid, section.slice(at..))))
    }

    /// A multiformats unsigned varint (at most [`MAX_VARINT_LEN`] bytes, minimal), gathered
    /// byte by byte (it may span chunks) and decoded by the `unsigned-varint` crate. `None` if
    /// the stream ends cleanly before its first byte.
    async fn read_varint(&mut self) -> Result<Option<u64>, CarError> {
        let mut bytes = [0u8; MAX_VARINT_LEN];
        for i in 0..MAX_VARINT_LEN {
            let Some(byte) = self.next_byte().await? else {
                return if i == 0 {
                    Ok(None)
                } else {
                    Err(CarError::Truncated("a length prefix"))
                };
            };
            bytes[i] = byte;
            if unsigned_varint::decode::is_last(byte) {
                return match unsigned_varint::decode::u64(&bytes[..=i]) {
                    Ok((value, _)) => Ok(Some(value)),
                    Err(unsigned_varint::decode::Error::NotMinimal) => {
                        Err(CarError::BadVarint("not minimally encoded"))
                    }
                    Err(_) => Err(CarError::BadVarint("longer than 9 bytes")),
                };
            }
        }
        Err(CarError::BadVarint("longer than 9 bytes"))
    }

    async fn next_byte(&mut self) -> Result<Option<u8>, CarError> {
        if !self.fill_rest().await? {
            return Ok(None);
        }
        let byte = self.rest[0];
        self.rest.advance(1);
        Ok(Some(byte))
    }

    /// Makes `rest` non-empty; `false` at the end of the stream.
    async fn fill_rest(&mut self) -> Result<bool, CarError> {
        while self.rest.is_empty() {
            if self.stream_ended {
                return Ok(false);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.rest = chunk,
                Some(Err(e)) => return Err(CarError::Stream(e.into())),
                None => self.stream_ended = true,
            }
        }
        Ok(true)
    }

    /// Exactly `n` bytes (`n` is already checked against the caps).
    async fn read_exact(&mut self, n: usize, what: &'static str) -> Result<Bytes, CarError> {
        // Common case: the whole piece is inside the current chunk; no copy.
        if self.rest.len() >= n {
            return Ok(self.rest.split_to(n));
        }
        self.buf = BytesMut::with_capacity(n);
        while self.buf.len() < n {
            if !self.fill_rest().await? {
                self.buf = BytesMut::new();
                return Err(CarError::Truncated(what));
            }
            let take = (n - self.buf.len()).min(self.rest.len());
            self.buf.extend_from_slice(&self.rest.split_to(take));
        }
        Ok(std::mem::take(&mut self.buf).freeze())
    }
}

/// Decodes the DAG-CBOR header and checks the version before anything else, so that a
/// CARv2 pragma (`{version: 2}`, no roots) is reported as such.
fn decode_header(bytes: &[u8]) -> Result<CarHeader, CarError> {
    #[derive(serde::Deserialize)]
    struct Version {
        version: u64,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct V1 {
        version: u64,
        roots: Vec<Cid>,
    }
    let bad = |e: serde_ipld_dagcbor::DecodeError<std::convert::Infallible>| {
        CarError::BadHeader(e.to_string())
    };
    let Version { version } = serde_ipld_dagcbor::from_slice(bytes).map_err(bad)?;
    if version != 1 {
        return Err(CarError::UnsupportedVersion(version));
    }
    let V1 { version, roots } = serde_ipld_dagcbor::from_slice(bytes).map_err(bad)?;
    Ok(CarHeader { version, roots })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::test_encode::{encode_car, encode_varint};
    use futures_util::stream;
    use std::convert::Infallible;

    fn chunks(data: &[u8], size: usize) -> Vec<Result<Bytes, Infallible>> {
        data.chunks(size.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    }

    fn reader(
        data: &[u8],
        size: usize,
    ) -> CarReader<stream::Iter<std::vec::IntoIter<Result<Bytes, Infallible>>>> {
        CarReader::new(stream::iter(chunks(data, size)))
    }

    fn sample() -> (Cid, Vec<u8>) {
        let cid: Cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
            .parse()
            .unwrap();
        (cid, encode_car(&[cid], [(&cid, &b"hello world\n"[..])]))
    }

    #[tokio::test]
    async fn reads_header_and_blocks_at_any_chunking() {
        let (cid, car) = sample();
        for size in [1, 2, 3, 7, 64, car.len()] {
            let mut r = reader(&car, size);
            assert_eq!(r.header().await.unwrap().roots, vec![cid]);
            let (got, block) = r.next_block().await.unwrap().unwrap();
            assert_eq!(got, cid);
            assert_eq!(&block[..], b"hello world\n");
            assert!(r.next_block().await.unwrap().is_none());
            assert!(r.next_block().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn truncation_anywhere_but_a_boundary_is_an_error() {
        let (_, car) = sample();
        let header_end = {
            let mut r = reader(&car, car.len());
            r.header().await.unwrap();
            car.len() - r.rest.len()
        };
        for cut in 0..car.len() {
            let mut r = reader(&car[..cut], 5);
            let result = r.next_block().await;
            match cut {
                0 => assert!(matches!(result, Err(CarError::Empty))),
                c if c == header_end => assert!(matches!(result, Ok(None))),
                _ => assert!(
                    matches!(result, Err(CarError::Truncated(_))),
                    "cut {cut}: {result:?}"
                ),
            }
        }
    }

    #[tokio::test]
    async fn varints() {
        let mut out = Vec::new();
        for v in [0u64, 1, 127, 128, 300, 1 << 40, (1 << 63) - 1] {
            out.clear();
            encode_varint(v, &mut out);
            let mut r = reader(&out, 1);
            assert_eq!(r.read_varint().await.unwrap(), Some(v));
        }
        // Non-minimal and overlong forms are refused.
        let mut r = reader(&[0x80, 0x00], 1);
        assert!(matches!(r.read_varint().await, Err(CarError::BadVarint(_))));
        let mut r = reader(&[0xff; 12], 1);
        assert!(matches!(r.read_varint().await, Err(CarError::BadVarint(_))));
    }
}
