//! `cargo bench --bench denylist`: what a denylist lookup adds to each ipfs media request.
//!
//! Every ipfs request already parses its media ID (`ipfs:<cid>` -> CID); that parse, timed in
//! the same run on the same CIDs, is the reference the lookups are reported against. Lists:
//! empty; a small hand-kept list; and one the size of the public bad-bits list (a million
//! legacy double-hashed entries) plus plain CIDs and modern double hashes, so every kind of
//! rule is consulted. The looked-up CIDs are not on the lists (the common case: every rule kind
//! is checked to the end). Bounded: a fixed number of lookups per figure.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cid::multihash::Multihash;
use cid::Cid;
use ipfs_media_proxy::denylist::Denylist;
use ipfs_media_proxy::media::media_id;
use sha2::{Digest, Sha256};

const LOOKUPS: usize = 200_000;
const RUNS: usize = 5;

fn cid(n: u64) -> Cid {
    let digest = Sha256::digest(n.to_le_bytes());
    Cid::new_v1(
        0x55,
        Multihash::wrap(0x12, &digest).expect("32-byte digest"),
    )
}

fn list(text: &str) -> Denylist {
    let mut list = Denylist::default();
    list.add_file(text).expect("generated list parses");
    list
}

fn main() {
    // CIDs the requests name, as text (what arrives in a path).
    let requested: Vec<String> = (0..10_000u64).map(|n| format!("ipfs:{}", cid(n))).collect();
    // Popular media: a thousand CIDs asked again and again.
    let parsed: Vec<Cid> = (0..1_000u64).map(cid).collect();

    let mut small = String::new();
    for n in 0..100u64 {
        writeln!(small, "/ipfs/{}", cid(1_000_000 + n)).unwrap();
    }

    let mut big = String::from("version: 1\nname: bench\n---\n");
    for n in 0..1_000_000u64 {
        // Legacy bad-bits form: sha256 of "<CIDv1 base32>/" (of CIDs never requested).
        let digest = Sha256::digest(format!("{}/", cid(2_000_000 + n)).as_bytes());
        writeln!(big, "//{}", hex(&digest)).unwrap();
    }
    for n in 0..10_000u64 {
        writeln!(big, "/ipfs/{}", cid(4_000_000 + n)).unwrap();
    }
    for n in 0..1_000u64 {
        let text = multibase::Base::Base58Btc.encode(cid(5_000_000 + n).hash().to_bytes());
        let mh = Multihash::<64>::wrap(0x12, &Sha256::digest(text.as_bytes())).unwrap();
        writeln!(
            big,
            "//{}",
            multibase::Base::Base58Btc.encode(mh.to_bytes())
        )
        .unwrap();
    }

    let started = Instant::now();
    let empty = list("");
    let small = list(&small);
    let big_list = list(&big);
    let load = started.elapsed();
    println!(
        "loading a {} MiB list of {} rules: {:.0} ms",
        big.len() >> 20,
        big_list.len(),
        load.as_secs_f64() * 1e3
    );

    let parse = per_lookup(|i| {
        black_box(media_id::parse(
            black_box(&requested[i % requested.len()]),
            "ipfs_",
        ));
    });
    println!("reference: parsing the media ID  {:>7.0} ns", parse);
    for (name, l) in [
        ("empty list", &empty),
        ("100 CIDs", &small),
        ("bad-bits size, popular CIDs", &big_list),
    ] {
        let ns = per_lookup(|i| {
            black_box(l.blocks(black_box(&parsed[i % parsed.len()])));
        });
        println!(
            "lookup, {name:<32} {ns:>7.0} ns  = {:.2}x the media ID parse",
            ns / parse
        );
    }
    // Every lookup a CID never seen before: the double-hash rules computed in full.
    let batches: Vec<Vec<Cid>> = (0..RUNS as u64)
        .map(|run| {
            let first = 10_000_000 + run * LOOKUPS as u64;
            (first..first + LOOKUPS as u64).map(cid).collect()
        })
        .collect();
    let ns = per_lookup_in_run(|run, i| {
        black_box(big_list.blocks(black_box(&batches[run][i])));
    });
    println!(
        "lookup, {:<32} {ns:>7.0} ns  = {:.2}x the media ID parse",
        "bad-bits size, first sight",
        ns / parse
    );
}

/// Median over `RUNS` of the mean time per call, in nanoseconds.
fn per_lookup(mut f: impl FnMut(usize)) -> f64 {
    per_lookup_in_run(|_, i| f(i))
}

/// The same, telling `f` which run it is in.
fn per_lookup_in_run(mut f: impl FnMut(usize, usize)) -> f64 {
    let mut runs: Vec<Duration> = (0..RUNS)
        .map(|run| {
            let started = Instant::now();
            for i in 0..LOOKUPS {
                f(run, i);
            }
            started.elapsed()
        })
        .collect();
    runs.sort();
    runs[RUNS / 2].as_secs_f64() * 1e9 / LOOKUPS as f64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
