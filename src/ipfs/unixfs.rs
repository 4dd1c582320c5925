//! Decoding one UnixFS file node: a raw block (codec `0x55`) or a dag-pb (`0x70`) node whose
//! `Data` is a UnixFS `Data` protobuf (see `shared/reference/ipfs/unixfs.md`).
//!
//! The protobuf decoding is written out here rather than taken from a crate: both messages are
//! tiny, the dag-pb rules are strict (only `Links` then `Data`, in that order), and decoding
//! by hand lets the link cap stop a hostile block while it is read instead of after a few
//! hundred thousand links were allocated. Nothing here panics or allocates more than a
//! bounded multiple of the block's length.
//!
//! Only files are decoded; a directory, HAMT shard, symlink or metadata node is
//! [`UnixfsError::NotAFile`], so the caller can answer "this CID is not a file".

use bytes::Bytes;
use cid::Cid;

use super::multicodec::{DAG_PB, RAW};

/// Most links one file node may have. Importers use 174 (Kubo, js-ipfs) or 1024 (Helia,
/// ipfs-car); a block of 2 MiB could hold ~50,000.
pub const MAX_LINKS: usize = 4096;

/// A file size no real file reaches (1 PiB); larger declared sizes are refused as absurd.
pub const MAX_FILE_SIZE: u64 = 1 << 50;

/// One decoded file node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNode {
    /// File bytes held by this node itself, before those of its children.
    pub data: Bytes,
    /// Children, in file order.
    pub links: Vec<FileLink>,
    /// Bytes under this node: `data.len() + sum(links.blocksize)`, checked against the
    /// declared `filesize` when there is one.
    pub size: u64,
}

/// A link of a file node with the size of the file bytes under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLink {
    pub cid: Cid,
    pub blocksize: u64,
}

/// The UnixFS type of a node that is not a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFileKind {
    Directory,
    Metadata,
    Symlink,
    HamtShard,
    /// A `Type` value UnixFS does not define.
    Unknown(u64),
}

impl std::fmt::Display for NotFileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotFileKind::Directory => f.write_str("a directory"),
            NotFileKind::Metadata => f.write_str("a metadata node"),
            NotFileKind::Symlink => f.write_str("a symlink"),
            NotFileKind::HamtShard => f.write_str("a sharded directory"),
            NotFileKind::Unknown(t) => write!(f, "an unknown UnixFS type {t}"),
        }
    }
}

/// Why a block is not a UnixFS file node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnixfsError {
    #[error("this CID is {0}, not a file")]
    NotAFile(NotFileKind),
    #[error("codec 0x{0:x} is not UnixFS (only raw 0x55 and dag-pb 0x70)")]
    UnsupportedCodec(u64),
    #[error("malformed dag-pb: {0}")]
    DagPb(&'static str),
    #[error("malformed UnixFS data: {0}")]
    Data(&'static str),
    #[error("bad CID in a dag-pb link: {0}")]
    BadLinkCid(String),
    #[error("a file node has {links} links but {blocksizes} blocksizes")]
    LinkCountMismatch { links: usize, blocksizes: usize },
    #[error("a file node has more than {limit} links")]
    TooManyLinks { limit: usize },
    #[error("a file node declares filesize {declared} but holds {computed} bytes")]
    FilesizeMismatch { declared: u64, computed: u64 },
    #[error("a file node declares an absurd size")]
    AbsurdSize,
    #[error("a file chunk link has a name")]
    NamedLink,
}

/// Decodes `block` (already verified against `cid`) as a UnixFS file node.
pub fn decode_file(cid: &Cid, block: Bytes) -> Result<FileNode, UnixfsError> {
    match cid.codec() {
        RAW => Ok(FileNode {
            size: block.len() as u64,
            data: block,
            links: Vec::new(),
        }),
        DAG_PB => decode_dag_pb_file(block),
        codec => Err(UnixfsError::UnsupportedCodec(codec)),
    }
}

fn decode_dag_pb_file(block: Bytes) -> Result<FileNode, UnixfsError> {
    let pb = decode_pb_node(&block)?;
    let Some((start, end)) = pb.data else {
        return Err(UnixfsError::Data("dag-pb node has no UnixFS Data"));
    };
    let data = decode_unixfs_data(&block[start..end])?;
    match data.kind {
        // Raw (0) is the deprecated dag-pb wrapped leaf older importers wrote; it reads as File.
        0 | 2 => {}
        1 => return Err(UnixfsError::NotAFile(NotFileKind::Directory)),
        3 => return Err(UnixfsError::NotAFile(NotFileKind::Metadata)),
        4 => return Err(UnixfsError::NotAFile(NotFileKind::Symlink)),
        5 => return Err(UnixfsError::NotAFile(NotFileKind::HamtShard)),
        t => return Err(UnixfsError::NotAFile(NotFileKind::Unknown(t))),
    }
    // Empty names are tolerated (older importers wrote them); a real name means this is not
    // a file's chunk list.
    if pb.named_link {
        return Err(UnixfsError::NamedLink);
    }
    if pb.links.len() != data.blocksizes.len() {
        return Err(UnixfsError::LinkCountMismatch {
            links: pb.links.len(),
            blocksizes: data.blocksizes.len(),
        });
    }
    let mut size = (data.data_end - data.data_start) as u64;
    for &bs in &data.blocksizes {
        size = size
            .checked_add(bs)
            .filter(|&s| s <= MAX_FILE_SIZE)
            .ok_or(UnixfsError::AbsurdSize)?;
    }
    if let Some(declared) = data.filesize {
        if declared != size {
            return Err(UnixfsError::FilesizeMismatch {
                declared,
                computed: size,
            });
        }
    }
    let links = pb
        .links
        .into_iter()
        .zip(data.blocksizes)
        .map(|(cid, blocksize)| FileLink { cid, blocksize })
        .collect();
    Ok(FileNode {
        data: block.slice(start + data.data_start..start + data.data_end),
        links,
        size,
    })
}

/// The parts of a PBNode a file needs: link CIDs, whether any link is named, where `Data` is.
struct PbNode {
    links: Vec<Cid>,
    named_link: bool,
    data: Option<(usize, usize)>,
}

/// Strict dag-pb decoding (<https://ipld.io/specs/codecs/dag-pb/spec/>): only fields 2
/// (Links, all before Data) and 1 (Data, at most once).
fn decode_pb_node(block: &[u8]) -> Result<PbNode, UnixfsError> {
    let err = UnixfsError::DagPb;
    let mut r = Reader::new(block);
    let mut links = Vec::new();
    let mut named_link = false;
    let mut data = None;
    while !r.is_empty() {
        let (field, wire) = r.tag().map_err(err)?;
        if wire != WIRE_LEN {
            return Err(err("wrong wire type"));
        }
        let (start, end) = r.len_delimited().map_err(err)?;
        match field {
            1 if data.is_none() => data = Some((start, end)),
            1 => return Err(err("Data appears twice")),
            2 if data.is_some() => return Err(err("Links after Data")),
            2 => {
                if links.len() == MAX_LINKS {
                    return Err(UnixfsError::TooManyLinks { limit: MAX_LINKS });
                }
                let (cid, named) = decode_pb_link(&block[start..end])?;
                links.push(cid);
                named_link |= named;
            }
            _ => return Err(err("unknown field")),
        }
    }
    Ok(PbNode {
        links,
        named_link,
        data,
    })
}

/// A PBLink: Hash (1), Name (2), Tsize (3), each at most once and in that order. Returns the
/// CID and whether the link has a non-empty name.
fn decode_pb_link(bytes: &[u8]) -> Result<(Cid, bool), UnixfsError> {
    let err = UnixfsError::DagPb;
    let mut r = Reader::new(bytes);
    let mut last_field = 0;
    let mut cid = None;
    let mut named = false;
    while !r.is_empty() {
        let (field, wire) = r.tag().map_err(err)?;
        if field <= last_field {
            return Err(err("link fields out of order or repeated"));
        }
        last_field = field;
        match (field, wire) {
            (1, WIRE_LEN) => {
                let (s, e) = r.len_delimited().map_err(err)?;
                let parsed = Cid::try_from(&bytes[s..e])
                    .map_err(|e| UnixfsError::BadLinkCid(e.to_string()))?;
                cid = Some(parsed);
            }
            (2, WIRE_LEN) => {
                let (s, e) = r.len_delimited().map_err(err)?;
                named = s != e;
            }
            // Tsize is the encoded size, not file size; the walker does not need it.
            (3, WIRE_VARINT) => {
                r.varint().map_err(err)?;
            }
            _ => return Err(err("unknown or mistyped link field")),
        }
    }
    Ok((cid.ok_or(err("link without Hash"))?, named))
}

/// The UnixFS `Data` fields a file needs (offsets of `Data` are relative to the message).
struct UnixfsData {
    kind: u64,
    data_start: usize,
    data_end: usize,
    filesize: Option<u64>,
    blocksizes: Vec<u64>,
}

fn decode_unixfs_data(bytes: &[u8]) -> Result<UnixfsData, UnixfsError> {
    let err = UnixfsError::Data;
    let mut r = Reader::new(bytes);
    let mut kind = None;
    let mut out = UnixfsData {
        kind: 0,
        data_start: 0,
        data_end: 0,
        filesize: None,
        blocksizes: Vec::new(),
    };
    let push_blocksize = |out: &mut UnixfsData, v: u64| {
        if out.blocksizes.len() == MAX_LINKS {
            return Err(UnixfsError::TooManyLinks { limit: MAX_LINKS });
        }
        if v > MAX_FILE_SIZE {
            return Err(UnixfsError::AbsurdSize);
        }
        out.blocksizes.push(v);
        Ok(())
    };
    while !r.is_empty() {
        let (field, wire) = r.tag().map_err(err)?;
        match (field, wire) {
            (1, WIRE_VARINT) => kind = Some(r.varint().map_err(err)?),
            (2, WIRE_LEN) => {
                (out.data_start, out.data_end) = r.len_delimited().map_err(err)?;
            }
            (3, WIRE_VARINT) => {
                let v = r.varint().map_err(err)?;
                if v > MAX_FILE_SIZE {
                    return Err(UnixfsError::AbsurdSize);
                }
                out.filesize = Some(v);
            }
            // blocksizes: unpacked (proto2 importers) or packed.
            (4, WIRE_VARINT) => {
                let v = r.varint().map_err(err)?;
                push_blocksize(&mut out, v)?;
            }
            (4, WIRE_LEN) => {
                let (s, e) = r.len_delimited().map_err(err)?;
                let mut packed = Reader::new(&bytes[s..e]);
                while !packed.is_empty() {
                    let v = packed.varint().map_err(err)?;
                    push_blocksize(&mut out, v)?;
                }
            }
            (1..=4, _) => return Err(err("mistyped field")),
            // hashType, fanout, mode, mtime and any future field: not needed for a file.
            _ => r.skip(wire).map_err(err)?,
        }
    }
    out.kind = kind.ok_or(err("no Type"))?;
    Ok(out)
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

/// A bounds-checked protobuf reader over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    /// A protobuf varint: at most 10 bytes, the tenth carrying only the top bit of a u64.
    /// Decoded by the `unsigned-varint` crate, which also refuses non-minimal encodings (no
    /// protobuf encoder writes them, and a strict dag-pb decoder has no use for them).
    fn varint(&mut self) -> Result<u64, &'static str> {
        use unsigned_varint::decode::{self, Error};
        let rest = &self.bytes[self.pos..];
        let (value, after) = decode::u64(rest).map_err(|e| match e {
            Error::Insufficient => "truncated varint",
            Error::NotMinimal => "varint not minimally encoded",
            _ => "varint overflows 64 bits",
        })?;
        let used = rest.len() - after.len();
        // The crate takes a tenth byte whole; only its lowest bit fits in a u64.
        if used == 10 && rest[9] > 1 {
            return Err("varint overflows 64 bits");
        }
        self.pos += used;
        Ok(value)
    }

    fn tag(&mut self) -> Result<(u64, u8), &'static str> {
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 {
            return Err("field number 0");
        }
        Ok((field, (tag & 7) as u8))
    }

    /// A length-delimited field: its `(start, end)` within the slice.
    fn len_delimited(&mut self) -> Result<(usize, usize), &'static str> {
        let len = self.varint()?;
        let start = self.pos;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|&end| end <= self.bytes.len())
            .ok_or("length past the end")?;
        self.pos = end;
        Ok((start, end))
    }

    fn skip(&mut self, wire: u8) -> Result<(), &'static str> {
        let n = match wire {
            WIRE_VARINT => return self.varint().map(drop),
            WIRE_LEN => return self.len_delimited().map(drop),
            WIRE_I64 => 8,
            WIRE_I32 => 4,
            _ => return Err("unsupported wire type"),
        };
        if self.bytes.len() - self.pos < n {
            return Err("truncated fixed-size field");
        }
        self.pos += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::multicodec::SHA2_256;
    use crate::ipfs::test_encode::encode_file_node;
    use cid::multihash::Multihash;
    use sha2::Digest as _;

    fn raw_cid(data: &[u8]) -> Cid {
        Cid::new_v1(
            RAW,
            Multihash::wrap(SHA2_256, &sha2::Sha256::digest(data)).unwrap(),
        )
    }

    fn pb_cid(data: &[u8]) -> Cid {
        Cid::new_v1(
            DAG_PB,
            Multihash::wrap(SHA2_256, &sha2::Sha256::digest(data)).unwrap(),
        )
    }

    #[test]
    fn raw_block_is_a_leaf() {
        let node = decode_file(&raw_cid(b"abc"), Bytes::from_static(b"abc")).unwrap();
        assert_eq!(node.data, Bytes::from_static(b"abc"));
        assert!(node.links.is_empty());
        assert_eq!(node.size, 3);
    }

    #[test]
    fn round_trips_a_file_node() {
        let links = [
            FileLink {
                cid: raw_cid(b"a"),
                blocksize: 1,
            },
            FileLink {
                cid: raw_cid(b"bb"),
                blocksize: 2,
            },
        ];
        let block = encode_file_node(b"xyz", &links);
        let node = decode_file(&pb_cid(&block), Bytes::from(block)).unwrap();
        assert_eq!(&node.data[..], b"xyz");
        assert_eq!(node.links, links);
        assert_eq!(node.size, 6);
    }

    /// Kubo's empty directory (QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn): `0a 02 08 01`.
    #[test]
    fn directory_is_not_a_file() {
        let block = Bytes::from_static(&[0x0a, 0x02, 0x08, 0x01]);
        let cid: Cid = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
            .parse()
            .unwrap();
        crate::ipfs::verify::verify_block(&cid, &block).unwrap();
        let err = decode_file(&cid, block).unwrap_err();
        assert_eq!(err, UnixfsError::NotAFile(NotFileKind::Directory));
        assert_eq!(err.to_string(), "this CID is a directory, not a file");
    }

    #[test]
    fn other_types_are_not_files() {
        for (t, kind) in [
            (3, NotFileKind::Metadata),
            (4, NotFileKind::Symlink),
            (5, NotFileKind::HamtShard),
            (9, NotFileKind::Unknown(9)),
        ] {
            let block = Bytes::from(vec![0x0a, 0x02, 0x08, t]);
            let err = decode_file(&pb_cid(&block), block).unwrap_err();
            assert_eq!(err, UnixfsError::NotAFile(kind));
        }
    }

    #[test]
    fn consistency_checks() {
        // One link, no blocksizes.
        let mut block = encode_file_node(
            b"",
            &[FileLink {
                cid: raw_cid(b"a"),
                blocksize: 1,
            }],
        );
        let unixfs = [0x08, 0x02, 0x18, 0x01];
        let n = block.len();
        block.truncate(n - 8);
        block.extend_from_slice(&[0x0a, unixfs.len() as u8]);
        block.extend_from_slice(&unixfs);
        assert_eq!(
            decode_file(&pb_cid(&block), Bytes::from(block.clone())),
            Err(UnixfsError::LinkCountMismatch {
                links: 1,
                blocksizes: 0
            })
        );
        // filesize that does not add up: Data "ab" with filesize 3.
        let block =
            Bytes::from_static(&[0x0a, 0x08, 0x08, 0x02, 0x12, 0x02, b'a', b'b', 0x18, 0x03]);
        assert_eq!(
            decode_file(&pb_cid(&block), block),
            Err(UnixfsError::FilesizeMismatch {
                declared: 3,
                computed: 2
            })
        );
        // Data before Links is not dag-pb.
        let good = encode_file_node(
            b"",
            &[FileLink {
                cid: raw_cid(b"a"),
                blocksize: 1,
            }],
        );
        let (links, data) = good.split_at(good.len() - 8);
        let swapped = [data, links].concat();
        assert_eq!(
            decode_file(&pb_cid(&swapped), Bytes::from(swapped)),
            Err(UnixfsError::DagPb("Links after Data"))
        );
    }

    #[test]
    fn varint_bounds() {
        let read = |bytes: &[u8]| {
            let mut r = Reader::new(bytes);
            r.varint().map(|v| (v, r.pos))
        };
        assert_eq!(read(&[0x00]), Ok((0, 1)));
        assert_eq!(read(&[0xac, 0x02, 0xff]), Ok((300, 2)));
        let mut max = [0xff; 10];
        max[9] = 0x01;
        assert_eq!(read(&max), Ok((u64::MAX, 10)));
        max[9] = 0x02;
        assert_eq!(read(&max), Err("varint overflows 64 bits"));
        assert_eq!(read(&[0xff; 11]), Err("varint overflows 64 bits"));
        assert_eq!(read(&[0x80, 0x80]), Err("truncated varint"));
        assert_eq!(read(&[]), Err("truncated varint"));
        assert_eq!(read(&[0x81, 0x00]), Err("varint not minimally encoded"));
    }

    #[test]
    fn unsupported_codec() {
        let cid = Cid::new_v1(0x71, Multihash::wrap(SHA2_256, &[0; 32]).unwrap());
        assert_eq!(
            decode_file(&cid, Bytes::new()),
            Err(UnixfsError::UnsupportedCodec(0x71))
        );
    }
}
