//! Verified retrieval from gateways we do not trust, and several gateways at once. The blocks
//! are real (made by js-ipfs and ipfs-car, see tests/fixtures/ipfs/README.md); the gateways
//! serving them are stubs that can lie.

mod support;

use std::time::{Duration, Instant};

use support::trustless::{Dag, Lie, TrustlessStub};
use support::{client, control, json, Proxy};

/// The proxy in front of `gateways`, all trustless, with a 1 s timeout each.
async fn proxy(gateways: &[&TrustlessStub], extra: &str) -> Proxy {
    support::trustless::trustless_proxy(gateways, "1s", extra).await
}

fn url(proxy: &Proxy, cid: &cid::Cid) -> String {
    proxy.url(&format!("/_matrix/media/v3/download/s/ipfs:{cid}"))
}

async fn balanced() -> Dag {
    Dag::load("balanced-1k.car").await
}

#[tokio::test]
async fn honest_gateway_serves_verified_bytes() {
    support::serially(30, async {
        let dag = balanced().await;
        let a = TrustlessStub::new(std::slice::from_ref(&dag), Lie::Honest);
        let p = proxy(&[&a], "").await;
        let r = client().get(url(&p, &dag.root)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-length"],
            "20000",
            "length from the verified root"
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), Dag::file("file20k.bin"));
        assert_eq!((a.cars(), a.raws()), (1, 0));
    })
    .await;
}

#[tokio::test]
async fn every_kind_of_lie_is_caught_and_repaired_from_another_gateway() {
    support::serially(60, async {
        let dag = balanced().await;
        let want = Dag::file("file20k.bin");
        for lie in [
            Lie::FlipByte(0),
            Lie::FlipByte(7),
            Lie::Drop(20),
            Lie::Drop(3),
            Lie::Swap(4),
            Lie::Oversized(2),
            Lie::StallAfter(6),
            Lie::ShortLength,
        ] {
            let liar = TrustlessStub::new(std::slice::from_ref(&dag), lie.clone());
            let honest = TrustlessStub::new(std::slice::from_ref(&dag), Lie::NoCar);
            let p = proxy(&[&liar, &honest], "").await;
            let r = client().get(url(&p, &dag.root)).send().await.unwrap();
            assert_eq!(r.status(), 200, "{lie:?}");
            assert_eq!(
                r.bytes().await.unwrap().as_ref(),
                want,
                "{lie:?}: exactly the file"
            );
            assert_eq!(liar.cars(), 1, "{lie:?}");
            if !matches!(lie, Lie::ShortLength) {
                assert!(
                    honest.raws() >= 1,
                    "{lie:?}: missing blocks came from the other gateway"
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_liar_is_benched_and_asked_last() {
    support::serially(30, async {
        let deep = Dag::load("deep-64.car").await;
        let dag = balanced().await;
        let liar = TrustlessStub::new(&[dag.clone(), deep.clone()], Lie::FlipByte(3));
        let honest = TrustlessStub::new(&[dag.clone(), deep.clone()], Lie::Honest);
        let p = proxy(&[&liar, &honest], "").await;
        let r = client().get(url(&p, &dag.root)).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), Dag::file("file20k.bin"));
        assert_eq!((liar.cars(), honest.cars()), (1, 0));
        // The next file goes to the honest gateway first.
        let r = client().get(url(&p, &deep.root)).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), Dag::file("file20k.bin"));
        assert_eq!((liar.cars(), honest.cars()), (1, 1));
    })
    .await;
}

#[tokio::test]
async fn with_no_honest_source_no_unverified_byte_is_served_and_nothing_is_cached() {
    support::serially(30, async {
        let dag = balanced().await;
        let liar = TrustlessStub::new(std::slice::from_ref(&dag), Lie::FlipByte(9));
        let p = proxy(&[&liar], "").await;
        // The first eight leaves were verified and sent; the ninth is bad: the response is
        // cut, never completed, and what arrived is a true prefix of the file. (On a loaded
        // machine the abort can overtake the headers still in the proxy's write buffer: then
        // the client sees the connection end before any answer, which is the same abort.)
        let want = Dag::file("file20k.bin");
        if let Ok(mut r) = client().get(url(&p, &dag.root)).send().await {
            assert_eq!(r.status(), 200);
            let mut got = Vec::new();
            let result = loop {
                match r.chunk().await {
                    Ok(Some(part)) => got.extend_from_slice(&part),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            assert!(result.is_err(), "must not end cleanly");
            assert!(got.len() < want.len());
            assert_eq!(got, want[..got.len()], "only verified bytes were sent");
        }
        let _ = client()
            .get(url(&p, &dag.root))
            .send()
            .await
            .unwrap()
            .bytes()
            .await;
        assert_eq!(liar.cars(), 2, "nothing was cached");

        // Again and again, 5 at once, each cut after a true prefix, with a control request
        // among them; then descriptors and memory are back where the warm-up rounds left them.
        let round = || async {
            let cut = support::concurrently(5, |_| async {
                if let Ok(r) = client().get(url(&p, &dag.root)).send().await {
                    assert_eq!(r.status(), 200);
                    let got = r.bytes().await;
                    assert!(got.is_err(), "must not end cleanly");
                }
            });
            tokio::join!(cut, control(&p));
        };
        let baseline = support::warm(&p, round).await;
        let cars = liar.cars();
        for _ in 0..20 {
            round().await;
        }
        assert!(liar.cars() >= cars + 20, "nothing was cached");
        control(&p).await;
        // Cut answers close their gateway connections; a few may stay pooled from a round that
        // overlapped differently (two descriptors each, both ends are here). The stub keeps
        // every query string (a few dozen bytes each).
        baseline
            .assert_back("after the tampered CARs", 2 * 5 + 4, 8 << 20, 10)
            .await;
    })
    .await;
}

#[tokio::test]
async fn directory_is_not_media() {
    support::serially(30, async {
        let dir = Dag::load("dir.car").await;
        // ipfs-car writes leaves first; a trustless gateway sends the root first.
        let mut dfs = dir.clone();
        dfs.blocks.rotate_right(1);
        assert_eq!(dfs.blocks[0].0, dir.root);
        let a = TrustlessStub::new(&[dfs], Lie::Honest);
        let p = proxy(&[&a], "").await;
        let r = client().get(url(&p, &dir.root)).send().await.unwrap();
        assert_eq!(r.status(), 404);
        let v = json(&r.bytes().await.unwrap());
        assert_eq!(v["errcode"], "M_NOT_FOUND");
        assert!(v["error"].as_str().unwrap().contains("directory"), "{v}");
    })
    .await;
}

#[tokio::test]
async fn single_raw_block_identity_and_unsupported_hashes() {
    support::serially(30, async {
        let small = Dag::load("small-raw.car").await;
        let a = TrustlessStub::new(std::slice::from_ref(&small), Lie::Honest);
        let p = proxy(&[&a], "").await;
        let r = client().get(url(&p, &small.root)).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), Dag::file("small.txt"));
        assert_eq!(
            (a.cars(), a.raws()),
            (0, 1),
            "a raw CID is one verified block"
        );

        let identity = cid::Cid::new_v1(
            0x55,
            cid::multihash::Multihash::wrap(0, b"inline bytes").unwrap(),
        );
        let r = client().get(url(&p, &identity)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"inline bytes");
        assert_eq!(a.raws(), 1, "identity CIDs need no request");

        // sha2-512 (0x13) is not on the allow-list.
        let odd = cid::Cid::new_v1(
            0x55,
            cid::multihash::Multihash::wrap(0x13, &[7u8; 64]).unwrap(),
        );
        let r = client().get(url(&p, &odd)).send().await.unwrap();
        assert_eq!(r.status(), 404);
        let v = json(&r.bytes().await.unwrap());
        assert!(v["error"].as_str().unwrap().contains("hash"), "{v}");
        assert_eq!(a.raws(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_slow_gateway_is_hedged() {
    support::serially(30, async {
        let dag = balanced().await;
        let slow = TrustlessStub::new(std::slice::from_ref(&dag), Lie::Honest);
        slow.set_delay(Duration::from_secs(5));
        let fast = TrustlessStub::new(std::slice::from_ref(&dag), Lie::Honest);
        let (_hs, builder) = support::builder().await;
        let p = builder
            .gateway(slow.start().await)
            .gateway(fast.start().await)
            .gateway_line("mode = \"trustless\"")
            .toml("[retrieval]\nprobe_interval = \"0s\"\nhedge_delay = \"200ms\"")
            .start()
            .await;
        let started = Instant::now();
        let r = client().get(url(&p, &dag.root)).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), Dag::file("file20k.bin"));
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        assert!(
            elapsed >= Duration::from_millis(200),
            "{elapsed:?}: the first gateway had its head start"
        );
        assert_eq!(fast.cars(), 1);
    })
    .await;
}

#[tokio::test]
async fn the_most_telling_failure_is_reported() {
    support::serially(30, async {
        let dag = balanced().await;
        let other = Dag::load("deep-64.car").await;
        let knows_nothing = TrustlessStub::new(std::slice::from_ref(&other), Lie::Honest);
        let stalls = TrustlessStub::new(std::slice::from_ref(&dag), Lie::Honest);
        stalls.set_delay(Duration::from_secs(20));
        let p = proxy(&[&knows_nothing, &knows_nothing.clone()], "").await;
        let r = client().get(url(&p, &dag.root)).send().await.unwrap();
        assert_eq!(r.status(), 404, "every gateway said not found");
        let p = proxy(&[&knows_nothing, &stalls], "").await;
        let r = client()
            .get(format!("{}?timeout_ms=10000", url(&p, &dag.root)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 504, "one timed out: the content may exist");
        assert_eq!(support::errcode(r).await, "M_NOT_YET_UPLOADED");
    })
    .await;
}
