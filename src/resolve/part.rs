//! A range fetched on its own, for a client seeking far into uncached content.
//!
//! The part goes through the same gateway pool as a full fetch (health order, hedging, choice
//! of failure) but is neither shared nor cached: it is not the whole item.
//!
//! Its answer must match the one the cache would give, and the `Content-Type` comes from the
//! content's first bytes, which a range far into the file lacks. So unless the type is already
//! known (a running fetch's head, or [`KnownHeads`]), the first [`SNIFF_LEN`] bytes are fetched
//! too, concurrently, as a second small range: sniffing those gives exactly what the full
//! fetch sniffs.

use std::ops::RangeInclusive;

use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use super::{Head, Resolver};
use crate::byte_range::ByteRange;
use crate::ipfs::gateway::FetchError;
use crate::ipfs::part::{check_size, PartResponse};
use crate::ipfs::pool::GatewaySet;
use crate::media::media_id::IpfsMedia;
use crate::media::sniff::{self, SNIFF_LEN};

/// How many contents' heads are remembered (about a hundred bytes each).
const KNOWN_HEADS: u64 = 16_384;

/// What is known of content before any byte of a range is fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    pub total: Option<u64>,
    /// `Some(sniffed)` once the first bytes were seen (`Some(None)`: nothing recognisable).
    pub sniffed: Option<Option<&'static str>>,
}

/// A range, on its way.
pub struct Part {
    /// The whole content's length.
    pub total: u64,
    /// The bytes `body` carries; `None` when the range lies outside the content (416).
    pub range: Option<RangeInclusive<u64>>,
    /// What the content's first bytes sniff as (`None` with a 416: no body, no type).
    pub sniffed: Option<&'static str>,
    pub body: BoxStream<'static, Result<Bytes, FetchError>>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct KnownHead {
    pub total: u64,
    pub sniffed: Option<&'static str>,
}

/// Length and sniffed type of contents seen whole or in part, bounded by entry count. Not
/// content: a later full download still fetches every byte.
pub(crate) struct KnownHeads(moka::sync::Cache<Cid, KnownHead>);

impl KnownHeads {
    pub fn new() -> Self {
        Self(moka::sync::Cache::new(KNOWN_HEADS))
    }

    pub fn get(&self, key: &Cid) -> Option<KnownHead> {
        self.0.get(key)
    }

    /// A completed shared fetch's head.
    pub fn remember(&self, key: Cid, head: &Head) {
        if let Some(total) = head.content_length {
            self.learn(key, total, head.sniffed);
        }
    }

    pub fn learn(&self, key: Cid, total: u64, sniffed: Option<&'static str>) {
        self.0.insert(key, KnownHead { total, sniffed });
    }
}

impl Resolver {
    /// The range `wanted` of `media`, fetched on its own; returns once its length is known.
    pub async fn fetch_part(
        &self,
        media: &IpfsMedia,
        wanted: ByteRange,
        known: Known,
    ) -> Result<Part, FetchError> {
        let max_bytes = self.inner.limits.max_bytes;
        // A length already known answers a range outside it without any request.
        if let Some(total) = known.total {
            check_size(total, max_bytes)?;
            if wanted.resolve(total).is_none() {
                return Ok(outside(PartResponse::outside(total)));
            }
        }
        let gateways = self.inner.gateways.current();
        let part = gateways.fetch_range(&media.cid, wanted, max_bytes);
        let head = async {
            match known.sniffed {
                Some(sniffed) => Ok((sniffed, None)),
                None => first_bytes(&gateways, &media.cid, max_bytes).await,
            }
        };
        let (part, head) = tokio::join!(part, head);
        let part = part?;
        // Trusted gateways are not checked against the CID; two that disagree on the length
        // of one CID serve different bytes, and neither is to be believed.
        let head = head.and_then(|(sniffed, total)| match total {
            Some(total) if total != part.total => Err(FetchError::Upstream(format!(
                "the gateways disagree on the content's length ({} and {total})",
                part.total
            ))),
            _ => Ok(sniffed),
        });
        if let Ok(sniffed) = head {
            self.inner.heads.learn(media.canonical, part.total, sniffed);
        }
        if part.range.is_none() {
            // A 416 has no body, so no type: the first bytes do not matter.
            return Ok(outside(part));
        }
        let sniffed = head?;
        Ok(Part {
            total: part.total,
            range: part.range,
            sniffed,
            body: part.body,
        })
    }
}

fn outside(part: PartResponse) -> Part {
    Part {
        total: part.total,
        range: None,
        sniffed: None,
        body: part.body,
    }
}

/// The first [`SNIFF_LEN`] bytes, sniffed, and the total length their gateway stated.
async fn first_bytes(
    gateways: &GatewaySet,
    cid: &Cid,
    max_bytes: u64,
) -> Result<(Option<&'static str>, Option<u64>), FetchError> {
    let first = ByteRange::From {
        start: 0,
        end: Some(SNIFF_LEN as u64 - 1),
    };
    let part = gateways.fetch_range(cid, first, max_bytes).await?;
    let mut prefix = BytesMut::new();
    let mut body = part.body;
    // At most SNIFF_LEN bytes: the part's length is enforced.
    while let Some(chunk) = body.next().await {
        prefix.extend_from_slice(&chunk?);
    }
    Ok((sniff::sniff(&prefix), Some(part.total)))
}
