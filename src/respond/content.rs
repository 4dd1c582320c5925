//! The bytes of one ipfs item, cached or arriving, as every kind of answer needs them
//! (client download, federation download, thumbnail source).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use crate::access_log::CacheOutcome;
use crate::body::{self, Body, BoxError};
use crate::byte_range::ByteRange;
use crate::cache::CachedMedia;
use crate::error::RequestError;
use crate::ipfs::gateway::FetchError;
use crate::media::media_id::IpfsMedia;
use crate::media::query::MediaQuery;
use crate::resolve::{Head, Part, RangePlan, Resolved, Resolver, Subscription};

/// Time limits on waiting for content (`timeout_ms`).
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    pub default: Duration,
    pub max: Duration,
}

impl Waits {
    /// The wait a request asks for (`timeout_ms`, Synapse's default 20 s, capped).
    pub fn requested(&self, query: &MediaQuery) -> Result<Duration, RequestError> {
        Ok(query.timeout(self.default, self.max)?)
    }
}

pub enum Content {
    Whole(Arc<CachedMedia>),
    Arriving {
        subscription: Subscription,
        head: Head,
    },
}

/// What a request for one range is answered from.
pub enum RangeSource {
    /// The item (cached or arriving), from which the range is cut.
    Content(Content, CacheOutcome),
    /// The range alone, fetched for this request (a cache miss).
    Part(Part),
}

impl Content {
    /// The cached item or the first bytes of a fetch, waiting at most `wait`.
    pub async fn get(
        resolver: &Resolver,
        media: &IpfsMedia,
        wait: Duration,
    ) -> Result<(Content, CacheOutcome), RequestError> {
        Self::from_resolved(resolver.resolve(media), wait, wait).await
    }

    /// For a request of the range `wanted`: the item, or the range fetched on its own when
    /// the item is not cached and the shared fetch would be long in reaching the range (see
    /// `Resolver::resolve_range`). Waits at most `wait` for the first bytes.
    pub async fn get_range(
        resolver: &Resolver,
        media: &IpfsMedia,
        wait: Duration,
        wanted: ByteRange,
    ) -> Result<RangeSource, RequestError> {
        match resolver.resolve_range(media, &wanted) {
            RangePlan::Shared(resolved) => {
                let (content, outcome) = Self::from_resolved(resolved, wait, wait).await?;
                Ok(RangeSource::Content(content, outcome))
            }
            RangePlan::Apart(known) => {
                let deadline = tokio::time::Instant::now() + wait;
                let fetched = tokio::time::timeout(wait, resolver.fetch_part(media, wanted, known))
                    .await
                    .map_err(|_| RequestError::NotInTime(wait))?;
                match fetched {
                    Ok(part) => Ok(RangeSource::Part(part)),
                    // No gateway gave a usable part (a `Range` ignored without a length, a
                    // 206 or range CAR that does not fit), which says nothing of the whole:
                    // the range is cut from the shared full fetch, as from the cache.
                    Err(error @ (FetchError::Upstream(_) | FetchError::Unverified(_))) => {
                        tracing::debug!(%error, "range fetch failed; fetching the whole");
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        let (content, outcome) =
                            Self::from_resolved(resolver.resolve(media), left, wait).await?;
                        Ok(RangeSource::Content(content, outcome))
                    }
                    Err(error) => Err(error.into()),
                }
            }
        }
    }

    /// Waits `wait` for the first bytes; a timeout names `asked`, the client's whole wait.
    async fn from_resolved(
        resolved: Resolved,
        wait: Duration,
        asked: Duration,
    ) -> Result<(Content, CacheOutcome), RequestError> {
        match resolved {
            Resolved::Cached(item) => Ok((Content::Whole(item), CacheOutcome::Hit)),
            Resolved::Fetching {
                subscription,
                joined,
            } => {
                let head = tokio::time::timeout(wait, subscription.head())
                    .await
                    .map_err(|_| RequestError::NotInTime(asked))??;
                let outcome = if joined {
                    CacheOutcome::Joined
                } else {
                    CacheOutcome::Miss
                };
                Ok((Content::Arriving { subscription, head }, outcome))
            }
        }
    }

    pub fn sniffed(&self) -> Option<&'static str> {
        match self {
            Content::Whole(item) => item.sniffed,
            Content::Arriving { head, .. } => head.sniffed,
        }
    }

    /// Total length, when known before the last byte.
    pub fn length(&self) -> Option<u64> {
        match self {
            Content::Whole(item) => Some(item.bytes.len() as u64),
            Content::Arriving { head, .. } => head.content_length,
        }
    }

    /// The bytes `[skip, skip + take)` as a body; a fetch that fails midway ends the body with
    /// an error, so the connection is aborted rather than ended cleanly.
    pub fn into_body(self, skip: u64, take: Option<u64>) -> Body {
        match self {
            Content::Whole(item) => {
                let len = item.bytes.len() as u64;
                let start = skip.min(len) as usize;
                let end = take.map_or(len, |t| (skip + t).min(len)) as usize;
                body::full(item.bytes.slice(start..end))
            }
            Content::Arriving { subscription, .. } => {
                let frames = subscription
                    .into_stream(skip, take)
                    .map_ok(Frame::data)
                    .map_err(|e| Box::new(e) as BoxError);
                BodyExt::boxed(StreamBody::new(frames))
            }
        }
    }

    /// All the bytes, refusing more than `max` (thumbnail sources).
    pub async fn collect(self, max: u64) -> Result<Bytes, FetchError> {
        match self {
            Content::Whole(item) if item.bytes.len() as u64 > max => {
                Err(FetchError::TooLarge { limit: max })
            }
            Content::Whole(item) => Ok(item.bytes.clone()),
            Content::Arriving { subscription, head } => {
                if head.content_length.is_some_and(|len| len > max) {
                    return Err(FetchError::TooLarge { limit: max });
                }
                let mut all = BytesMut::new();
                let mut stream = Box::pin(subscription.into_stream(0, None));
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    if (all.len() + chunk.len()) as u64 > max {
                        return Err(FetchError::TooLarge { limit: max });
                    }
                    all.extend_from_slice(&chunk);
                }
                Ok(all.freeze())
            }
        }
    }
}
