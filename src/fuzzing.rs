//! Fuzz entry points (feature `fuzzing`; not part of the proxy's API).
//!
//! One `pub fn` per fuzz target, each taking the fuzzer's raw bytes. They reach the crate's
//! internals through `crate::` paths, so the fuzz crate (`fuzz/`) depends on nothing but this
//! module: when modules move, only this file changes. Each function asserts the properties
//! that must hold for any input (a failed assertion or any panic is a finding); see
//! `fuzz/README.md` for the input layout of each target.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use cid::multihash::Multihash;
use cid::Cid;
use futures_util::stream;
use http::header::{self, HeaderMap, HeaderValue};
use sha2::Digest as _;

use crate::byte_range::ByteRange;
use crate::denylist::Denylist;
use crate::ipfs::car::{CarError, CarHeader, CarReader, MAX_SECTION_SIZE};
use crate::ipfs::multicodec::{DAG_PB, RAW};
use crate::ipfs::test_encode::{encode_car, encode_file_node};
use crate::ipfs::unixfs::{decode_file, FileLink, FileNode, UnixfsError, MAX_FILE_SIZE, MAX_LINKS};
use crate::ipfs::verify::{identity_block, verify_block, MAX_BLOCK_SIZE};
use crate::ipfs::walk::{
    block_budget, next_from_car, CarWalkError, FileWalker, WalkError, DEFAULT_MAX_BLOCKS,
    MAX_DEPTH, MAX_EMPTY_LINKS,
};
use crate::media::media_id::{self, IpfsMedia, IPFS_PREFIX};
use crate::media::range::{self, Ranged};
use crate::media::thumbnail::{probe, Limits, ThumbnailError};
use crate::router::{self, Access, Action, MediaPath};

/// Runs a future whose streams are always ready (`stream::iter`) to completion: no runtime.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a future over an always-ready stream was pending"),
    }
}

type ChunkStream = stream::Iter<std::vec::IntoIter<Result<Bytes, Infallible>>>;

/// `data` as a stream of chunks of `size` bytes (the last one shorter).
fn chunked(data: &[u8], size: usize) -> CarReader<ChunkStream> {
    let chunks: Vec<Result<Bytes, Infallible>> = data
        .chunks(size.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    CarReader::new(stream::iter(chunks))
}

/// What reading a whole CAR gave: the header, the sections, and how it ended.
#[derive(Debug, PartialEq, Eq)]
struct CarRead {
    header: Option<CarHeader>,
    blocks: Vec<(Cid, Bytes)>,
    /// `None`: a clean end. Errors are compared by their message.
    error: Option<String>,
}

fn read_car(data: &[u8], chunk: usize) -> CarRead {
    let mut reader = chunked(data, chunk);
    let mut read = CarRead {
        header: None,
        blocks: Vec::new(),
        error: None,
    };
    block_on(async {
        match reader.header().await {
            Ok(header) => read.header = Some(header.clone()),
            Err(e) => {
                read.error = Some(e.to_string());
                assert!(
                    matches!(reader.next_block().await, Err(CarError::AfterError)),
                    "a failed reader must stay failed"
                );
                return;
            }
        }
        loop {
            // The reader holds at most one section of its own.
            assert!(reader.buffered() <= MAX_SECTION_SIZE);
            match reader.next_block().await {
                Ok(Some((cid, block))) => {
                    assert!(block.len() < MAX_SECTION_SIZE, "a section over the cap");
                    // Every section takes at least two bytes of input (length and CID).
                    assert!(read.blocks.len() < data.len());
                    read.blocks.push((cid, block));
                }
                Ok(None) => {
                    assert!(matches!(reader.next_block().await, Ok(None)));
                    return;
                }
                Err(e) => {
                    read.error = Some(e.to_string());
                    assert!(matches!(
                        reader.next_block().await,
                        Err(CarError::AfterError)
                    ));
                    return;
                }
            }
        }
    });
    assert!(reader.buffered() <= MAX_SECTION_SIZE);
    read
}

/// CAR reader: `data` is a CARv1 stream.
///
/// Asserts: no panic; no section over [`MAX_SECTION_SIZE`]; the reader stays failed after an
/// error and ended after its end; the result does not depend on how the stream is chunked
/// (one chunk, 1-byte chunks for small inputs, an odd size); a CAR read without error
/// re-encodes (`encode_car`) to one that reads back the same.
pub fn car(data: &[u8]) {
    let whole = read_car(data, data.len());
    let odd = read_car(data, 1 + data.len() % 13);
    assert_eq!(whole, odd, "chunking changed what the CAR reads as");
    if data.len() <= 4096 {
        assert_eq!(whole, read_car(data, 1), "1-byte chunks changed the CAR");
    }
    if let (Some(header), None) = (&whole.header, &whole.error) {
        let again = encode_car(
            &header.roots,
            whole.blocks.iter().map(|(cid, block)| (cid, &block[..])),
        );
        let reread = read_car(&again, again.len());
        assert_eq!(reread, whole, "a re-encoded CAR reads differently");
    }
}

fn sha256_cid(codec: u64, block: &[u8]) -> Cid {
    let mh = Multihash::wrap(0x12, &sha2::Sha256::digest(block)).expect("32 bytes fit");
    Cid::new_v1(codec, mh)
}

/// Checks what a decoded file node must satisfy.
fn check_node(cid: &Cid, block: &Bytes, node: &FileNode) {
    let links: u64 = node.links.iter().map(|l| l.blocksize).sum();
    assert_eq!(
        node.size,
        node.data.len() as u64 + links,
        "size does not add up"
    );
    assert!(node.size <= MAX_FILE_SIZE.max(block.len() as u64));
    assert!(node.links.len() <= MAX_LINKS);
    assert!(node.data.len() <= block.len());
    // The data is a slice of the block (zero-copy), not a copy of something else.
    let start = node.data.as_ptr() as usize;
    let block_start = block.as_ptr() as usize;
    assert!(node.data.is_empty() || (start >= block_start && start <= block_start + block.len()));
    if cid.codec() == RAW {
        assert_eq!(&node.data, block);
        assert!(node.links.is_empty());
    }
}

/// dag-pb/UnixFS decoder: `data[0] % 4` picks the CID's codec (0 dag-pb, 1 raw, 2 dag-cbor,
/// 3 CIDv0 dag-pb), the rest is the block.
///
/// Asserts: no panic; raw blocks are leaves holding the block; `size == data + sum of
/// blocksizes` and within the caps; at most [`MAX_LINKS`] links; a decoded file node
/// re-encodes (`encode_file_node`) to a node that decodes the same; decoding is deterministic.
pub fn unixfs_node(data: &[u8]) {
    let Some((&selector, block)) = data.split_first() else {
        return;
    };
    let cid = match selector % 4 {
        0 => sha256_cid(DAG_PB, block),
        1 => sha256_cid(RAW, block),
        2 => sha256_cid(0x71, block),
        _ => Cid::new_v0(Multihash::wrap(0x12, &sha2::Sha256::digest(block)).unwrap())
            .expect("sha2-256 CIDv0"),
    };
    let block = Bytes::copy_from_slice(block);
    let result = decode_file(&cid, block.clone());
    assert_eq!(
        result,
        decode_file(&cid, block.clone()),
        "not deterministic"
    );
    match result {
        Ok(node) => {
            check_node(&cid, &block, &node);
            if cid.codec() == DAG_PB {
                let again = Bytes::from(encode_file_node(&node.data, &node.links));
                let redecoded =
                    decode_file(&cid, again.clone()).expect("a re-encoded node decodes");
                check_node(&cid, &again, &redecoded);
                assert_eq!(redecoded.data, node.data);
                assert_eq!(redecoded.links, node.links);
                assert_eq!(redecoded.size, node.size);
            }
        }
        Err(UnixfsError::UnsupportedCodec(c)) => assert_eq!(c, 0x71),
        Err(_) => assert_eq!(cid.codec(), DAG_PB, "a raw block cannot fail"),
    }
}

/// A built node: its CID, file size, file bytes and height (0: no links), and what walking its
/// subtree costs against the walk's budget (a repeated child is walked, and paid for, again).
#[derive(Clone)]
struct Built {
    cid: Cid,
    size: u64,
    bytes: Vec<u8>,
    height: u32,
    /// Blocks the walk accepts for this subtree, identity children included.
    blocks: u64,
    /// Links with `blocksize` 0 in this subtree.
    empty_links: u64,
}

impl Built {
    fn leaf(cid: Cid, bytes: Vec<u8>) -> Built {
        Built {
            cid,
            size: bytes.len() as u64,
            bytes,
            height: 0,
            blocks: 1,
            empty_links: 0,
        }
    }

    /// Whether a walk of this DAG stays within the budget the walk enforces
    /// ([`block_budget`], the default absolute cap, [`MAX_EMPTY_LINKS`]): a consistent DAG
    /// over it is refused as `TooCostly` by design, however valid its blocks.
    fn within_budget(&self) -> bool {
        self.empty_links <= MAX_EMPTY_LINKS
            && self.blocks <= block_budget(self.size).min(DEFAULT_MAX_BLOCKS)
    }
}

/// A file DAG built from fuzz bytes with real hashes, so mutations do not just break hashes.
struct DagBuilder<'a> {
    input: &'a [u8],
    pos: usize,
    blocks: HashMap<Cid, Bytes>,
    nodes: usize,
    /// Whether every parent's blocksize is its child's real size (so the walk must succeed).
    consistent: bool,
    /// Whether every node's bytes are known (no literal blocks).
    known: bool,
    /// The last node built, for repeated (deduplicated) children.
    last: Option<Built>,
}

impl DagBuilder<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.input.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let end = (self.pos + n).min(self.input.len());
        let out = &self.input[self.pos..end];
        self.pos = end;
        out
    }

    /// A CID for `block`: identity when asked and small enough, else sha2-256 (or CIDv0).
    fn cid(&mut self, codec: u64, block: &[u8], kind: u8) -> Cid {
        let cid = if kind & 0x40 != 0 && block.len() <= 64 {
            Cid::new_v1(codec, Multihash::wrap(0, block).expect("<= 64 bytes"))
        } else if kind & 0x80 != 0 && codec == DAG_PB {
            let mh = Multihash::wrap(0x12, &sha2::Sha256::digest(block)).unwrap();
            Cid::new_v0(mh).expect("sha2-256 CIDv0")
        } else {
            sha256_cid(codec, block)
        };
        self.blocks.insert(cid, Bytes::copy_from_slice(block));
        cid
    }

    /// One node at `depth`.
    fn node(&mut self, depth: u32) -> Built {
        self.nodes += 1;
        let kind = self.byte().unwrap_or(0);
        let built = match kind & 3 {
            // A raw leaf.
            0 => {
                let len = usize::from(self.byte().unwrap_or(0));
                let data = self.take(len).to_vec();
                let cid = self.cid(RAW, &data, kind);
                Built::leaf(cid, data)
            }
            // A dag-pb file node with its own data and up to 7 children.
            1 => {
                let len = usize::from(self.byte().unwrap_or(0) % 32);
                let own = self.take(len).to_vec();
                let children = (kind >> 2) & 7;
                let mut links = Vec::new();
                let mut content = own.clone();
                let mut height = 0;
                let (mut blocks, mut empty_links) = (1, 0);
                for _ in 0..children {
                    if depth >= 40 || self.nodes >= 512 || self.pos >= self.input.len() {
                        break;
                    }
                    let child = self.node(depth + 1);
                    height = height.max(child.height + 1);
                    blocks += child.blocks;
                    empty_links += child.empty_links + u64::from(child.size == 0);
                    // Sometimes a parent lies about a child's size.
                    let blocksize = if kind & 0x20 != 0 && self.byte().unwrap_or(0) == 0xff {
                        self.consistent = false;
                        child.size + 1
                    } else {
                        child.size
                    };
                    links.push(FileLink {
                        cid: child.cid,
                        blocksize,
                    });
                    content.extend_from_slice(&child.bytes);
                }
                let block = encode_file_node(&own, &links);
                let cid = self.cid(DAG_PB, &block, kind);
                Built {
                    cid,
                    size: content.len() as u64,
                    bytes: content,
                    height,
                    blocks,
                    empty_links,
                }
            }
            // A literal dag-pb block (may be anything; its links are likely unresolvable).
            2 => {
                let len = usize::from(self.byte().unwrap_or(0)) * 4;
                let block = self.take(len).to_vec();
                self.known = false;
                let cid = self.cid(DAG_PB, &block, kind);
                Built::leaf(cid, Vec::new())
            }
            // The previous node again (a file with repeated chunks).
            _ => match self.last.clone() {
                Some(last) => last,
                None => {
                    let cid = self.cid(RAW, b"", kind);
                    Built::leaf(cid, Vec::new())
                }
            },
        };
        self.last = Some(built.clone());
        built
    }
}

/// How a walk went.
#[derive(Debug)]
struct Walked {
    bytes: Vec<u8>,
    complete: bool,
    file_size: Option<u64>,
    error: Option<WalkError>,
}

/// The most blocks one walk is fed (a DAG reusing a child can ask for it without end).
const MAX_WALK_STEPS: usize = 4096;

fn check_yield(walker: &FileWalker, chunks: &[Bytes], walked: &mut Walked) {
    for chunk in chunks {
        assert!(!chunk.is_empty(), "the walk yielded an empty chunk");
        walked.bytes.extend_from_slice(chunk);
    }
    if let Some(size) = walker.file_size() {
        assert!(
            walked.bytes.len() as u64 <= size,
            "the walk yielded more bytes than the root's filesize"
        );
    }
}

/// Feeds `walker` from `blocks` (and identity CIDs), `probe` picking a step at which a wrong
/// block and an unexpected CID are offered first.
fn walk_from_map(
    mut walker: FileWalker,
    blocks: &HashMap<Cid, Bytes>,
    mut walked: Walked,
    probe: usize,
) -> Walked {
    let mut steps = 0;
    while let Some(needed) = walker.next_needed() {
        steps += 1;
        if steps > MAX_WALK_STEPS {
            break;
        }
        let block = match identity_block(&needed) {
            Ok(Some(inline)) => inline,
            Ok(None) => match blocks.get(&needed) {
                Some(block) => block.clone(),
                None => break,
            },
            Err(e) => {
                walked.error = Some(e.into());
                break;
            }
        };
        let checkable = block.len() < MAX_BLOCK_SIZE && verify_block(&needed, &block).is_ok();
        if steps == probe && checkable {
            // A corrupted block and a block for another CID leave the walk as it was.
            let mut wrong = block.to_vec();
            wrong.push(0);
            let err = walker.accept(&needed, Bytes::from(wrong)).unwrap_err();
            assert!(
                err.is_bad_block(),
                "a corrupted block was not a bad block: {err}"
            );
            let other = sha256_cid(RAW, b"not the block you are looking for");
            if other != needed {
                let err = walker.accept(&other, block.clone()).unwrap_err();
                assert!(
                    err.is_bad_block(),
                    "an unexpected CID was not a bad block: {err}"
                );
            }
            assert_eq!(
                walker.next_needed(),
                Some(needed),
                "a bad block changed the walk"
            );
        }
        match walker.accept(&needed, block) {
            Ok(chunks) => check_yield(&walker, &chunks, &mut walked),
            Err(e) => {
                if e.is_bad_block() {
                    assert_eq!(
                        walker.next_needed(),
                        Some(needed),
                        "a bad block changed the walk"
                    );
                }
                walked.error = Some(e);
                break;
            }
        }
    }
    walked.complete = walker.is_complete();
    walked.file_size = walker.file_size();
    if walked.complete {
        assert!(walker.next_needed().is_none());
    }
    walked
}

fn new_walked() -> Walked {
    Walked {
        bytes: Vec::new(),
        complete: false,
        file_size: None,
        error: None,
    }
}

/// The verified walk. `data[0]`: bit 0 the mode (0: the rest after the 5-byte prefix is a CAR;
/// 1: it describes a file DAG built with real hashes), bits 1-2 the range (none,
/// `bytes=s-`, `bytes=s-e`, `bytes=-n`), bit 3 a raw `[s, e)` range instead of an HTTP one;
/// `data[1..3]` and `data[3..5]` are `s` and `e`/`n` (u16 LE).
///
/// Asserts: no panic; never more bytes than the root's filesize; a complete walk yields exactly
/// the filesize (and, for a built DAG whose sizes are consistent and whose cost is within the
/// walk's budget, exactly the file's bytes);
/// a ranged walk over the same blocks completes when the whole walk does and yields exactly
/// the range's slice of the whole file (never more than the range); a corrupted block or an
/// unexpected CID is a bad block that leaves the walk unchanged; no empty chunks.
pub fn walk(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let flags = data[0];
    let a = u64::from(u16::from_le_bytes([data[1], data[2]]));
    let b = u64::from(u16::from_le_bytes([data[3], data[4]]));
    let body = &data[5..];
    let probe = 1 + body.len() % 5;

    let (root, blocks, expected, full) = if flags & 1 == 0 {
        // A CAR: the walk reads it as a trustless gateway's answer, then takes what is still
        // missing from all the blocks it held (as if fetched elsewhere by CID).
        let read = read_car(body, 1 + body.len() % 7);
        let Some(root) = read
            .header
            .as_ref()
            .and_then(|h| h.roots.first().copied())
            .or_else(|| read.blocks.first().map(|(c, _)| *c))
        else {
            return;
        };
        // Only blocks that match their CIDs: a CAR may send a CID twice, once wrong.
        let blocks: HashMap<Cid, Bytes> = read
            .blocks
            .iter()
            .filter(|(cid, block)| verify_block(cid, block).is_ok())
            .cloned()
            .collect();
        let mut walker = FileWalker::new(root, None);
        let mut walked = new_walked();
        let mut car = chunked(body, 1 + body.len() % 7);
        let mut steps = 0;
        let car_result = block_on(async {
            loop {
                steps += 1;
                if steps > MAX_WALK_STEPS {
                    return Ok(());
                }
                match next_from_car(&mut car, &mut walker).await? {
                    Some(chunks) => check_yield(&walker, &chunks, &mut walked),
                    None => return Ok(()),
                }
            }
        });
        let full = match car_result {
            // The CAR ended (or the walk did): the rest comes from the blocks held.
            Ok(()) => walk_from_map(walker, &blocks, walked, probe),
            Err(CarWalkError::Walk(e)) if !e.is_bad_block() => {
                walked.error = Some(e);
                walked.file_size = walker.file_size();
                walked
            }
            Err(_) => {
                // A broken CAR or a block out of order: the rest by CID, as the proxy does.
                walk_from_map(walker, &blocks, walked, probe)
            }
        };
        (root, blocks, None, full)
    } else {
        let mut builder = DagBuilder {
            input: body,
            pos: 0,
            blocks: HashMap::new(),
            nodes: 0,
            consistent: true,
            known: true,
            last: None,
        };
        let built = builder.node(0);
        // A node with links deeper than MAX_DEPTH ends the walk (TooDeep); a DAG costlier than
        // its file's size justifies ends it too (TooCostly).
        let expected = (builder.consistent
            && builder.known
            && built.height <= MAX_DEPTH
            && built.within_budget())
        .then_some(built.bytes);
        let root = built.cid;
        let full = walk_from_map(
            FileWalker::new(root, None),
            &builder.blocks,
            new_walked(),
            probe,
        );
        (root, builder.blocks, expected, full)
    };

    if full.complete {
        let size = full.file_size.expect("a complete walk knows the size");
        assert_eq!(
            full.bytes.len() as u64,
            size,
            "a complete walk yields the filesize"
        );
    }
    if let Some(expected) = &expected {
        let hit_cap = full.error.is_none() && !full.complete;
        if !hit_cap {
            assert!(
                full.complete,
                "a consistent DAG failed to walk: {:?}",
                full.error
            );
            assert_eq!(
                &full.bytes, expected,
                "the walk yielded other bytes than the file's"
            );
        }
    }

    // The same blocks, walked for a range only.
    let (walker, raw_range) = match (flags >> 1) & 3 {
        0 => return,
        kind => {
            let range = match kind {
                1 => ByteRange::From {
                    start: a,
                    end: None,
                },
                2 => ByteRange::From {
                    start: a.min(b),
                    end: Some(a.max(b)),
                },
                _ => ByteRange::Suffix(b.max(1)),
            };
            if flags & 8 != 0 {
                (FileWalker::new(root, Some((a, b))), None)
            } else {
                (FileWalker::for_range(root, range), Some(range))
            }
        }
    };
    let ranged = walk_from_map(walker, &blocks, new_walked(), usize::MAX);
    if let Some(size) = ranged.file_size {
        let (start, end) = match raw_range {
            Some(range) => range
                .resolve(size)
                .map_or((0, 0), |r| (*r.start(), r.end() + 1)),
            None => (a.min(size), b.min(size).max(a.min(size))),
        };
        assert!(
            ranged.bytes.len() as u64 <= end - start,
            "a ranged walk yielded more than the range"
        );
        if full.complete {
            assert!(
                ranged.complete || ranged.error.is_none(),
                "a ranged walk failed where the whole walk did not: {:?}",
                ranged.error
            );
            if ranged.complete {
                assert_eq!(Some(size), full.file_size);
                assert_eq!(
                    ranged.bytes,
                    full.bytes[start as usize..end as usize],
                    "a ranged walk yielded other bytes than the file's"
                );
            }
        }
    }
}

fn owned(m: &MediaPath<'_>) -> (Access, Action, Option<String>, String, Option<String>) {
    (
        m.access,
        m.action,
        m.server_name.as_deref().map(str::to_owned),
        m.media_id.to_string(),
        m.file_name.as_deref().map(str::to_owned),
    )
}

fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn check_media_id(media_id: &str) {
    let alias = media_id::parse(media_id, media_id::DEFAULT_ALIAS_PREFIX);
    let plain = media_id::parse(media_id, "");
    let other = media_id::parse(media_id, "x-");
    assert_eq!(
        alias.is_some(),
        media_id.starts_with(IPFS_PREFIX) || media_id.starts_with(media_id::DEFAULT_ALIAS_PREFIX)
    );
    assert_eq!(plain.is_some(), media_id.starts_with(IPFS_PREFIX));
    if plain.is_some() {
        // `ipfs:` wins over any alias.
        assert_eq!(alias, plain);
        assert_eq!(other, plain);
    }
    for parsed in [alias, plain, other].into_iter().flatten() {
        let Ok(IpfsMedia { cid, canonical }) = parsed else {
            continue;
        };
        assert_eq!(canonical.version(), cid::Version::V1);
        assert_eq!(canonical.hash(), cid.hash());
        assert_eq!(canonical.codec(), cid.codec());
        // The CID as text reads back as the same CID (the gateway request is built from it).
        let again = media_id::parse(&format!("{IPFS_PREFIX}{cid}"), "")
            .expect("prefixed")
            .expect("a CID's own text is a valid CID");
        assert_eq!(again.cid, cid);
        assert_eq!(again.canonical, canonical);
    }
}

/// Router and media-ID parser: `data` (UTF-8) is a raw request path, and also a media ID.
///
/// Asserts: no panic; a classified path starts with a media prefix, has a non-empty media ID,
/// a server name exactly off federation routes, a file name only on client downloads and never
/// an empty one; re-encoding its segments gives a path classified the same (round trip); media
/// IDs are ours exactly with the `ipfs:` or alias prefix, `ipfs:` wins over the alias, and a
/// parsed CID's canonical form is v1 with the same hash and codec, and its text parses back.
pub fn route_and_media_id(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    check_media_id(path);
    let Some(m) = router::media_path(path) else {
        return;
    };
    assert!(path.starts_with("/_matrix/"));
    assert!(!m.media_id.is_empty());
    assert_eq!(m.server_name.is_none(), m.access == Access::Federation);
    assert!(m.server_name.as_deref().is_none_or(|s| !s.is_empty()));
    assert!(m.file_name.as_deref().is_none_or(|f| !f.is_empty()));
    if m.file_name.is_some() {
        assert_eq!(m.action, Action::Download);
        assert_ne!(m.access, Access::Federation);
    }
    check_media_id(&m.media_id);

    // Rebuild the path from the parsed segments, each fully percent-encoded.
    let action = match m.action {
        Action::Download => "download",
        Action::Thumbnail => "thumbnail",
    };
    let at = [
        path.find(&format!("/{action}/")),
        path.find("/download/"),
        path.find("/thumbnail/"),
    ]
    .into_iter()
    .flatten()
    .min()
    .expect("a classified path names its action");
    let mut rebuilt = format!("{}/{action}", &path[..at]);
    if let Some(server) = &m.server_name {
        rebuilt.push('/');
        rebuilt.push_str(&encode_segment(server));
    }
    rebuilt.push('/');
    rebuilt.push_str(&encode_segment(&m.media_id));
    if let Some(file) = &m.file_name {
        rebuilt.push('/');
        rebuilt.push_str(&encode_segment(file));
    }
    let again = router::media_path(&rebuilt).expect("a rebuilt media path is a media path");
    assert_eq!(owned(&again), owned(&m), "round trip through {rebuilt:?}");
}

/// The probe CIDs of a denylist text: whatever its rules name as a CID.
fn rule_cids(text: &str) -> Vec<(Cid, bool)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rule) = line.split_whitespace().next() else {
            continue;
        };
        if rule.starts_with('#') {
            continue;
        }
        let rule = rule.strip_prefix('!').unwrap_or(rule);
        let (cid, whole) = match rule.strip_prefix("/ipfs/") {
            Some(rest) => match rest.split_once('/') {
                Some((cid, path)) => (cid, path.is_empty() || path == "*"),
                None => (rest, true),
            },
            None if !rule.starts_with('/') => (rule, true),
            None => continue,
        };
        if let Ok(cid) = Cid::try_from(cid) {
            out.push((cid, whole));
        }
    }
    out
}

/// Denylist parser: `data` (UTF-8, lossily) is one denylist file.
///
/// Asserts: no panic; an error names a line of the file; a list has no more rules than lines;
/// lookups are deterministic and do not depend on their order (the double-hash memo); in a
/// file without exceptions or header, every whole-CID rule blocks its CID (in v0 and v1 form).
pub fn denylist(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count();
    let mut list = Denylist::default();
    let list = match list.add_file(&text) {
        Ok(()) => list,
        Err(e) => {
            assert!(
                e.line >= 1 && e.line <= lines.max(1),
                "error on line {} of {lines}",
                e.line
            );
            return;
        }
    };
    // A 64-hex-digit double hash may also read as a multihash: two rules from one line.
    assert!(list.len() + list.not_applicable() <= 2 * lines);

    let mut probes: Vec<Cid> = rule_cids(&text).into_iter().map(|(c, _)| c).collect();
    probes.push(sha256_cid(RAW, data));
    probes.push("bafkqaaa".parse().expect("the empty identity CID"));
    probes.truncate(64);
    let forward: Vec<bool> = probes.iter().map(|c| list.blocks(c)).collect();
    let mut fresh = Denylist::default();
    fresh.add_file(&text).expect("the same text parses again");
    let backward: Vec<bool> = probes.iter().rev().map(|c| fresh.blocks(c)).collect();
    let backward: Vec<bool> = backward.into_iter().rev().collect();
    assert_eq!(forward, backward, "verdicts depend on the order of lookups");
    let again: Vec<bool> = probes.iter().map(|c| list.blocks(c)).collect();
    assert_eq!(forward, again, "a remembered verdict differs");
    // A CIDv0 and the dag-pb CIDv1 of its multihash are one CID to every kind of rule.
    for (cid, verdict) in probes.iter().zip(&forward) {
        let other = match cid.version() {
            cid::Version::V0 => Cid::new_v1(DAG_PB, *cid.hash()),
            cid::Version::V1 if cid.codec() == DAG_PB => match Cid::new_v0(*cid.hash()) {
                Ok(v0) => v0,
                Err(_) => continue,
            },
            cid::Version::V1 => continue,
        };
        assert_eq!(list.blocks(&other), *verdict, "{cid} and {other} differ");
    }

    let has_header = text.split_inclusive('\n').any(|l| l.trim_end() == "---");
    if !text.contains('!') && !has_header {
        for (cid, whole) in rule_cids(&text) {
            if whole {
                assert!(list.blocks(&cid), "a rule for {cid} does not block it");
            }
        }
    }
}

/// Range parsing: `data[0]` bit 0 picks the content length from `data[1..9]` (u64 LE) rather
/// than `data[1..3]` (u16 LE); after those 8 bytes, the `Range` header value and, after a
/// newline, an `If-Range` value.
///
/// Asserts: no panic; a parsed range is well-formed (`end >= start`, suffix length > 0); a
/// resolved part lies inside the content (`start <= end < length`) and is what RFC 9110 says;
/// nothing is selected only from empty content or a start past its end; `select` agrees with
/// `requested` and `of`; a range's own `Range` header value parses back to it, and its
/// `entity-bytes` names the same bytes.
pub fn byte_range(data: &[u8]) {
    if data.len() < 9 {
        return;
    }
    let mut total_bytes = [0u8; 8];
    total_bytes.copy_from_slice(&data[1..9]);
    let total = if data[0] & 1 == 1 {
        u64::from_le_bytes(total_bytes)
    } else {
        u64::from(u16::from_le_bytes([data[1], data[2]]))
    };
    let rest = &data[9..];
    let (range_value, if_range) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let etag = HeaderValue::from_static("\"fuzz\"");
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(range_value) {
        headers.insert(header::RANGE, v);
    }
    if let Some(Ok(v)) = if_range.map(HeaderValue::from_bytes) {
        headers.insert(header::IF_RANGE, v);
    }

    let requested = range::requested(&headers, &etag);
    let selected = match range::requested(&headers, &etag) {
        None => range::Ranged::Whole,
        Some(wanted) => range::of(&wanted, total),
    };
    match requested {
        None => assert_eq!(selected, Ranged::Whole),
        Some(r) => assert_eq!(selected, range::of(&r, total)),
    }
    let Some(r) = requested else {
        return;
    };
    match r {
        ByteRange::From { start, end } => {
            assert!(
                end.is_none_or(|e| e >= start),
                "{r:?} ends before it starts"
            );
            assert_eq!(r.start(), Some(start));
        }
        ByteRange::Suffix(len) => {
            assert!(len > 0, "{r:?} selects nothing");
            assert_eq!(r.start(), None);
        }
    }
    for length in [total, 0, 1, u64::MAX, total.saturating_add(1), total / 2] {
        let resolved = r.resolve(length);
        // RFC 9110 §14.1.2, said another way.
        let expected = match r {
            ByteRange::From { start, end } if start < length => {
                Some(start..=end.unwrap_or(u64::MAX).min(length - 1))
            }
            ByteRange::From { .. } => None,
            ByteRange::Suffix(_) if length == 0 => None,
            ByteRange::Suffix(len) => Some(length.saturating_sub(len)..=length - 1),
        };
        assert_eq!(resolved, expected, "{r:?} in {length} bytes");
        match &resolved {
            Some(part) => {
                assert!(
                    part.start() <= part.end(),
                    "{r:?} resolved to an empty {part:?}"
                );
                assert!(
                    *part.end() < length,
                    "{r:?} resolved past the end: {part:?}"
                );
                let _ = range::content_range(part, length);
            }
            None => assert!(
                length == 0 || matches!(r, ByteRange::From { start, .. } if start >= length)
            ),
        }
        let _ = range::unsatisfied_range(length);
    }
    // The header value we would send a path gateway names the same range.
    let mut again = HeaderMap::new();
    let value = r.header_value();
    again.insert(header::RANGE, HeaderValue::from_str(&value).expect("ASCII"));
    assert_eq!(
        range::requested(&again, &etag),
        Some(r),
        "{value:?} reads back differently"
    );
    let entity = r.entity_bytes();
    let (from, to) = entity.split_once(':').expect("from:to");
    match r {
        ByteRange::From { start, end } => {
            assert_eq!(from.parse::<u64>().ok(), Some(start));
            assert_eq!(to.parse::<u64>().ok(), end);
            assert_eq!(to == "*", end.is_none());
        }
        ByteRange::Suffix(len) => {
            assert_eq!(
                from.strip_prefix('-').and_then(|n| n.parse().ok()),
                Some(len)
            );
            assert_eq!(to, "*");
        }
    }
}

const SOURCE_TYPES: [&str; 8] = [
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/jpg; charset=x",
    " IMAGE/PNG ",
    "image/bmp",
    "text/plain",
];

/// Thumbnail probe: `data[0] % 8` picks the declared content type, bit 3 small limits (4096
/// pixels, 64 KiB); the rest is the image.
///
/// Asserts: no panic; a probed image is JPEG, PNG, GIF or WebP, has fewer pixels than the
/// limit, within the byte limit, its displayed size is its stored size or that turned a
/// quarter; an unsupported declared type is refused whatever the bytes; probing is
/// deterministic.
pub fn thumbnail_probe(data: &[u8]) {
    let Some((&selector, source)) = data.split_first() else {
        return;
    };
    let source_type = SOURCE_TYPES[usize::from(selector % 8)];
    let limits = if selector & 8 != 0 {
        Limits {
            max_pixels: 4096,
            max_source_bytes: 64 * 1024,
            ..Limits::default()
        }
    } else {
        Limits::default()
    };
    let result = probe(source, source_type, &limits);
    match &result {
        Ok(info) => {
            use image::ImageFormat::{Gif, Jpeg, Png, WebP};
            assert!(matches!(info.format, Jpeg | Png | Gif | WebP));
            assert!(u64::from(info.width) * u64::from(info.height) < limits.max_pixels);
            assert!(source.len() <= limits.max_source_bytes);
            assert!(
                (info.width, info.height) == (info.stored_width, info.stored_height)
                    || (info.width, info.height) == (info.stored_height, info.stored_width)
            );
            assert!(
                selector % 8 < 6,
                "{source_type} was probed as thumbnailable"
            );
        }
        Err(ThumbnailError::SourceTooLarge { len, max }) => {
            assert_eq!((*len, *max), (source.len(), limits.max_source_bytes));
        }
        Err(ThumbnailError::TooLarge { width, height }) => {
            // Refused from the header (limits), or by the decoder's allocation cap (0x0).
            assert!(
                u64::from(*width) * u64::from(*height) >= limits.max_pixels
                    || (*width, *height) == (0, 0)
            );
        }
        Err(_) => {}
    }
    let again = probe(source, source_type, &limits);
    assert_eq!(
        result.as_ref().ok(),
        again.as_ref().ok(),
        "probing is not deterministic"
    );
}
