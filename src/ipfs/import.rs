//! UnixFS import: the CID a file gets when it is added to IPFS with a given import profile,
//! computed as the bytes arrive, with no I/O.
//!
//! The layout is the balanced DAG of boxo (`ipld/unixfs/importer/balanced`) and of js
//! `ipfs-unixfs-importer` (`balanced`): the file is cut into fixed-size chunks, each a raw
//! leaf; leaves are grouped left to right into dag-pb UnixFS `File` nodes of at most
//! `max_links` links, those nodes again, until one root is left. Every leaf sits at the same
//! depth; the last node of a level may be partial (even a single link: it is not collapsed).
//! A file of one chunk is that raw leaf, and an empty file is the empty raw block. A node is
//! `Links` (each `Hash`, an empty `Name`, `Tsize` = the child's block plus everything below
//! it) then `Data` = UnixFS `{Type: File, filesize, blocksizes}` (one per link: the file bytes
//! under it), fields in protobuf field order, as both implementations write it.
//!
//! No maintained Rust crate builds this tree (the UnixFS crates on crates.io decode, or are
//! unmaintained parts of retired projects), hence this module. Memory: one running SHA-256 for
//! the current leaf and, per level, the pending links (at most `max_links` of them), so a
//! 1 GiB file costs a few tens of KiB here; no file byte is kept.

use cid::multihash::Multihash;
use cid::Cid;
use sha2::{Digest, Sha256};

use super::multicodec::{DAG_PB, RAW, SHA2_256};

/// A named set of import parameters: the same bytes give the same CID only under the same
/// profile. All are CIDv1, raw leaves, sha2-256, balanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// IPIP-499 `unixfs-v1-2025` (Kubo 0.40+ with that config profile, Helia, Storacha):
    /// 1 MiB chunks, 1024 links per node.
    UnixfsV1_2025,
    /// What `ipfs add --cid-version=1 --raw-leaves` gives with Kubo's older defaults (and
    /// js-ipfs): 256 KiB chunks, 174 links per node.
    KuboV1_256k,
}

impl Profile {
    pub const ALL: [Profile; 2] = [Profile::UnixfsV1_2025, Profile::KuboV1_256k];

    pub fn name(self) -> &'static str {
        match self {
            Profile::UnixfsV1_2025 => "unixfs-v1-2025",
            Profile::KuboV1_256k => "kubo-v1-256k",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Bytes per leaf.
    pub fn chunk_size(self) -> u64 {
        match self {
            Profile::UnixfsV1_2025 => 1 << 20,
            Profile::KuboV1_256k => 256 << 10,
        }
    }

    /// Most links in one node.
    pub fn max_links(self) -> usize {
        match self {
            Profile::UnixfsV1_2025 => 1024,
            Profile::KuboV1_256k => 174,
        }
    }

    fn params(self) -> Params {
        Params {
            chunk_size: self.chunk_size(),
            max_links: self.max_links(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Params {
    chunk_size: u64,
    max_links: usize,
}

/// One child of a node being built.
#[derive(Debug, Clone)]
struct Link {
    cid: Cid,
    /// The child's block and all blocks below it (dag-pb `Tsize`).
    dag_size: u64,
    /// File bytes under the child (UnixFS `blocksizes`).
    file_size: u64,
}

/// What an import found: the root and the file's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub cid: Cid,
    pub file_size: u64,
}

/// Feeds a file's bytes in order; [`Importer::finish`] gives its root CID.
#[derive(Debug)]
pub struct Importer {
    params: Params,
    leaf: Sha256,
    leaf_len: u64,
    file_size: u64,
    /// `levels[0]` holds leaves, `levels[n]` nodes of height n; each below `max_links`.
    levels: Vec<Vec<Link>>,
}

impl Importer {
    pub fn new(profile: Profile) -> Self {
        Self::with_params(profile.params())
    }

    fn with_params(params: Params) -> Self {
        assert!(params.chunk_size > 0 && params.max_links >= 2);
        Self {
            params,
            leaf: Sha256::new(),
            leaf_len: 0,
            file_size: 0,
            levels: Vec::new(),
        }
    }

    /// Bytes fed so far.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.file_size += data.len() as u64;
        while !data.is_empty() {
            let room = (self.params.chunk_size - self.leaf_len) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.leaf.update(now);
            self.leaf_len += now.len() as u64;
            data = rest;
            if self.leaf_len == self.params.chunk_size {
                self.end_leaf();
            }
        }
    }

    fn end_leaf(&mut self) {
        let digest = self.leaf.finalize_reset();
        let link = Link {
            cid: sha256_cid(RAW, &digest),
            dag_size: self.leaf_len,
            file_size: self.leaf_len,
        };
        self.leaf_len = 0;
        self.push(0, link);
    }

    /// Adds a link at `level`; a level that fills up becomes one node a level higher.
    fn push(&mut self, level: usize, link: Link) {
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Vec::new);
        }
        self.levels[level].push(link);
        if self.levels[level].len() == self.params.max_links {
            let links = std::mem::take(&mut self.levels[level]);
            self.push(level + 1, node_link(&links));
        }
    }

    pub fn finish(mut self) -> Imported {
        if self.leaf_len > 0 || self.file_size == 0 {
            self.end_leaf();
        }
        let mut level = 0;
        loop {
            let above_empty = self.levels[level + 1..].iter().all(Vec::is_empty);
            if above_empty && self.levels[level].len() == 1 {
                return Imported {
                    cid: self.levels[level][0].cid,
                    file_size: self.file_size,
                };
            }
            if !self.levels[level].is_empty() {
                let links = std::mem::take(&mut self.levels[level]);
                self.push(level + 1, node_link(&links));
            }
            level += 1;
        }
    }
}

fn sha256_cid(codec: u64, digest: &[u8]) -> Cid {
    let hash = Multihash::wrap(SHA2_256, digest).expect("a 32-byte digest fits a multihash");
    Cid::new_v1(codec, hash)
}

/// Encodes the node over `links` and gives the link to it.
fn node_link(links: &[Link]) -> Link {
    let block = encode_node(links);
    let below: u64 = links.iter().map(|l| l.dag_size).sum();
    Link {
        cid: sha256_cid(DAG_PB, &Sha256::digest(&block)),
        dag_size: block.len() as u64 + below,
        file_size: links.iter().map(|l| l.file_size).sum(),
    }
}

fn encode_node(links: &[Link]) -> Vec<u8> {
    let mut data = Vec::with_capacity(16 + links.len() * 5);
    tag(1, 0, &mut data);
    varint(2, &mut data); // Type: File
    tag(3, 0, &mut data);
    varint(links.iter().map(|l| l.file_size).sum(), &mut data);
    for link in links {
        tag(4, 0, &mut data);
        varint(link.file_size, &mut data);
    }
    let mut node = Vec::with_capacity(data.len() + links.len() * 48 + 8);
    let mut pb_link = Vec::with_capacity(48);
    for link in links {
        pb_link.clear();
        bytes_field(1, &link.cid.to_bytes(), &mut pb_link);
        bytes_field(2, b"", &mut pb_link);
        tag(3, 0, &mut pb_link);
        varint(link.dag_size, &mut pb_link);
        bytes_field(2, &pb_link, &mut node);
    }
    bytes_field(1, &data, &mut node);
    node
}

fn varint(value: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(unsigned_varint::encode::u64(
        value,
        &mut unsigned_varint::encode::u64_buffer(),
    ));
}

fn tag(field: u64, wire: u64, out: &mut Vec<u8>) {
    varint(field << 3 | wire, out);
}

fn bytes_field(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    tag(field, 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(params: Params, data: &[u8], piece: usize) -> Imported {
        let mut importer = Importer::with_params(params);
        for part in data.chunks(piece.max(1)) {
            importer.update(part);
        }
        if data.is_empty() {
            importer.update(b"");
        }
        importer.finish()
    }

    fn cid(text: &str) -> Cid {
        text.parse().unwrap()
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/ipfs/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    /// Files of one chunk are their raw block, under both profiles. "hello world" is the
    /// vector of NOTES.md §8; the empty file is sha2-256 of nothing as a raw block, what
    /// `ipfs add --cid-version=1 --raw-leaves` answers for an empty file.
    #[test]
    fn single_chunk_files_are_raw_blocks() {
        for profile in Profile::ALL {
            let hello = import(profile.params(), b"hello world", 3);
            assert_eq!(
                hello.cid,
                cid("bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e")
            );
            assert_eq!(hello.file_size, 11);
            let empty = import(profile.params(), b"", 1);
            assert_eq!(
                empty.cid,
                cid("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
            );
            let one_chunk = vec![7u8; profile.chunk_size() as usize];
            let got = import(profile.params(), &one_chunk, 65_536);
            assert_eq!(got.cid.codec(), RAW);
            assert_eq!(
                got.cid.hash().digest(),
                Sha256::digest(&one_chunk).as_slice()
            );
        }
    }

    /// The layout against trees a real node built: js-ipfs 0.66.1
    /// `add --cid-version 1 --raw-leaves --chunker size-N` (174 links per node), the CARs of
    /// `tests/fixtures/ipfs/` (see its README). 64-byte chunks give 313 leaves, so a second
    /// level with a full node (174) and a partial one (139).
    #[test]
    fn matches_trees_a_real_node_built() {
        let js = |chunk_size| Params {
            chunk_size,
            max_links: 174,
        };
        let file = fixture("file20k.bin");
        let repeat = fixture("repeat.bin");
        let cases = [
            (
                js(1024),
                &file,
                "bafybeidgky4rutmu4ddyg7mxp2uvmh43f6obenkosuftta5au3ksuz7ahm",
            ),
            (
                js(64),
                &file,
                "bafybeifxtq7eh6bmrb5qe3ewmjttekfiq5lc2q5pkletxj5bxikk5yhrcy",
            ),
            (
                js(1024),
                &repeat,
                "bafybeiavuqek43bag477ojzj23fonivyl6vf7ctlobhrauu3wpswd2mvzu",
            ),
        ];
        for (params, data, want) in cases {
            // However the bytes arrive, the tree is the same.
            for piece in [1, 63, 1000, 4096, data.len()] {
                let got = import(params, data, piece);
                assert_eq!(
                    got.cid,
                    cid(want),
                    "chunk {} piece {piece}",
                    params.chunk_size
                );
                assert_eq!(got.file_size, data.len() as u64);
            }
        }
    }

    /// The shapes at the level boundaries, read back with the proxy's own UnixFS decoder:
    /// exactly `max_links` leaves is one node; one more adds a level whose second node has a
    /// single link (not collapsed); the sizes add up at every node.
    #[test]
    fn level_boundaries() {
        use crate::ipfs::unixfs::decode_file;
        let params = Params {
            chunk_size: 4,
            max_links: 3,
        };
        // 3 leaves: one node; 4 leaves: root -> [node(3), node(1)].
        let root_of = |leaves: usize, extra: usize| {
            let data: Vec<u8> = (0..leaves * 4 + extra).map(|i| i as u8).collect();
            let mut importer = Importer::with_params(params);
            importer.update(&data);
            importer.finish()
        };
        let three = root_of(3, 0);
        assert_eq!(three.cid.codec(), DAG_PB);
        let four = root_of(4, 0);
        assert_ne!(three.cid, four.cid);
        // Rebuild the expected blocks of 4 leaves by hand and compare.
        let leaf = |i: usize| {
            let bytes: Vec<u8> = (i * 4..i * 4 + 4).map(|b| b as u8).collect();
            Link {
                cid: sha256_cid(RAW, &Sha256::digest(&bytes)),
                dag_size: 4,
                file_size: 4,
            }
        };
        let first = node_link(&[leaf(0), leaf(1), leaf(2)]);
        let second = node_link(&[leaf(3)]);
        let root = node_link(&[first.clone(), second.clone()]);
        assert_eq!(four.cid, root.cid);
        let decoded = decode_file(
            &root.cid,
            encode_node(&[first.clone(), second.clone()]).into(),
        )
        .unwrap();
        assert_eq!(decoded.size, 16);
        assert_eq!(
            decoded
                .links
                .iter()
                .map(|l| l.blocksize)
                .collect::<Vec<_>>(),
            [12, 4]
        );
        assert_eq!(decoded.links[0].cid, first.cid);
        // 9 leaves fill two levels exactly (one root of 3 full nodes); 10 add a third level.
        let nine = root_of(9, 0);
        let ten = root_of(9, 1);
        let nodes: Vec<Link> = (0..3)
            .map(|n| node_link(&[leaf(3 * n), leaf(3 * n + 1), leaf(3 * n + 2)]))
            .collect();
        assert_eq!(nine.cid, node_link(&nodes).cid);
        let tail_leaf = Link {
            cid: sha256_cid(RAW, &Sha256::digest([36u8])),
            dag_size: 1,
            file_size: 1,
        };
        let tail = node_link(&[node_link(&[tail_leaf])]);
        assert_eq!(ten.cid, node_link(&[node_link(&nodes), tail]).cid);
        assert_eq!(ten.file_size, 37);
    }

    /// Pending state stays within the link lists whatever the length.
    #[test]
    fn memory_is_the_pending_links_only() {
        let params = Params {
            chunk_size: 1,
            max_links: 4,
        };
        let mut importer = Importer::with_params(params);
        importer.update(&vec![1u8; 10_000]);
        assert!(importer.levels.iter().all(|l| l.len() < 4));
        assert!(importer.levels.len() <= 8);
    }
}
