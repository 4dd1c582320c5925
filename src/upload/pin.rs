//! # POST `/_matrix/media/v3/pin/{cid}` (MSC2706; also `unstable/rs.chir.matrix.msc2706`)
//!
//! A client that already has a CID asks the server to keep that content. The same caller
//! rules, rate limit and size limit as uploads; the answer is the uploads' `content_uri`.
//!
//! Where the bytes come from: **the store's own `pin/add`** (Cluster: `POST /pins/{cid}`),
//! not the proxy's retrieval streamed into the store. The store fetches from its whole
//! network and checks every block against its CID itself, so nothing has to pass through the
//! proxy (no second copy of the file on the wire, no memory here), and a Cluster allocates
//! the pin to the peers that will hold it, which fetch it directly. Before that, the proxy
//! fetches only the root block from its gateways, verified against the CID: it says the
//! file's size (refused over `upload.max_bytes` before anything is pinned) and whether it is a
//! file at all (a directory is refused), and proves that the gateways this proxy serves media
//! from can find it (what they cannot find could not be served as media anyway).
//!
//! With `Content-Type: application/vnd.ipld.car` the client sends the blocks itself: see
//! [`super::car_pin`].

use std::time::{Duration, Instant};

use cid::Cid;
use http::request::Parts;
use http::{header, Response};
use percent_encoding::percent_decode_str;

use crate::access_log::UploadRecord;
use crate::body::Body;
use crate::forwarding::Peer;
use crate::homeserver::Whoami;
use crate::ipfs::fetch_error::FetchError;
use crate::ipfs::unixfs::{decode_file, UnixfsError};
use crate::ipfs::verify;
use crate::metrics::METRICS;

use super::car_pin::CAR_TYPE;
use super::rate::Charge;
use super::{answer, content_length, recorded, Recorded, UploadError, Uploader};

/// The first pause between rounds of asking the gateways for a root none has yet; doubled
/// each round up to [`MAX_RETRY_PAUSE`], always within `upload.pin_find_timeout`.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(250);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// The path's CID: any multibase the `cid` crate reads, raw or percent-encoded (the router
/// has decoded the segment once; a client that encoded twice is forgiven once more).
/// Why not, in words for the client.
pub fn parse_cid(segment: &str) -> Result<Cid, String> {
    let text = if segment.contains('%') {
        percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| "not UTF-8".to_owned())?
            .into_owned()
    } else {
        segment.to_owned()
    };
    let cid = Cid::try_from(text.as_str()).map_err(|e| e.to_string())?;
    if !verify::is_supported(&cid) {
        return Err(format!(
            "hash function 0x{:x} cannot be verified here",
            cid.hash().code()
        ));
    }
    Ok(cid)
}

impl Uploader {
    /// Pins `segment`'s CID for an accepted user; the success answer, or why not.
    pub async fn pin(
        &self,
        parts: &Parts,
        body: Body,
        user: &Whoami,
        peer: &Peer,
        segment: &str,
    ) -> Recorded {
        recorded(&METRICS.pins, "pinned", async |record| {
            self.pin_cid(parts, body, user, peer, segment, record).await
        })
        .await
    }

    /// [`Self::pin`]'s work, filling in `record` as it learns the CID and size.
    async fn pin_cid(
        &self,
        parts: &Parts,
        body: Body,
        user: &Whoami,
        peer: &Peer,
        segment: &str,
        record: &mut UploadRecord,
    ) -> Result<Response<Body>, UploadError> {
        if user.is_guest && !self.settings.allow_guests {
            return Err(UploadError::Guest);
        }
        let cid = parse_cid(segment).map_err(UploadError::NotACid)?;
        record.cid = Some(cid.to_string());
        // Before any fetch: a blocked CID costs us nothing.
        if self.denylist.blocks(&cid) {
            METRICS.denylist_refusals.inc();
            return Err(UploadError::Blocked(cid));
        }
        let limit = self.max_bytes(parts, peer).await;
        let carries_blocks = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(CAR_TYPE));
        if carries_blocks {
            return self
                .pin_car(cid, body, user, limit, content_length(parts), record)
                .await;
        }
        drop(body);
        let mut charge = self.start_charge(user, None)?;
        // Already pinned: answered at once (no fetch, no bytes charged).
        if self.store.pinned(&cid).await? {
            return Ok(self.already_pinned(cid, user, charge));
        }
        let size = self.find_root(&cid).await?;
        record.bytes = size;
        if size > limit {
            return Err(UploadError::TooLarge { limit });
        }
        charge.cover(size).map_err(UploadError::RateLimited)?;
        if let Err(error) = self.store.pin(&cid, self.settings.pin_timeout).await {
            // A pin/add that timed out may still complete: it was not pinned before this
            // request (asked above), so what it leaves is ours to remove.
            if !self.stored.contains_key(&cid) {
                self.unpin(&cid, "the pin failed").await;
            }
            return Err(error.into());
        }
        self.stored.insert(cid, ());
        charge.keep();
        self.pinned_here(&cid);
        tracing::info!(%cid, bytes = size, user = %user.user_id, "CID pinned on the store");
        Ok(answer(&self.content_uri(user, &cid)))
    }

    /// The answer to a pin of what the store holds already: given at once, the request
    /// charged but none of its bytes.
    pub(super) fn already_pinned(&self, cid: Cid, user: &Whoami, charge: Charge) -> Response<Body> {
        self.stored.insert(cid, ());
        charge.keep();
        answer(&self.content_uri(user, &cid))
    }

    /// The verified root of `cid` from the first gateway to have it, asked in rounds until
    /// `upload.pin_find_timeout`: its file size, or why it is not media.
    async fn find_root(&self, cid: &Cid) -> Result<u64, UploadError> {
        let wait = self.settings.pin_find_timeout;
        let deadline = Instant::now() + wait;
        let mut pause = FIRST_RETRY_PAUSE;
        let block = loop {
            let gateways = self.gateways.current();
            let attempts: Vec<_> = gateways
                .all()
                .iter()
                .map(|gateway| Box::pin(gateway.fetch_block(cid)))
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if attempts.is_empty() || left.is_zero() {
                return Err(UploadError::NotFound(wait));
            }
            match tokio::time::timeout(left, futures_util::future::select_ok(attempts)).await {
                Ok(Ok((block, _))) => break block,
                Ok(Err(FetchError::Unsupported(why))) => return Err(UploadError::NotACid(why)),
                Ok(Err(error)) => tracing::debug!(%cid, %error, "pin: root not found yet"),
                Err(_) => return Err(UploadError::NotFound(wait)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(UploadError::NotFound(wait));
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        };
        match decode_file(cid, block) {
            Ok(node) => Ok(node.size),
            Err(UnixfsError::NotAFile(kind)) => Err(UploadError::NotMedia(format!(
                "this CID is {kind}, not a file; pin each file on its own"
            ))),
            Err(error) => Err(UploadError::NotMedia(error.to_string())),
        }
    }
}
