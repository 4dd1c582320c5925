//! A strict depth-first walk of one UnixFS file, driven block by block by the caller.
//!
//! [`FileWalker`] is a state machine with no I/O, so the same walk can be fed by a CAR stream
//! ([`next_from_car`]) and then, if that stream breaks off, by single blocks fetched from
//! another gateway (`?format=raw`):
//!
//! ```text
//! while let Some(cid) = walker.next_needed() {
//!     let block = fetch(cid)?;                      // or the next block of a CAR
//!     for bytes in walker.accept(&cid, block)? { send(bytes) }
//! }
//! ```
//!
//! Only the block that is needed next is accepted: every block is checked against its CID
//! (with [`super::verify`]) and reached through verified links from the root, so nothing but
//! the file's own bytes can come out, in order. A `dups=y` CAR repeats a block each time the
//! file uses it, which is exactly what this walk asks for; a deduplicated (`dups=n`) CAR of a
//! file with repeated chunks stops matching at the first repeat, and the caller fetches the
//! rest by CID.
//!
//! Memory is bounded: the pending links are at most [`MAX_PENDING`] (a real DAG needs about
//! depth × fan-out, a few thousand at most), the depth at most [`MAX_DEPTH`], and no block is
//! kept once its bytes are handed out (they are zero-copy slices of the block).
//!
//! Work is bounded by what the file's size can justify, because anyone can publish a valid
//! DAG that is far larger than its file: a 0-byte file whose root links 4096 times (with
//! `blocksize` 0) to a node that links 4096 times to an empty leaf is legal with `dups=y`,
//! and walking it would pull 16 million blocks. The walk refuses ([`WalkError::TooCostly`])
//! as soon as one of these is exceeded, whatever blocks arrive:
//!
//! - **Empty links**: at most [`MAX_EMPTY_LINKS`] links with `blocksize` 0 in the whole walk.
//!   Chunkers never cut empty chunks; an importer writes one only for an empty file kept
//!   under a file node (js-ipfs/Helia without `reduceSingleLeafToSelf`).
//! - **Blocks**: once every link but those few carries at least one byte, a file of `S` bytes
//!   has at most `S` leaves and nodes holding data of their own, fewer than that many nodes
//!   with two or more children, and nodes with exactly one child only along the last edge of
//!   the DAG (balanced and trickle layouts fill every subtree but the last), at most one per
//!   level. So a walk needs at most `2 × (S + MAX_EMPTY_LINKS) + 2 × MAX_DEPTH + 1` blocks
//!   ([`block_budget`]), and never more than the configured absolute cap
//!   (`retrieval.max_dag_blocks`, [`DEFAULT_MAX_BLOCKS`]).
//! - **Bytes**: a dag-pb block may carry at most [`NODE_OVERHEAD`] bytes plus
//!   [`LINK_OVERHEAD`] per link besides the file bytes it holds itself (a decodable link is at
//!   most about 115 bytes: an 85-byte CID, `Tsize`, its `blocksize` and framing; the UnixFS
//!   header with `mode` and `mtime` well under 100). Raw leaves are all file bytes. So the
//!   block bytes pulled are at most `S + (NODE_OVERHEAD + LINK_OVERHEAD) × blocks`.
//!
//! Real DAGs pass with room to spare: Kubo's 256 KiB chunks and 174 links, or Helia's 1 MiB
//! chunks and 1024 links, carry about 50 bytes of links per chunk, and a 100 MiB file needs
//! 400 (or 100) leaves and a handful of nodes; even 64-byte chunks (the `deep-64` fixture)
//! need under 2 blocks per 64 bytes.

use bytes::Bytes;
use cid::Cid;
use futures_util::Stream;

use super::car::{CarError, CarReader};
use super::unixfs::{decode_file, FileNode, NotFileKind, UnixfsError};
use super::verify::{identity_block, verify_block, VerifyError};
use crate::byte_range::ByteRange;

/// The deepest file DAG walked (the root is depth 0). Balanced DAGs of real files are 2-5 deep;
/// trickle DAGs a little more.
pub const MAX_DEPTH: u32 = 32;
/// The most links waiting to be walked at once.
pub const MAX_PENDING: usize = 65_536;
/// The most links with `blocksize` 0 in one walk (see the module documentation).
pub const MAX_EMPTY_LINKS: u64 = 16;
/// Bytes a dag-pb block may carry besides its own file bytes and its links.
pub const NODE_OVERHEAD: u64 = 256;
/// Bytes a dag-pb block may carry per link.
pub const LINK_OVERHEAD: u64 = 128;
/// The default absolute cap on the blocks of one walk (`retrieval.max_dag_blocks`): 25 GiB of
/// 256 KiB chunks, 100 GiB of 1 MiB chunks, 100 MiB even of 1 KiB chunks.
pub const DEFAULT_MAX_BLOCKS: u64 = 100_000;

/// The most blocks a walk of a file of `file_size` bytes can need (see the module
/// documentation), before the absolute cap.
pub fn block_budget(file_size: u64) -> u64 {
    file_size
        .saturating_add(MAX_EMPTY_LINKS)
        .saturating_mul(2)
        .saturating_add(2 * u64::from(MAX_DEPTH) + 1)
}

/// Why the walk cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// Boxed: two CIDs would make every `Result` of this module large.
    #[error("block {} is not the one needed next ({:?})", .0.got, .0.expected)]
    Unexpected(Box<UnexpectedBlock>),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The root is a directory (or another non-file): answer 404, not 502.
    #[error("this CID is {0}, not a file")]
    NotAFile(NotFileKind),
    #[error("invalid file DAG at {cid}: {source}")]
    Invalid {
        cid: Cid,
        #[source]
        source: UnixfsError,
    },
    #[error("block {cid} holds {actual} bytes of the file but its parent says {expected}")]
    SizeMismatch {
        cid: Cid,
        expected: u64,
        actual: u64,
    },
    #[error("the file DAG is deeper than {0} levels")]
    TooDeep(u32),
    #[error("the file DAG has more than {0} pending links")]
    TooWide(usize),
    /// The DAG needs more blocks or bytes than its file's size can justify (or than the
    /// absolute cap): it is refused however honest its blocks are.
    #[error("the file DAG is too costly to walk: {0}")]
    TooCostly(String),
    #[error("the walk already failed")]
    Failed,
}

/// The block the walk was given, and the one it needed (`None`: nothing more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnexpectedBlock {
    pub expected: Option<Cid>,
    pub got: Cid,
}

impl WalkError {
    /// Whether the fault is the source's (a wrong or unexpected block) rather than the
    /// content's: the walk is unchanged and the right block may be had elsewhere.
    pub fn is_bad_block(&self) -> bool {
        matches!(
            self,
            WalkError::Unexpected(_) | WalkError::Verify(VerifyError::Mismatch { .. })
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    cid: Cid,
    /// Where this subtree's bytes start in the file.
    offset: u64,
    /// The parent's blocksize for it; `None` for the root.
    expected: Option<u64>,
    depth: u32,
}

/// Walks one file, optionally only the blocks covering a byte range.
#[derive(Debug)]
pub struct FileWalker {
    /// Pending subtrees, the next one last.
    stack: Vec<Pending>,
    /// `[start, end)`; `None` walks every block of the file.
    range: Option<(u64, u64)>,
    /// A range to resolve against the root's file size (then it becomes `range`).
    wanted: Option<ByteRange>,
    file_size: Option<u64>,
    failed: bool,
    /// The absolute cap on blocks (`retrieval.max_dag_blocks`).
    max_blocks: u64,
    /// Blocks accepted so far (identity children included).
    blocks: u64,
    /// Links with `blocksize` 0 queued so far.
    empty_links: u64,
}

impl FileWalker {
    /// A walk of the file `root`; with `range = Some((start, end))` (end exclusive) only the
    /// blocks holding those bytes are needed and only those bytes are yielded. A range past the
    /// end of the file yields what exists (check [`Self::file_size`] first to answer 416).
    pub fn new(root: Cid, range: Option<(u64, u64)>) -> Self {
        FileWalker {
            stack: vec![Pending {
                cid: root,
                offset: 0,
                expected: None,
                depth: 0,
            }],
            range,
            wanted: None,
            file_size: None,
            failed: false,
            max_blocks: DEFAULT_MAX_BLOCKS,
            blocks: 0,
            empty_links: 0,
        }
    }

    /// The same walk with another absolute cap on its blocks (`retrieval.max_dag_blocks`).
    pub fn with_max_blocks(mut self, max_blocks: u64) -> Self {
        self.max_blocks = max_blocks;
        self
    }

    /// Blocks accepted so far (identity children included).
    #[cfg(test)]
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// A walk of the bytes `range` selects (an HTTP range, resolved against the file size the
    /// root block gives): a suffix needs the size first, and a range outside the file needs
    /// no block beyond the root (the caller answers 416 from [`Self::file_size`]).
    pub fn for_range(root: Cid, range: ByteRange) -> Self {
        FileWalker {
            wanted: Some(range),
            ..Self::new(root, None)
        }
    }

    /// The CID of the block needed next, `None` once the walk is complete (or failed).
    ///
    /// Identity CIDs below the root never show up here (they are resolved inline); an identity
    /// root does, and its block is [`identity_block`]`(&root)`.
    pub fn next_needed(&self) -> Option<Cid> {
        if self.failed {
            return None;
        }
        self.stack.last().map(|p| p.cid)
    }

    /// The whole file's size, known once the root is accepted.
    pub fn file_size(&self) -> Option<u64> {
        self.file_size
    }

    /// Whether every needed block was accepted.
    pub fn is_complete(&self) -> bool {
        !self.failed && self.stack.is_empty()
    }

    /// Takes the block `next_needed()` asked for, checks it against `cid`, and returns the
    /// file bytes it yields (inside the range, in file order; possibly none).
    ///
    /// A block that is not the needed one or does not match its CID leaves the walk as it was
    /// ([`WalkError::is_bad_block`]); any other error ends it.
    pub fn accept(&mut self, cid: &Cid, block: Bytes) -> Result<Vec<Bytes>, WalkError> {
        if self.failed {
            return Err(WalkError::Failed);
        }
        let expected = self.next_needed();
        if expected != Some(*cid) {
            return Err(WalkError::Unexpected(Box::new(UnexpectedBlock {
                expected,
                got: *cid,
            })));
        }
        verify_block(cid, &block)?;
        let mut out = Vec::new();
        let result = self.process(block, &mut out);
        if let Err(e) = result {
            self.failed = true;
            self.stack = Vec::new();
            return Err(e);
        }
        Ok(out)
    }

    fn process(&mut self, block: Bytes, out: &mut Vec<Bytes>) -> Result<(), WalkError> {
        let Some(item) = self.stack.pop() else {
            return Err(WalkError::Failed);
        };
        self.expand(item, block, out)?;
        // Identity children carry their block in the CID: walk them now.
        while let Some(top) = self.stack.last() {
            let Some(inline) = identity_block(&top.cid)? else {
                break;
            };
            let Some(item) = self.stack.pop() else { break };
            self.expand(item, inline, out)?;
        }
        Ok(())
    }

    /// Decodes one verified node, yields its own bytes and queues its needed children.
    fn expand(
        &mut self,
        item: Pending,
        block: Bytes,
        out: &mut Vec<Bytes>,
    ) -> Result<(), WalkError> {
        let block_len = block.len() as u64;
        let node = decode_file(&item.cid, block).map_err(|source| match source {
            UnixfsError::NotAFile(kind) if item.depth == 0 => WalkError::NotAFile(kind),
            source => WalkError::Invalid {
                cid: item.cid,
                source,
            },
        })?;
        match item.expected {
            None => {
                self.file_size = Some(node.size);
                if let Some(wanted) = self.wanted.take() {
                    // An empty `[0, 0)` when nothing is selected: no child is needed.
                    self.range = Some(
                        wanted
                            .resolve(node.size)
                            .map_or((0, 0), |r| (*r.start(), r.end() + 1)),
                    );
                }
            }
            Some(expected) if expected != node.size => {
                return Err(WalkError::SizeMismatch {
                    cid: item.cid,
                    expected,
                    actual: node.size,
                })
            }
            Some(_) => {}
        }
        self.charge(&item.cid, block_len, &node)?;
        let (start, end) = self.range.unwrap_or((0, u64::MAX));
        if let Some(bytes) = slice_in_range(&node.data, item.offset, start, end) {
            out.push(bytes);
        }
        if node.links.is_empty() {
            return Ok(());
        }
        if item.depth >= MAX_DEPTH {
            return Err(WalkError::TooDeep(MAX_DEPTH));
        }
        let first_new = self.stack.len();
        // Sizes were checked to add up to at most MAX_FILE_SIZE, so offsets cannot overflow;
        // saturating keeps that true even for a parent whose own size was not checked.
        let mut offset = item.offset.saturating_add(node.data.len() as u64);
        for link in &node.links {
            let child_end = offset.saturating_add(link.blocksize);
            // Without a range every block is needed (a full CAR sends even empty ones).
            let needed = self.range.is_none() || (start < end && offset < end && child_end > start);
            if needed {
                if self.stack.len() >= MAX_PENDING {
                    return Err(WalkError::TooWide(MAX_PENDING));
                }
                if link.blocksize == 0 {
                    self.empty_links += 1;
                    if self.empty_links > MAX_EMPTY_LINKS {
                        return Err(WalkError::TooCostly(format!(
                            "more than {MAX_EMPTY_LINKS} links to empty subtrees"
                        )));
                    }
                }
                self.stack.push(Pending {
                    cid: link.cid,
                    offset,
                    expected: Some(link.blocksize),
                    depth: item.depth + 1,
                });
            }
            offset = child_end;
        }
        // Pushed in file order; the stack pops from the end.
        self.stack[first_new..].reverse();
        Ok(())
    }
}

impl FileWalker {
    /// Counts one decoded block against the walk's budget (module documentation): the
    /// blocks the file's size justifies, the absolute cap, and the block's own overhead.
    fn charge(&mut self, cid: &Cid, block_len: u64, node: &FileNode) -> Result<(), WalkError> {
        self.blocks += 1;
        let justified = block_budget(self.file_size.unwrap_or(0));
        if self.blocks > justified.min(self.max_blocks) {
            let why = if justified <= self.max_blocks {
                format!(
                    "more than the {justified} blocks a {}-byte file can need",
                    self.file_size.unwrap_or(0)
                )
            } else {
                format!("more than {} blocks", self.max_blocks)
            };
            return Err(WalkError::TooCostly(why));
        }
        let overhead = block_len.saturating_sub(node.data.len() as u64);
        let allowed = NODE_OVERHEAD + LINK_OVERHEAD * node.links.len() as u64;
        if overhead > allowed {
            return Err(WalkError::TooCostly(format!(
                "block {cid} carries {overhead} bytes besides its file bytes, for {} links",
                node.links.len()
            )));
        }
        Ok(())
    }
}

/// The part of `data` (which starts at file offset `offset`) inside `[start, end)`.
fn slice_in_range(data: &Bytes, offset: u64, start: u64, end: u64) -> Option<Bytes> {
    let data_end = offset.saturating_add(data.len() as u64);
    let from = start.max(offset);
    let to = end.min(data_end);
    if from >= to {
        return None;
    }
    Some(data.slice((from - offset) as usize..(to - offset) as usize))
}

/// Why walking a CAR stopped.
#[derive(Debug, thiserror::Error)]
pub enum CarWalkError {
    #[error(transparent)]
    Car(#[from] CarError),
    #[error(transparent)]
    Walk(#[from] WalkError),
}

/// Feeds `walker` from `car` until a block yields file bytes (`Ok(Some(bytes))`).
///
/// `Ok(None)` when the walker needs nothing more ([`FileWalker::is_complete`]) or the CAR
/// ended cleanly first: then [`FileWalker::next_needed`] names what is still missing and may
/// be fetched elsewhere. Extra blocks after the walk is complete are not read.
pub async fn next_from_car<S, E>(
    car: &mut CarReader<S>,
    walker: &mut FileWalker,
) -> Result<Option<Vec<Bytes>>, CarWalkError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let Some(needed) = walker.next_needed() else {
            return Ok(None);
        };
        let (cid, block) = match identity_block(&needed).map_err(WalkError::from)? {
            Some(inline) => (needed, inline),
            None => match car.next_block().await? {
                Some(section) => section,
                None => return Ok(None),
            },
        };
        let out = walker.accept(&cid, block)?;
        if !out.is_empty() {
            return Ok(Some(out));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::multicodec::{DAG_PB, RAW, SHA2_256};
    use crate::ipfs::test_encode::encode_file_node;
    use crate::ipfs::unixfs::FileLink;
    use cid::multihash::Multihash;
    use sha2::Digest as _;

    fn cid(codec: u64, block: &[u8]) -> Cid {
        Cid::new_v1(
            codec,
            Multihash::wrap(SHA2_256, &sha2::Sha256::digest(block)).unwrap(),
        )
    }

    fn identity(codec: u64, block: &[u8]) -> Cid {
        Cid::new_v1(codec, Multihash::wrap(0, block).unwrap())
    }

    fn concat(chunks: Vec<Bytes>) -> Vec<u8> {
        chunks.concat()
    }

    #[test]
    fn raw_root_is_a_single_block_file() {
        let c = cid(RAW, b"hello");
        let mut w = FileWalker::new(c, None);
        assert_eq!(w.next_needed(), Some(c));
        assert_eq!(w.file_size(), None);
        let out = w.accept(&c, Bytes::from_static(b"hello")).unwrap();
        assert_eq!(concat(out), b"hello");
        assert_eq!(w.file_size(), Some(5));
        assert!(w.is_complete());
        assert_eq!(w.next_needed(), None);
        assert!(matches!(
            w.accept(&c, Bytes::from_static(b"hello")),
            Err(WalkError::Unexpected(u)) if u.expected.is_none()
        ));
    }

    #[test]
    fn identity_children_need_no_block() {
        let a = identity(RAW, b"inline-a ");
        let b_block = b"fetched-b ";
        let b = cid(RAW, b_block);
        let c = identity(RAW, b"inline-c");
        let root_block = encode_file_node(
            b"head ",
            &[
                FileLink {
                    cid: a,
                    blocksize: 9,
                },
                FileLink {
                    cid: b,
                    blocksize: 10,
                },
                FileLink {
                    cid: c,
                    blocksize: 8,
                },
            ],
        );
        let root = cid(DAG_PB, &root_block);
        let mut w = FileWalker::new(root, None);
        let mut got = concat(w.accept(&root, Bytes::from(root_block)).unwrap());
        assert_eq!(w.next_needed(), Some(b));
        got.extend(concat(w.accept(&b, Bytes::from_static(b_block)).unwrap()));
        assert!(w.is_complete());
        assert_eq!(got, b"head inline-a fetched-b inline-c");
        assert_eq!(w.file_size(), Some(32));
    }

    #[test]
    fn identity_root() {
        let root = identity(RAW, b"tiny");
        let mut w = FileWalker::new(root, None);
        let block = identity_block(&w.next_needed().unwrap()).unwrap().unwrap();
        assert_eq!(concat(w.accept(&root, block).unwrap()), b"tiny");
        assert!(w.is_complete());
    }

    #[test]
    fn http_ranges_resolve_against_the_root_size() {
        let leaves: Vec<&[u8]> = vec![b"aaaa", b"bbbb", b"cccc"];
        let links: Vec<FileLink> = leaves
            .iter()
            .map(|l| FileLink {
                cid: cid(RAW, l),
                blocksize: 4,
            })
            .collect();
        let root_block = Bytes::from(encode_file_node(b"", &links));
        let root = cid(DAG_PB, &root_block);
        // Feeds every block the walk asks for; returns the bytes and the blocks fetched.
        let walk = |range: ByteRange| {
            let mut w = FileWalker::for_range(root, range);
            let mut got = concat(w.accept(&root, root_block.clone()).unwrap());
            let mut fetched = 0;
            while let Some(next) = w.next_needed() {
                let i = links.iter().position(|l| l.cid == next).unwrap();
                got.extend(concat(
                    w.accept(&next, Bytes::from_static(leaves[i])).unwrap(),
                ));
                fetched += 1;
            }
            assert!(w.is_complete());
            assert_eq!(w.file_size(), Some(12));
            (got, fetched)
        };
        assert_eq!(walk(ByteRange::Suffix(5)), (b"bcccc".to_vec(), 2));
        assert_eq!(
            walk(ByteRange::From {
                start: 5,
                end: Some(6)
            }),
            (b"bb".to_vec(), 1)
        );
        assert_eq!(
            walk(ByteRange::From {
                start: 8,
                end: None
            }),
            (b"cccc".to_vec(), 1)
        );
        // Outside the file: the root alone, nothing yielded.
        assert_eq!(
            walk(ByteRange::From {
                start: 12,
                end: None
            }),
            (Vec::new(), 0)
        );
    }

    #[test]
    fn leaf_size_must_match_parent() {
        let leaf = b"four";
        let leaf_cid = cid(RAW, leaf);
        let root_block = encode_file_node(
            b"",
            &[FileLink {
                cid: leaf_cid,
                blocksize: 5,
            }],
        );
        let root = cid(DAG_PB, &root_block);
        let mut w = FileWalker::new(root, None);
        w.accept(&root, Bytes::from(root_block)).unwrap();
        assert_eq!(w.file_size(), Some(5));
        assert_eq!(
            w.accept(&leaf_cid, Bytes::from_static(leaf)),
            Err(WalkError::SizeMismatch {
                cid: leaf_cid,
                expected: 5,
                actual: 4
            })
        );
        assert_eq!(w.next_needed(), None);
        assert!(!w.is_complete());
        assert_eq!(
            w.accept(&leaf_cid, Bytes::from_static(leaf)),
            Err(WalkError::Failed)
        );
    }

    #[test]
    fn bad_block_leaves_the_walk_unchanged() {
        let c = cid(RAW, b"right");
        let mut w = FileWalker::new(c, None);
        let err = w.accept(&c, Bytes::from_static(b"wrong")).unwrap_err();
        assert!(err.is_bad_block(), "{err}");
        assert_eq!(w.next_needed(), Some(c));
        assert_eq!(
            concat(w.accept(&c, Bytes::from_static(b"right")).unwrap()),
            b"right"
        );
    }

    #[test]
    fn depth_is_capped() {
        // A chain of single-link nodes deeper than MAX_DEPTH, built bottom-up.
        let leaf = Bytes::from_static(b"x");
        let mut blocks = vec![(cid(RAW, &leaf), leaf)];
        for _ in 0..=MAX_DEPTH {
            let (child, _) = blocks.last().unwrap();
            let node = encode_file_node(
                b"",
                &[FileLink {
                    cid: *child,
                    blocksize: 1,
                }],
            );
            blocks.push((cid(DAG_PB, &node), Bytes::from(node)));
        }
        let mut w = FileWalker::new(blocks.last().unwrap().0, None);
        let mut result = Ok(Vec::new());
        for (c, block) in blocks.into_iter().rev() {
            result = w.accept(&c, block);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(WalkError::TooDeep(MAX_DEPTH)));
    }

    /// Feeds the walk every block it asks for from `store`; the first error, or the bytes.
    fn walk_all(
        w: &mut FileWalker,
        store: &std::collections::HashMap<Cid, Bytes>,
    ) -> Result<Vec<u8>, WalkError> {
        let mut got = Vec::new();
        for _ in 0..100_000 {
            let Some(next) = w.next_needed() else { break };
            got.extend(concat(w.accept(&next, store[&next].clone())?));
        }
        assert!(w.is_complete());
        Ok(got)
    }

    fn store(blocks: &[(Cid, Bytes)]) -> std::collections::HashMap<Cid, Bytes> {
        blocks.iter().cloned().collect()
    }

    #[test]
    fn links_to_empty_subtrees_are_limited() {
        let leaf = cid(RAW, b"");
        let node = |n: u64| {
            let links = vec![
                FileLink {
                    cid: leaf,
                    blocksize: 0
                };
                n as usize
            ];
            let block = Bytes::from(encode_file_node(b"", &links));
            (cid(DAG_PB, &block), block)
        };
        let (root, block) = node(MAX_EMPTY_LINKS);
        let mut w = FileWalker::new(root, None);
        let s = store(&[(root, block), (leaf, Bytes::new())]);
        assert_eq!(walk_all(&mut w, &s), Ok(Vec::new()));
        assert_eq!(w.blocks(), MAX_EMPTY_LINKS + 1);
        // One more, and the root alone is refused: nothing below it is asked for.
        let (root, block) = node(MAX_EMPTY_LINKS + 1);
        let mut w = FileWalker::new(root, None);
        assert!(matches!(
            w.accept(&root, block),
            Err(WalkError::TooCostly(_))
        ));
        assert_eq!(w.next_needed(), None);
    }

    #[test]
    fn blocks_beyond_what_the_size_justifies_are_refused() {
        // A chain of 30 single-link nodes over a 1-byte leaf, linked `n` times from the root:
        // an `n`-byte file of 1 + 31n blocks.
        let leaf = Bytes::from_static(b"x");
        let mut blocks = vec![(cid(RAW, &leaf), leaf)];
        for _ in 0..30 {
            let child = blocks.last().unwrap().0;
            let node = encode_file_node(
                b"",
                &[FileLink {
                    cid: child,
                    blocksize: 1,
                }],
            );
            blocks.push((cid(DAG_PB, &node), Bytes::from(node)));
        }
        let top = blocks.last().unwrap().0;
        let walk = |n: u64| {
            let links = vec![
                FileLink {
                    cid: top,
                    blocksize: 1
                };
                n as usize
            ];
            let root_block = Bytes::from(encode_file_node(b"", &links));
            let root = cid(DAG_PB, &root_block);
            let mut all = blocks.clone();
            all.push((root, root_block));
            let mut w = FileWalker::new(root, None);
            let result = walk_all(&mut w, &store(&all));
            (result, w.blocks())
        };
        let needs = |n: u64| 1 + 31 * n;
        assert!(needs(3) <= block_budget(3));
        assert_eq!(walk(3), (Ok(b"xxx".to_vec()), 94));
        assert!(needs(4) > block_budget(4));
        let (result, blocks) = walk(4);
        assert!(matches!(result, Err(WalkError::TooCostly(_))), "{result:?}");
        assert_eq!(
            blocks,
            block_budget(4) + 1,
            "refused at the first block too many"
        );
    }

    #[test]
    fn the_absolute_cap_holds_whatever_the_size() {
        let leaves: Vec<Bytes> = (0..10u8).map(|i| Bytes::from(vec![i; 100])).collect();
        let links: Vec<FileLink> = leaves
            .iter()
            .map(|l| FileLink {
                cid: cid(RAW, l),
                blocksize: 100,
            })
            .collect();
        let root_block = Bytes::from(encode_file_node(b"", &links));
        let root = cid(DAG_PB, &root_block);
        let mut all: Vec<(Cid, Bytes)> = links.iter().map(|l| l.cid).zip(leaves).collect();
        all.push((root, root_block));
        let s = store(&all);
        assert_eq!(
            walk_all(&mut FileWalker::new(root, None).with_max_blocks(11), &s).map(|b| b.len()),
            Ok(1000)
        );
        let result = walk_all(&mut FileWalker::new(root, None).with_max_blocks(10), &s);
        assert!(matches!(result, Err(WalkError::TooCostly(_))), "{result:?}");
    }

    /// A dag-pb File node with `junk` bytes in an unknown UnixFS field (a decoder skips it).
    fn stuffed(data: &[u8], junk: usize) -> Bytes {
        fn varint(mut v: u64, out: &mut Vec<u8>) {
            while v >= 0x80 {
                out.push(v as u8 | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
        let mut unixfs = vec![0x08, 0x02, 0x12];
        varint(data.len() as u64, &mut unixfs);
        unixfs.extend_from_slice(data);
        unixfs.push(0x18);
        varint(data.len() as u64, &mut unixfs);
        unixfs.push(15 << 3 | 2);
        varint(junk as u64, &mut unixfs);
        unixfs.extend(std::iter::repeat_n(0xaa, junk));
        let mut node = vec![0x0a];
        varint(unixfs.len() as u64, &mut node);
        node.extend_from_slice(&unixfs);
        Bytes::from(node)
    }

    #[test]
    fn a_block_stuffed_beyond_its_links_is_refused() {
        let small = stuffed(b"tiny file", 100);
        let c = cid(DAG_PB, &small);
        let mut w = FileWalker::new(c, None);
        assert_eq!(concat(w.accept(&c, small).unwrap()), b"tiny file");
        let big = stuffed(b"tiny file", 1 << 20);
        let c = cid(DAG_PB, &big);
        let mut w = FileWalker::new(c, None);
        assert!(matches!(w.accept(&c, big), Err(WalkError::TooCostly(_))));
    }
}
