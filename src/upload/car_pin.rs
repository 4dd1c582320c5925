//! A pin that carries its blocks: `POST .../pin/{cid}` with `Content-Type:
//! application/vnd.ipld.car` and a CARv1 body (the client computed the CID and has no IPFS
//! node to serve it from).
//!
//! Nothing of the CAR reaches the store until all of it has been checked:
//!
//! 1. **Spool**: the CAR is read as it arrives ([`CarReader`]); its header must name exactly
//!    the path's CID as its one root; every block is checked against its CID as trustless
//!    retrieval checks it ([`verify::verify_block`]: the allowed hashes, the 2 MiB block cap;
//!    identity CIDs are never stored) and written to an unlinked temporary file, with an
//!    index of where each block is. Memory is one block and the index, never the CAR; the
//!    file is bounded by the CAR's size limit, and vanishes with its handle.
//! 2. **Walk**: the file DAG is walked from the path's CID with the same [`FileWalker`] as
//!    retrieval (its structure, sizes and cost bounds), taking each block from the spool, in
//!    whatever order the CAR had them (`ipfs-car` writes the leaves first). A block it needs
//!    that the CAR lacks, a directory, or a file over `upload.max_bytes` is refused here.
//! 3. **Import**: exactly the walked blocks (no extra block the CAR carried) are streamed
//!    from the spool to the store as a new CAR (`dag/import` with `pin-roots`, or Cluster's
//!    `add?format=car`), and the root the store reports must be ours.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures_util::StreamExt;
use http::Response;
use http_body_util::BodyDataStream;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::access_log::UploadRecord;
use crate::body::Body;
use crate::homeserver::Whoami;
use crate::ipfs::car::{CarError, CarReader};
use crate::ipfs::verify::{self, identity_block};
use crate::ipfs::walk::{FileWalker, WalkError};

use super::rate::Charge;
use super::{answer, UploadError, Uploader};

/// The media type of a pin request that carries its blocks.
pub const CAR_TYPE: &str = "application/vnd.ipld.car";

/// The most CAR bytes accepted for a file limit of `limit` bytes: the file's bytes plus room
/// for the DAG's own nodes and the CAR's framing (a quarter more and 1 MiB; real DAGs need
/// well under 1%, see `walk`'s cost bounds).
pub fn car_limit(limit: u64) -> u64 {
    limit.saturating_add(limit / 4).saturating_add(1024 * 1024)
}

/// Where a spooled block is.
#[derive(Debug, Clone, Copy)]
struct Spooled {
    offset: u64,
    len: u32,
}

/// Why the body stopped, when it was our counting that stopped it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
struct Stopped(String);

impl Uploader {
    pub(super) async fn pin_car(
        &self,
        cid: Cid,
        body: Body,
        user: &Whoami,
        limit: u64,
        announced: Option<u64>,
        record: &mut UploadRecord,
    ) -> Result<Response<Body>, UploadError> {
        let car_limit = car_limit(limit);
        if announced.is_some_and(|n| n > car_limit) {
            return Err(UploadError::TooLarge { limit });
        }
        let charge = self.start_charge(user, announced)?;
        if self.store.pinned(&cid).await? {
            return Ok(self.already_pinned(cid, user, charge));
        }
        let charge = Arc::new(Mutex::new(charge));
        let fault: Arc<Mutex<Option<UploadError>>> = Arc::default();
        let (spool, index, car_bytes) = self
            .spool(cid, body, limit, car_limit, &charge, &fault)
            .await
            .map_err(|e| {
                fault
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or(e)
            })?;
        record.bytes = car_bytes;
        let (order, file_size) = walk(cid, &index, &spool, self.settings.max_dag_blocks).await?;
        if file_size > limit {
            return Err(UploadError::TooLarge { limit });
        }
        let blocks = order.len();
        let theirs = self.import(cid, spool, &index, order).await?;
        if theirs != cid {
            tracing::error!(ours = %cid, %theirs, "misconfigured store: dag/import reported another root");
            return Err(UploadError::StoreMismatch { ours: cid, theirs });
        }
        self.stored.insert(cid, ());
        self.pinned_here(&cid);
        if let Ok(charge) = Arc::try_unwrap(charge) {
            charge
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .keep();
        }
        tracing::info!(%cid, bytes = file_size, blocks, user = %user.user_id, "CAR verified, imported and pinned on the store");
        Ok(answer(&self.content_uri(user, &cid)))
    }

    /// Reads the CAR, checks its root and every block, and writes the blocks to an unlinked
    /// temporary file; the file, the index, and the CAR's size.
    async fn spool(
        &self,
        cid: Cid,
        body: Body,
        limit: u64,
        car_limit: u64,
        charge: &Arc<Mutex<Charge>>,
        fault: &Arc<Mutex<Option<UploadError>>>,
    ) -> Result<(tokio::fs::File, HashMap<Cid, Spooled>, u64), UploadError> {
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stream = {
            let (seen, charge, fault) = (Arc::clone(&seen), Arc::clone(charge), Arc::clone(fault));
            BodyDataStream::new(body).map(move |item| {
                let chunk = item.map_err(|e| Stopped(crate::chain::error_chain(&*e)))?;
                let total = seen
                    .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed)
                    + chunk.len() as u64;
                let stop = if total > car_limit {
                    Some(UploadError::TooLarge { limit })
                } else {
                    charge
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .cover(total)
                        .err()
                        .map(UploadError::RateLimited)
                };
                if let Some(stop) = stop {
                    let why = stop.to_string();
                    *fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop);
                    return Err(Stopped(why));
                }
                Ok(chunk)
            })
        };
        let mut car = CarReader::new(Box::pin(stream));
        let header = car.header().await.map_err(car_error)?;
        if header.roots.as_slice() != [cid] {
            let roots: Vec<String> = header.roots.iter().map(Cid::to_string).collect();
            return Err(UploadError::Car(format!(
                "its root is [{}], not the CID in the path ({cid})",
                roots.join(", ")
            )));
        }
        let dir = self.settings.spool_dir.clone();
        let file = tokio::task::spawn_blocking(move || match dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        })
        .await
        .map_err(|e| UploadError::Body(e.to_string()))?
        .map_err(|e| UploadError::Body(format!("no spool file: {e}")))?;
        let mut file = tokio::fs::File::from_std(file);
        let mut index = HashMap::new();
        let mut offset = 0u64;
        while let Some((block_cid, block)) = car.next_block().await.map_err(car_error)? {
            verify::verify_block(&block_cid, &block).map_err(|e| {
                UploadError::Car(format!("block {block_cid} does not match its CID: {e}"))
            })?;
            if index.contains_key(&block_cid) || identity_block(&block_cid).ok().flatten().is_some()
            {
                continue;
            }
            if index.len() as u64 >= self.settings.max_dag_blocks {
                return Err(UploadError::Car(format!(
                    "more than {} blocks",
                    self.settings.max_dag_blocks
                )));
            }
            file.write_all(&block)
                .await
                .map_err(|e| UploadError::Body(format!("spool: {e}")))?;
            index.insert(
                block_cid,
                Spooled {
                    offset,
                    len: block.len() as u32,
                },
            );
            offset += block.len() as u64;
        }
        file.flush()
            .await
            .map_err(|e| UploadError::Body(format!("spool: {e}")))?;
        let total = seen.load(std::sync::atomic::Ordering::Relaxed);
        Ok((file, index, total))
    }

    /// Streams exactly the walked blocks from the spool to the store as a CAR rooted at
    /// `cid`; the root it reports.
    async fn import(
        &self,
        cid: Cid,
        spool: tokio::fs::File,
        index: &HashMap<Cid, Spooled>,
        order: Vec<Cid>,
    ) -> Result<Cid, UploadError> {
        let sections: Vec<(Cid, Spooled)> = order
            .into_iter()
            .filter_map(|c| index.get(&c).map(|s| (c, *s)))
            .collect();
        let header = car_header(&cid);
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(header) })
            .chain(futures_util::stream::unfold(
                (spool, sections.into_iter()),
                |(mut spool, mut sections)| async move {
                    let (block_cid, at) = sections.next()?;
                    let section = read_section(&mut spool, &block_cid, at).await;
                    Some((section, (spool, sections)))
                },
            ));
        match tokio::time::timeout(self.settings.pin_timeout, self.store.import_car(stream)).await {
            Ok(Ok(root)) => Ok(root),
            Ok(Err(error)) => {
                self.unpin_unless_stored(&cid, "the import failed").await;
                Err(error.into())
            }
            Err(_) => {
                self.unpin_unless_stored(&cid, "the import timed out").await;
                Err(UploadError::StoreTimeout(self.settings.pin_timeout))
            }
        }
    }

    /// The CID was not pinned before (asked first): what a failed import left is ours.
    async fn unpin_unless_stored(&self, cid: &Cid, why: &str) {
        if !self.stored.contains_key(cid) {
            self.unpin(cid, why).await;
        }
    }
}

/// Walks the file DAG from `cid` over the spooled blocks; the blocks it needed, each once,
/// in walk order, and the file's size.
async fn walk(
    cid: Cid,
    index: &HashMap<Cid, Spooled>,
    spool: &tokio::fs::File,
    max_blocks: u64,
) -> Result<(Vec<Cid>, u64), UploadError> {
    let mut spool = spool
        .try_clone()
        .await
        .map_err(|e| UploadError::Body(format!("spool: {e}")))?;
    let mut walker = FileWalker::new(cid, None).with_max_blocks(max_blocks);
    let mut order = Vec::new();
    let mut taken = std::collections::HashSet::new();
    // Bounded: the walker refuses more than `max_blocks` blocks.
    while let Some(needed) = walker.next_needed() {
        let block = match identity_block(&needed) {
            Ok(Some(inline)) => inline,
            Err(e) => return Err(UploadError::Car(e.to_string())),
            Ok(None) => {
                let Some(at) = index.get(&needed) else {
                    return Err(UploadError::Car(format!(
                        "block {needed} of the file is missing"
                    )));
                };
                if taken.insert(needed) {
                    order.push(needed);
                }
                read_block(&mut spool, *at).await?
            }
        };
        // Discarding the yielded file bytes: slices of the block, freed with it.
        walker.accept(&needed, block).map_err(|e| match e {
            WalkError::NotAFile(kind) => UploadError::NotMedia(format!(
                "this CID is {kind}, not a file; pin each file on its own"
            )),
            e => UploadError::Car(e.to_string()),
        })?;
    }
    let size = walker.file_size().unwrap_or(0);
    Ok((order, size))
}

async fn read_block(spool: &mut tokio::fs::File, at: Spooled) -> Result<Bytes, UploadError> {
    let mut block = BytesMut::zeroed(at.len as usize);
    spool
        .seek(std::io::SeekFrom::Start(at.offset))
        .await
        .map_err(|e| UploadError::Body(format!("spool: {e}")))?;
    spool
        .read_exact(&mut block)
        .await
        .map_err(|e| UploadError::Body(format!("spool: {e}")))?;
    Ok(block.freeze())
}

/// One CAR section (varint length, CID, block) read back from the spool.
async fn read_section(
    spool: &mut tokio::fs::File,
    cid: &Cid,
    at: Spooled,
) -> Result<Bytes, std::io::Error> {
    let block = read_block(spool, at)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let cid = cid.to_bytes();
    let mut section = BytesMut::with_capacity(10 + cid.len() + block.len());
    section.extend_from_slice(unsigned_varint::encode::u64(
        (cid.len() + block.len()) as u64,
        &mut unsigned_varint::encode::u64_buffer(),
    ));
    section.extend_from_slice(&cid);
    section.extend_from_slice(&block);
    Ok(section.freeze())
}

/// A CARv1 header naming `root`.
fn car_header(root: &Cid) -> Bytes {
    #[derive(serde::Serialize)]
    struct V1<'r> {
        roots: &'r [Cid],
        version: u64,
    }
    let header = serde_ipld_dagcbor::to_vec(&V1 {
        roots: std::slice::from_ref(root),
        version: 1,
    })
    .expect("a header of CIDs always encodes");
    let mut out = BytesMut::new();
    out.extend_from_slice(unsigned_varint::encode::u64(
        header.len() as u64,
        &mut unsigned_varint::encode::u64_buffer(),
    ));
    out.extend_from_slice(&header);
    out.freeze()
}

fn car_error(error: CarError) -> UploadError {
    match error {
        CarError::Stream(e) => UploadError::Body(e.to_string()),
        e => UploadError::Car(e.to_string()),
    }
}
