//! Verified retrieval core (`ipfs::{car, verify, unixfs, walk}`) against CARs made by real
//! IPFS implementations (`tests/fixtures/ipfs/README.md` says how), variants of them broken
//! on purpose, and property tests on arbitrary input.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cid::multihash::Multihash;
use cid::Cid;
use futures_util::{stream, Stream, StreamExt as _};
use proptest::prelude::*;
use sha2::Digest as _;

use ipfs_media_proxy::ipfs::car::{CarError, CarReader, MAX_SECTION_SIZE};
use ipfs_media_proxy::ipfs::multicodec::{DAG_PB, RAW};
use ipfs_media_proxy::ipfs::unixfs::{decode_file, FileLink, NotFileKind};
use ipfs_media_proxy::ipfs::verify::VerifyError;
use ipfs_media_proxy::ipfs::walk::{next_from_car, CarWalkError, FileWalker, WalkError};

#[path = "support/encode.rs"]
mod encode;
use encode::{encode_car, encode_file_node, encode_varint};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ipfs/");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The fixture CARs, their root CIDs (as printed by the tool that made them), and the file.
const FILES: &[(&str, &str, &str)] = &[
    (
        "small-raw.car",
        "bafkreia5dfq6qtlauixjgfka6nd7gl6mgtsriqwx2hgi2uyqhqsh3zitxq",
        "small.txt",
    ),
    (
        "balanced-1k.car",
        "bafybeidgky4rutmu4ddyg7mxp2uvmh43f6obenkosuftta5au3ksuz7ahm",
        "file20k.bin",
    ),
    (
        "deep-64.car",
        "bafybeifxtq7eh6bmrb5qe3ewmjttekfiq5lc2q5pkletxj5bxikk5yhrcy",
        "file20k.bin",
    ),
    (
        "trickle-512.car",
        "bafybeig5krlvkj6u6onoibzd4tb5dr6eg2ioibrqztqvjtcvdpffzfy7hi",
        "file20k.bin",
    ),
    (
        "cidv0-4k.car",
        "QmQRLwRsSwpxvjpDbdhfBL8eM6pVd97aZdcm5hs9Dmc7SA",
        "file20k.bin",
    ),
];
const DIR_ROOT: &str = "bafybeid5egjsffd7ymqqtn4sxapc67k336prdnto2bmbcfgepg47ejans4";
const REPEAT_ROOT: &str = "bafybeiavuqek43bag477ojzj23fonivyl6vf7ctlobhrauu3wpswd2mvzu";

type ChunkStream = stream::Iter<std::vec::IntoIter<Result<Bytes, Infallible>>>;

fn chunked(data: &[u8], size: usize) -> CarReader<ChunkStream> {
    let chunks: Vec<_> = data
        .chunks(size.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    CarReader::new(stream::iter(chunks))
}

/// Every section of a CAR, in order.
async fn sections(car: &[u8]) -> (Vec<Cid>, Vec<(Cid, Bytes)>) {
    let mut r = chunked(car, 4096);
    let roots = r.header().await.unwrap().roots.clone();
    let mut out = Vec::new();
    while let Some(s) = r.next_block().await.unwrap() {
        out.push(s);
    }
    (roots, out)
}

fn rebuild(roots: &[Cid], blocks: &[(Cid, Bytes)]) -> Vec<u8> {
    encode_car(roots, blocks.iter().map(|(c, b)| (c, &b[..])))
}

/// What a walk of a CAR produced: the bytes, how it ended, and how many sections of the CAR
/// were left unread (the walker takes exactly the blocks it needs, in order).
struct Walked {
    bytes: Vec<u8>,
    walker: FileWalker,
    result: Result<(), CarWalkError>,
    left_over: usize,
}

async fn walk_car(car: &[u8], root: Cid, range: Option<(u64, u64)>, chunk: usize) -> Walked {
    let mut reader = chunked(car, chunk);
    let mut walker = FileWalker::new(root, range);
    let mut bytes = Vec::new();
    let result = loop {
        match next_from_car(&mut reader, &mut walker).await {
            Ok(Some(out)) => bytes.extend(out.concat()),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let mut left_over = 0;
    while let Ok(Some(_)) = reader.next_block().await {
        left_over += 1;
    }
    Walked {
        bytes,
        walker,
        result,
        left_over,
    }
}

/// Drives a walk by fetching blocks one at a time from `store` (like `?format=raw`), and
/// records the CIDs asked for.
fn walk_store(
    store: &HashMap<Cid, Bytes>,
    root: Cid,
    range: Option<(u64, u64)>,
) -> Result<(Vec<u8>, Vec<Cid>), WalkError> {
    let mut walker = FileWalker::new(root, range);
    let (mut bytes, mut asked) = (Vec::new(), Vec::new());
    while let Some(c) = walker.next_needed() {
        asked.push(c);
        let block = store.get(&c).cloned().expect("the store has every block");
        bytes.extend(walker.accept(&c, block)?.concat());
    }
    assert!(walker.is_complete());
    Ok((bytes, asked))
}

fn sha256_cid(codec: u64, block: &[u8]) -> Cid {
    Cid::new_v1(
        codec,
        Multihash::wrap(0x12, &sha2::Sha256::digest(block)).unwrap(),
    )
}

#[tokio::test]
async fn real_fixtures_walk_to_the_original_bytes() {
    for &(car_name, root, file) in FILES {
        let car = fixture(car_name);
        let original = fixture(file);
        let root: Cid = root.parse().unwrap();
        let (roots, _) = sections(&car).await;
        assert_eq!(roots, vec![root], "{car_name}");
        for chunk in [1, 100, 16 * 1024, car.len()] {
            let w = walk_car(&car, root, None, chunk).await;
            w.result.unwrap();
            assert!(w.walker.is_complete(), "{car_name}");
            assert_eq!(w.walker.file_size(), Some(original.len() as u64));
            assert!(w.bytes == original, "{car_name} at chunk {chunk}");
        }
    }
}

#[tokio::test]
async fn fixture_shapes_are_what_the_readme_says() {
    // Block counts pin the shapes: 1 raw block; root + 20 leaves; root + 2 inner + 313
    // leaves; cidv0: root + 5 dag-pb leaves.
    for (car, count) in [
        ("small-raw.car", 1),
        ("balanced-1k.car", 21),
        ("deep-64.car", 316),
        ("cidv0-4k.car", 6),
    ] {
        let (_, blocks) = sections(&fixture(car)).await;
        assert_eq!(blocks.len(), count, "{car}");
    }
    let (_, blocks) = sections(&fixture("deep-64.car")).await;
    let root = decode_file(&blocks[0].0, blocks[0].1.clone()).unwrap();
    assert_eq!(root.links.len(), 2);
    assert_eq!(root.links[0].blocksize, 174 * 64);
    let (_, blocks) = sections(&fixture("cidv0-4k.car")).await;
    assert_eq!(blocks[1].0.version(), cid::Version::V0);
}

#[tokio::test]
async fn directory_root_is_not_a_file() {
    let root: Cid = DIR_ROOT.parse().unwrap();
    // ipfs-car writes children before their parent, so the directory is last: use the CAR as
    // a block store, and also as the root-first CAR a gateway would send.
    let (roots, mut blocks) = sections(&fixture("dir.car")).await;
    assert_eq!(roots, vec![root]);
    assert_eq!(blocks.last().unwrap().0, root);
    let store: HashMap<Cid, Bytes> = blocks.iter().cloned().collect();
    let err = walk_store(&store, root, None).unwrap_err();
    assert_eq!(err, WalkError::NotAFile(NotFileKind::Directory));
    assert_eq!(err.to_string(), "this CID is a directory, not a file");
    blocks.rotate_right(1);
    let w = walk_car(&rebuild(&roots, &blocks), root, None, 64).await;
    assert!(matches!(
        w.result,
        Err(CarWalkError::Walk(WalkError::NotAFile(
            NotFileKind::Directory
        )))
    ));
}

#[tokio::test]
async fn a_flipped_byte_in_any_block_is_refused() {
    let car = fixture("balanced-1k.car");
    let (roots, blocks) = sections(&car).await;
    for i in 0..blocks.len() {
        let mut broken = blocks.clone();
        let mut block = broken[i].1.to_vec();
        let mid = block.len() / 2;
        block[mid] ^= 0x01;
        broken[i].1 = Bytes::from(block);
        let w = walk_car(&rebuild(&roots, &broken), roots[0], None, 512).await;
        match w.result {
            Err(CarWalkError::Walk(WalkError::Verify(VerifyError::Mismatch { cid }))) => {
                assert_eq!(cid, blocks[i].0)
            }
            other => panic!("block {i}: {:?}", other.err()),
        }
        // Nothing from the bad block or after it came out.
        assert!(w.bytes.len() <= i.saturating_sub(1) * 1024);
    }
}

#[tokio::test]
async fn a_dropped_block_is_reported_and_can_be_fetched_elsewhere() {
    let car = fixture("balanced-1k.car");
    let original = fixture("file20k.bin");
    let (roots, blocks) = sections(&car).await;
    let store: HashMap<Cid, Bytes> = blocks.iter().cloned().collect();
    for dropped in 1..blocks.len() {
        let mut partial = blocks.clone();
        partial.remove(dropped);
        let mut reader = chunked(&rebuild(&roots, &partial), 333);
        let mut walker = FileWalker::new(roots[0], None);
        let mut bytes = Vec::new();
        let end = loop {
            match next_from_car(&mut reader, &mut walker).await {
                Ok(Some(out)) => bytes.extend(out.concat()),
                other => break other,
            }
        };
        // The next block of the CAR is not the needed one (or the CAR ended first).
        match end {
            Err(CarWalkError::Walk(e @ WalkError::Unexpected(_))) => assert!(e.is_bad_block()),
            Ok(None) => assert_eq!(dropped, blocks.len() - 1),
            other => panic!("dropped {dropped}: {other:?}"),
        }
        assert!(!walker.is_complete());
        assert_eq!(walker.next_needed(), Some(blocks[dropped].0));
        // The walk goes on with blocks fetched one by one.
        while let Some(c) = walker.next_needed() {
            bytes.extend(walker.accept(&c, store[&c].clone()).unwrap().concat());
        }
        assert!(bytes == original, "dropped {dropped}");
    }
}

#[tokio::test]
async fn blocks_out_of_order_are_refused() {
    let (roots, mut blocks) = sections(&fixture("balanced-1k.car")).await;
    blocks.swap(3, 4);
    let w = walk_car(&rebuild(&roots, &blocks), roots[0], None, 4096).await;
    match w.result {
        Err(CarWalkError::Walk(WalkError::Unexpected(u))) => {
            assert_eq!(u.expected, Some(blocks[4].0));
            assert_eq!(u.got, blocks[3].0);
        }
        other => panic!("{:?}", other.err()),
    }
    assert_eq!(w.bytes.len(), 2 * 1024);
}

/// A stream that counts how many chunks were taken from it.
struct Counting<S> {
    inner: S,
    polled: Arc<AtomicUsize>,
}

impl<S: Stream + Unpin> Stream for Counting<S> {
    type Item = S::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.polled.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[tokio::test]
async fn an_oversized_section_is_refused_before_it_is_read() {
    let root = sha256_cid(RAW, b"x");
    let mut head = encode_car(&[root], []);
    encode_varint(3 * 1024 * 1024, &mut head);
    // After the prefix: an endless supply of 64 KiB chunks that must not be read.
    let polled = Arc::new(AtomicUsize::new(0));
    let zeros = Bytes::from(vec![0u8; 64 * 1024]);
    let body = stream::iter(std::iter::once(Bytes::from(head)).chain(std::iter::repeat(zeros)))
        .map(Ok::<_, Infallible>);
    let mut reader = CarReader::new(Counting {
        inner: body,
        polled: polled.clone(),
    });
    match reader.next_block().await {
        Err(CarError::SectionTooLarge { len, limit }) => {
            assert_eq!(len, 3 * 1024 * 1024);
            assert_eq!(limit, MAX_SECTION_SIZE);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(polled.load(Ordering::SeqCst), 1);
    assert_eq!(reader.buffered(), 0);
    assert!(matches!(
        reader.next_block().await,
        Err(CarError::AfterError)
    ));
}

#[tokio::test]
async fn a_block_of_exactly_the_cap_is_read_and_one_more_byte_is_not() {
    let root = sha256_cid(RAW, b"x");
    let big = vec![7u8; 2 * 1024 * 1024];
    let c = sha256_cid(RAW, &big);
    let car = encode_car(&[root], [(&c, &big[..])]);
    let mut reader = chunked(&car, 16 * 1024);
    let (got, block) = reader.next_block().await.unwrap().unwrap();
    assert_eq!((got, block.len()), (c, big.len()));
    assert!(reader.buffered() <= MAX_SECTION_SIZE);
    // The walker refuses a block one byte over the cap even with a matching hash.
    let bigger = vec![7u8; 2 * 1024 * 1024 + 1];
    let c2 = sha256_cid(RAW, &bigger);
    let mut w = FileWalker::new(c2, None);
    assert!(matches!(
        w.accept(&c2, Bytes::from(bigger)),
        Err(WalkError::Verify(VerifyError::BlockTooLarge { .. }))
    ));
}

#[tokio::test]
async fn truncation_mid_section_is_an_error_and_at_a_boundary_is_incomplete() {
    let car = fixture("balanced-1k.car");
    let (roots, blocks) = sections(&car).await;
    let header_len = encode_car(&roots, []).len();
    let mut boundaries = vec![header_len];
    for i in 1..=blocks.len() {
        boundaries.push(rebuild(&roots, &blocks[..i]).len());
    }
    for cut in (header_len..car.len())
        .step_by(97)
        .chain(boundaries.iter().copied())
    {
        let w = walk_car(&car[..cut], roots[0], None, 1000).await;
        if boundaries.contains(&cut) {
            w.result.unwrap();
            assert_eq!(w.walker.is_complete(), cut == car.len(), "cut {cut}");
        } else {
            assert!(
                matches!(w.result, Err(CarWalkError::Car(CarError::Truncated(_)))),
                "cut {cut}: {:?}",
                w.result.err()
            );
        }
    }
}

#[tokio::test]
async fn bad_headers_are_refused() {
    let root = sha256_cid(RAW, b"x");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "Empty"),
        (vec![0x05, 1, 2, 3, 4, 5], "BadHeader"),
        (vec![0x05, 1, 2], "Truncated"),
        // The CARv2 pragma: {version: 2}.
        (
            [&[0x0a][..], &[0xa1, 0x67], b"version", &[0x02]].concat(),
            "UnsupportedVersion(2)",
        ),
        // {version: 1} without roots.
        (
            [&[0x0a][..], &[0xa1, 0x67], b"version", &[0x01]].concat(),
            "BadHeader",
        ),
        (
            {
                let mut v = Vec::new();
                encode_varint(1 << 20, &mut v);
                v
            },
            "HeaderTooLarge",
        ),
        (vec![0xff; 12], "BadVarint"),
    ];
    for (bytes, want) in cases {
        let mut r = chunked(&bytes, 3);
        let err = r.header().await.unwrap_err();
        assert!(format!("{err:?}").starts_with(want), "{want}: {err:?}");
    }
    // A good header still parses when split byte by byte.
    let car = encode_car(&[root], []);
    assert_eq!(chunked(&car, 1).header().await.unwrap().roots, vec![root]);
}

#[tokio::test]
async fn unknown_hash_function_is_named() {
    let block = b"hello";
    let digest = sha2::Sha512::digest(block);
    let c = Cid::new_v1(RAW, Multihash::wrap(0x13, &digest).unwrap());
    let car = encode_car(&[c], [(&c, &block[..])]);
    let w = walk_car(&car, c, None, 64).await;
    match w.result {
        Err(CarWalkError::Walk(
            e @ WalkError::Verify(VerifyError::UnsupportedHash { code: 0x13 }),
        )) => {
            assert!(e.to_string().contains("0x13"), "{e}")
        }
        other => panic!("{:?}", other.err()),
    }
}

#[tokio::test]
async fn identity_children_are_inline_in_a_car_walk() {
    // A real raw leaf from a fixture, then an identity leaf that no CAR carries.
    let (_, small) = sections(&fixture("small-raw.car")).await;
    let (leaf, leaf_block) = small[0].clone();
    let inline = Cid::new_v1(RAW, Multihash::wrap(0, b" + inline tail").unwrap());
    let root_block = encode_file_node(
        b"",
        &[
            FileLink {
                cid: leaf,
                blocksize: leaf_block.len() as u64,
            },
            FileLink {
                cid: inline,
                blocksize: 14,
            },
        ],
    );
    let root = sha256_cid(DAG_PB, &root_block);
    let car = encode_car(
        &[root],
        [(&root, &root_block[..]), (&leaf, &leaf_block[..])],
    );
    let w = walk_car(&car, root, None, 10).await;
    w.result.unwrap();
    assert!(w.walker.is_complete());
    assert_eq!(
        w.bytes,
        [&fixture("small.txt")[..], b" + inline tail"].concat()
    );
    assert_eq!(w.left_over, 0);
}

#[tokio::test]
async fn a_range_needs_only_the_blocks_that_hold_it() {
    let original = fixture("file20k.bin");
    let (roots, blocks) = sections(&fixture("deep-64.car")).await;
    // DFS order: root, inner0, leaves 0..174 (64 bytes each), inner1, leaves 174..313.
    let leaf = |i: usize| if i < 174 { 2 + i } else { 3 + i };
    let inner1 = 2 + 174;
    let cases: [((u64, u64), Vec<usize>); 4] = [
        ((5000, 5100), vec![0, 1, leaf(78), leaf(79)]),
        // Across the two inner nodes; leaf 175 starts at the (exclusive) end and is skipped.
        (
            (11000, 11200),
            vec![0, 1, leaf(171), leaf(172), leaf(173), inner1, leaf(174)],
        ),
        ((19990, 20000), vec![0, inner1, leaf(312)]),
        // An empty range still needs the root (for the file size).
        ((300, 300), vec![0]),
    ];
    for ((start, end), want) in cases {
        let want: Vec<Cid> = want.iter().map(|&i| blocks[i].0).collect();
        // What a gateway answers for entity-bytes: only the needed blocks, in DFS order.
        let subset: Vec<_> = blocks
            .iter()
            .filter(|(c, _)| want.contains(c))
            .cloned()
            .collect();
        let w = walk_car(&rebuild(&roots, &subset), roots[0], Some((start, end)), 200).await;
        w.result.unwrap();
        assert!(w.walker.is_complete(), "{start}..{end}");
        // Complete with nothing left over: it needed exactly these blocks, in this order.
        assert_eq!(w.left_over, 0, "{start}..{end}");
        let (_, asked) = walk_store(
            &blocks.iter().cloned().collect(),
            roots[0],
            Some((start, end)),
        )
        .unwrap();
        assert_eq!(asked, want, "{start}..{end}");
        assert!(
            w.bytes == original[start as usize..end as usize],
            "{start}..{end}"
        );
        assert_eq!(w.walker.file_size(), Some(20000));
    }
}

#[tokio::test]
async fn repeated_chunks_need_a_dups_car() {
    let root: Cid = REPEAT_ROOT.parse().unwrap();
    let original = fixture("repeat.bin");
    let (roots, blocks) = sections(&fixture("repeat-1k.car")).await;
    // js-ipfs `dag export` deduplicates: root, the "AAAA..." leaf once, the tail leaf.
    assert_eq!(blocks.len(), 3);
    let store: HashMap<Cid, Bytes> = blocks.iter().cloned().collect();
    let (bytes, asked) = walk_store(&store, root, None).unwrap();
    assert!(bytes == original);
    assert_eq!(asked.len(), 6);
    assert!(asked[1..5].iter().all(|c| *c == blocks[1].0));
    // The deduplicated CAR stops matching at the first repeat...
    let w = walk_car(&fixture("repeat-1k.car"), root, None, 100).await;
    assert!(matches!(
        w.result,
        Err(CarWalkError::Walk(WalkError::Unexpected(_)))
    ));
    assert_eq!(w.bytes.len(), 1024);
    // ...a dups=y CAR (every use of a block sent again) walks through.
    let dups: Vec<_> = asked.iter().map(|c| (*c, store[c].clone())).collect();
    let w = walk_car(&rebuild(&roots, &dups), root, None, 100).await;
    w.result.unwrap();
    assert!(w.bytes == original);
}

#[test]
fn every_fixture_block_reaches_the_store_walk() {
    // The same walks driven block by block (the `?format=raw` fallback path).
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for &(car, root, file) in FILES {
        let (_, blocks) = rt.block_on(sections(&fixture(car)));
        let store: HashMap<Cid, Bytes> = blocks.into_iter().collect();
        let (bytes, _) = walk_store(&store, root.parse().unwrap(), None).unwrap();
        assert!(bytes == fixture(file), "{car}");
    }
}

fn store_of(car: &str) -> (Cid, HashMap<Cid, Bytes>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (roots, blocks) = rt.block_on(sections(&fixture(car)));
    (roots[0], blocks.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any range of any fixture DAG yields exactly that slice of the file.
    #[test]
    fn any_range_yields_exactly_its_slice(
        car in prop::sample::select(vec!["balanced-1k.car", "deep-64.car", "trickle-512.car", "cidv0-4k.car"]),
        a in 0u64..21000,
        b in 0u64..21000,
    ) {
        let (root, store) = store_of(car);
        let original = fixture("file20k.bin");
        let (start, end) = (a.min(b), a.max(b));
        let (bytes, asked) = walk_store(&store, root, Some((start, end))).unwrap();
        let (s, e) = (start.min(20000) as usize, end.min(20000) as usize);
        prop_assert!(bytes == original[s..e]);
        prop_assert!(asked.len() <= store.len());
    }

    /// Arbitrary bytes into the CAR reader: an error or blocks, never a panic, never more
    /// buffered than the cap.
    #[test]
    fn car_reader_survives_arbitrary_bytes(
        data in prop::collection::vec(any::<u8>(), 0..2048),
        chunk in 1usize..300,
        with_header in any::<bool>(),
    ) {
        let mut input = if with_header { encode_car(&[sha256_cid(RAW, b"r")], []) } else { Vec::new() };
        input.extend_from_slice(&data);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut r = chunked(&input, chunk);
            for _ in 0..4096 {
                match r.next_block().await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
                assert!(r.buffered() <= MAX_SECTION_SIZE);
            }
        });
    }

    /// Valid file nodes with a few bytes flipped, inserted, removed or cut off: unchanged,
    /// the node decodes to exactly what was encoded; changed, it is refused or decodes to a
    /// node that keeps every invariant and survives a round trip through the encoder.
    #[test]
    fn unixfs_decoder_keeps_its_invariants_on_damaged_nodes(
        data in prop::collection::vec(any::<u8>(), 0..64),
        links in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..8), 0u64..100_000), 0..6),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 0..4),
    ) {
        let links: Vec<FileLink> = links
            .iter()
            .map(|(leaf, blocksize)| FileLink { cid: sha256_cid(RAW, leaf), blocksize: *blocksize })
            .collect();
        let mut block = encode_file_node(&data, &links);
        for (at, byte, kind) in &edits {
            if block.is_empty() {
                break;
            }
            let i = at.index(block.len());
            match kind {
                0 => block[i] ^= byte | 1,
                1 => block.insert(i, *byte),
                2 => { block.remove(i); }
                _ => block.truncate(i),
            }
        }
        let c = sha256_cid(DAG_PB, &block);
        let result = decode_file(&c, Bytes::from(block.clone()));
        if edits.is_empty() {
            let node = result.expect("a node the encoder wrote decodes");
            prop_assert_eq!(&node.data[..], &data[..]);
            prop_assert_eq!(&node.links, &links);
        } else if let Ok(node) = result {
            let sum: u64 = node.links.iter().map(|l| l.blocksize).sum();
            prop_assert_eq!(node.size, node.data.len() as u64 + sum);
            // The data is a slice of the block itself.
            prop_assert!(block.windows(node.data.len().max(1)).any(|w| node.data.is_empty() || w == &node.data[..]));
            let again = encode_file_node(&node.data, &node.links);
            let round = decode_file(&sha256_cid(DAG_PB, &again), Bytes::from(again)).unwrap();
            prop_assert_eq!(round, node);
        }
    }

    /// A real CAR with a few bytes changed or cut: the walk never panics, and when it
    /// completes its output is exactly the original file.
    #[test]
    fn damaged_cars_never_yield_wrong_bytes(
        car in prop::sample::select(vec!["balanced-1k.car", "deep-64.car", "trickle-512.car", "cidv0-4k.car"]),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
        chunk in 1usize..5000,
    ) {
        let original = fixture("file20k.bin");
        let mut bytes = fixture(car);
        for (at, x) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        let root = FILES.iter().find(|f| f.0 == car).unwrap().1.parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let w = rt.block_on(walk_car(&bytes, root, None, chunk));
        if w.walker.is_complete() {
            prop_assert!(w.result.is_ok());
            prop_assert!(w.bytes == original);
        } else {
            prop_assert!(original.starts_with(&w.bytes));
        }
    }

    /// Small DAGs built from arbitrary leaves and nodes whose blocksizes may lie, every block
    /// hashed for real so the walk reaches decoding and the size checks: the walk never yields
    /// more than the root's size (or the range), and whenever it completes it has yielded
    /// exactly the file the blocks make, in order.
    #[test]
    fn walker_yields_only_the_file_its_blocks_make(
        leaves in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 1..6),
        nodes in prop::collection::vec(
            (
                prop::collection::vec(any::<u8>(), 0..8),
                prop::collection::vec((any::<prop::sample::Index>(), prop_oneof![6 => Just(0i64), 1 => -3i64..4]), 0..5),
            ),
            1..5,
        ),
        range in prop::option::of((0u64..600, 0u64..600)),
    ) {
        // Blocks in build order; each with its CID, the bytes of the file under it, and
        // whether a blocksize under it lies.
        let mut built: Vec<(Cid, Bytes, Vec<u8>, bool)> = leaves
            .iter()
            .map(|l| (sha256_cid(RAW, l), Bytes::from(l.clone()), l.clone(), false))
            .collect();
        for (data, children) in &nodes {
            let mut links = Vec::new();
            let mut file = data.clone();
            let mut lied = false;
            for (pick, lie) in children {
                let (cid, _, under, lied_under) = built[pick.index(built.len())].clone();
                let blocksize = (under.len() as i64 + lie).max(0) as u64;
                lied |= lied_under || blocksize != under.len() as u64;
                links.push(FileLink { cid, blocksize });
                file.extend_from_slice(&under);
            }
            let block = encode_file_node(data, &links);
            built.push((sha256_cid(DAG_PB, &block), Bytes::from(block), file, lied));
        }
        let (root, _, file, lied) = built.last().cloned().unwrap();
        let store: HashMap<Cid, Bytes> = built.iter().map(|(c, b, _, _)| (*c, b.clone())).collect();
        let range = range.map(|(a, b)| (a.min(b), a.max(b)));
        let mut w = FileWalker::new(root, range);
        let mut bytes = Vec::new();
        let mut error = None;
        for _ in 0..10_000 {
            let Some(needed) = w.next_needed() else { break };
            match w.accept(&needed, store[&needed].clone()) {
                Ok(out) => bytes.extend(out.concat()),
                Err(e) => { error = Some(e); break; }
            }
        }
        let size = w.file_size().expect("the root always decodes");
        prop_assert!(bytes.len() as u64 <= size);
        prop_assert_eq!(w.is_complete(), error.is_none(), "{:?}", error);
        match range {
            // A full walk sees every block: it completes exactly when no size lies, and then
            // it has yielded the file.
            None => {
                if w.is_complete() {
                    prop_assert!(!lied);
                    prop_assert!(bytes == file);
                    prop_assert_eq!(size, file.len() as u64);
                }
            }
            // A range walk yields at most the range, and the file's slice when sizes are
            // honest (a lie in a subtree it never needs cannot be seen).
            Some((a, b)) => {
                prop_assert!(bytes.len() as u64 <= b - a);
                if w.is_complete() && !lied {
                    let (a, b) = ((a as usize).min(file.len()), (b as usize).min(file.len()));
                    prop_assert!(bytes == file[a..b]);
                }
            }
        }
        // Honest sizes always walk, unless the DAG is too costly for its size (many links to
        // empty leaves).
        if !lied && !matches!(error, Some(WalkError::TooCostly(_))) {
            prop_assert!(w.is_complete(), "{:?}", error);
        }
    }
}
