//! Gateways that try to make the proxy do something else than fetch content: redirect it to
//! other (internal) services, hand it encoded bytes, or make one request cost gigabytes.
//! Each case asserts the proxy's documented answer and that a control request is served
//! after it.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use support::gateway::{raw_cid, Behaviour, GatewayStub};
use support::homeserver::HomeserverStub;
use support::trustless::{Dag, DiamondGateway, Lie, TrustlessStub};
use support::{bounded, client, json, Proxy, ProxyBuilder};

const SECRET: &str = "TOP SECRET internal body";

/// An internal service on loopback that nobody configured: it counts every request.
async fn internal_service() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let (addr, _task) = support::serve(move |_req| {
        let counted = Arc::clone(&counted);
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Response::new(
                Full::new(Bytes::from_static(SECRET.as_bytes()))
                    .map_err(|never| match never {})
                    .boxed(),
            )
        }
    })
    .await;
    (addr, hits)
}

async fn proxy(gateways: &[SocketAddr], lines: &[&str], toml: &str) -> Proxy {
    let hs = HomeserverStub::new();
    let mut builder = ProxyBuilder::new(hs.start().await)
        .gateway_line("timeout = \"2s\"")
        .toml("[admin]\nlisten = \"127.0.0.1:0\"")
        .toml(toml);
    for line in lines {
        builder = builder.gateway_line(line);
    }
    for g in gateways {
        builder = builder.gateway(*g);
    }
    builder.start().await
}

/// `[retrieval]` for every proxy here: no probes (they would reach the stubs too).
const RETRIEVAL: &str = "[retrieval]\nprobe_interval = \"0s\"";
const TRUSTLESS: &str = "mode = \"trustless\"";

fn download(proxy: &Proxy, cid: &str) -> String {
    proxy.url(&format!("/_matrix/media/v3/download/s/ipfs:{cid}"))
}

/// The answer, which must be 502 `M_UNKNOWN` JSON, and its body.
async fn assert_bad_gateway(response: reqwest::Response) -> Bytes {
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.bytes().await.unwrap();
    assert_eq!(json(&body)["errcode"], "M_UNKNOWN", "{body:?}");
    body
}

async fn metrics(proxy: &Proxy) -> String {
    let admin = proxy.admin.expect("admin listener");
    let r = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    r.text().await.unwrap()
}

/// The value of `ipfs_media_proxy_gateway_requests_total` for this gateway and outcome.
fn gateway_outcomes(metrics: &str, gateway: SocketAddr, outcome: &str) -> u64 {
    let gateway = format!("gateway=\"http://{gateway}\"");
    let outcome = format!("outcome=\"{outcome}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("ipfs_media_proxy_gateway_requests_total{"))
        .filter(|l| l.contains(&gateway) && l.contains(&outcome))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn a_trusted_gateway_cannot_redirect_the_proxy_anywhere() {
    bounded(30, async {
        let (internal, internal_hits) = internal_service().await;
        let a = GatewayStub::new();
        let addr = a.start().await;
        // Every range fetched on its own too, so the `Range` request path is covered.
        let p = proxy(
            &[addr],
            &[],
            &format!("{RETRIEVAL}\n[media]\nrange_fetch_threshold = \"0\""),
        )
        .await;
        let admin = p.admin.unwrap();
        let targets = [
            (StatusCode::FOUND, format!("http://{admin}/metrics")),
            (
                StatusCode::TEMPORARY_REDIRECT,
                format!("http://{internal}/"),
            ),
            (
                StatusCode::MOVED_PERMANENTLY,
                format!("http://{internal}/a"),
            ),
            (
                StatusCode::PERMANENT_REDIRECT,
                format!("http://{internal}/b"),
            ),
            (StatusCode::SEE_OTHER, format!("http://{internal}/c")),
        ];
        for (i, (code, location)) in targets.into_iter().enumerate() {
            let cid = a.add_with(
                format!("content {i} that only the redirect target pretends to have"),
                Behaviour::Redirect(code, location.clone()),
            );
            for range in [None, Some("bytes=2-5")] {
                let mut request = client().get(download(&p, &cid));
                if let Some(range) = range {
                    request = request.header("range", range);
                }
                let body = assert_bad_gateway(request.send().await.unwrap()).await;
                let text = String::from_utf8_lossy(&body);
                assert!(!text.contains(SECRET), "{code} {location}: {text}");
                assert!(!text.contains("ipfs_media_proxy_"), "{code}: {text}");
                assert!(!text.contains("127.0.0.1"), "no address revealed: {text}");
            }
        }
        assert_eq!(internal_hits.load(Ordering::SeqCst), 0, "never asked");
        // Every redirect counted as this gateway's failure.
        assert!(gateway_outcomes(&metrics(&p).await, addr, "error") >= 5);
        // Control: the same gateway's real content is still served.
        let cid = a.add("control content");
        let r = client().get(download(&p, &cid)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), "control content");
    })
    .await;
}

#[tokio::test]
async fn a_redirect_is_that_gateways_failure_and_the_next_one_serves() {
    bounded(30, async {
        let (internal, internal_hits) = internal_service().await;
        let (a, b) = (GatewayStub::new(), GatewayStub::new());
        let content = "content both gateways are asked for";
        let cid = a.add_with(
            content,
            Behaviour::Redirect(StatusCode::FOUND, format!("http://{internal}/")),
        );
        assert_eq!(b.add(content), cid);
        let (a_addr, b_addr) = (a.start().await, b.start().await);
        let p = proxy(&[a_addr, b_addr], &[], RETRIEVAL).await;
        let r = client().get(download(&p, &cid)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), content);
        assert_eq!((a.hits(&cid), b.hits(&cid)), (1, 1));
        assert_eq!(internal_hits.load(Ordering::SeqCst), 0);
        let m = metrics(&p).await;
        assert_eq!(gateway_outcomes(&m, a_addr, "error"), 1, "{m}");
        assert_eq!(gateway_outcomes(&m, b_addr, "ok"), 1, "{m}");
    })
    .await;
}

#[tokio::test]
async fn a_trustless_gateway_redirect_sends_no_request_elsewhere() {
    bounded(30, async {
        let (internal, internal_hits) = internal_service().await;
        let dag = Dag::load("balanced-1k.car").await;
        let single = Dag::load("small-raw.car").await;
        let dags = [dag.clone(), single.clone()];
        let liar = TrustlessStub::new(&dags, Lie::Redirect(format!("http://{internal}/secret")));
        let liar_addr = liar.start().await;
        let p = proxy(&[liar_addr], &[TRUSTLESS], RETRIEVAL).await;
        // A CAR (file DAG) and a raw block (single-block file): both redirected.
        for root in [dag.root, single.root] {
            let r = client()
                .get(download(&p, &root.to_string()))
                .send()
                .await
                .unwrap();
            assert_bad_gateway(r).await;
        }
        assert_eq!(internal_hits.load(Ordering::SeqCst), 0, "no blind SSRF");
        assert!(gateway_outcomes(&metrics(&p).await, liar_addr, "error") >= 2);

        // With an honest gateway after it, the content is served, verified.
        let honest = TrustlessStub::new(&dags, Lie::Honest);
        let p = proxy(&[liar_addr, honest.start().await], &[TRUSTLESS], RETRIEVAL).await;
        let r = client()
            .get(download(&p, &dag.root.to_string()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), Dag::file("file20k.bin"));
        assert_eq!(internal_hits.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test]
async fn an_encoded_answer_is_that_gateways_failure() {
    bounded(30, async {
        // What gzip would have made of the content: served as is it would be garbage.
        let content = "the content, before a CDN compressed it";
        let compressed: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage";
        let encoded = GatewayStub::new();
        let cid = raw_cid(content.as_bytes()).to_string();
        encoded.add_under_with(&cid, compressed, Behaviour::Encoded("gzip"));
        let e_addr = encoded.start().await;
        let p = proxy(&[e_addr], &[], RETRIEVAL).await;
        let r = client().get(download(&p, &cid)).send().await.unwrap();
        let body = assert_bad_gateway(r).await;
        assert!(!body.windows(2).any(|w| w == b"\x1f\x8b"), "{body:?}");
        for coding in ["br", "deflate", "identity, gzip", "x-anything"] {
            let cid = encoded.add_with(format!("{content} {coding}"), Behaviour::Encoded(coding));
            let r = client().get(download(&p, &cid)).send().await.unwrap();
            assert_bad_gateway(r).await;
        }
        // `identity` is no coding at all.
        let plain = encoded.add_with("said identity", Behaviour::Encoded("identity"));
        let r = client().get(download(&p, &plain)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), "said identity");
        let asked = encoded.accept_encodings();
        assert!(!asked.is_empty());
        assert!(
            asked.iter().all(|a| a.as_deref() == Some("identity")),
            "{asked:?}"
        );
        assert!(gateway_outcomes(&metrics(&p).await, e_addr, "error") >= 4);

        // Another gateway with the plain bytes serves them.
        let b = GatewayStub::new();
        assert_eq!(b.add(content), cid);
        let p = proxy(&[e_addr, b.start().await], &[], RETRIEVAL).await;
        let r = client().get(download(&p, &cid)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), content);
    })
    .await;
}

#[tokio::test]
async fn an_encoded_trustless_answer_is_that_gateways_failure() {
    bounded(30, async {
        let dag = Dag::load("balanced-1k.car").await;
        let encoding = TrustlessStub::new(std::slice::from_ref(&dag), Lie::Encoding("gzip"));
        let e_addr = encoding.start().await;
        let p = proxy(&[e_addr], &[TRUSTLESS], RETRIEVAL).await;
        let r = client()
            .get(download(&p, &dag.root.to_string()))
            .send()
            .await
            .unwrap();
        assert_bad_gateway(r).await;
        let honest = TrustlessStub::new(std::slice::from_ref(&dag), Lie::Honest);
        let p = proxy(&[e_addr, honest.start().await], &[TRUSTLESS], RETRIEVAL).await;
        let r = client()
            .get(download(&p, &dag.root.to_string()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), Dag::file("file20k.bin"));
    })
    .await;
}

#[tokio::test]
async fn a_diamond_dag_is_refused_quickly_and_real_dags_still_verify() {
    bounded(30, async {
        let diamond = DiamondGateway::new();
        let d_addr = diamond.start().await;
        let p = proxy(&[d_addr], &[TRUSTLESS], RETRIEVAL).await;
        let started = Instant::now();
        let r = client()
            .get(download(&p, &diamond.root.to_string()))
            .send()
            .await
            .unwrap();
        let body = assert_bad_gateway(r).await;
        let took = started.elapsed();
        assert!(took < Duration::from_millis(900), "answered in {took:?}");
        let message = json(&body)["error"].as_str().unwrap().to_owned();
        assert!(message.contains("DAG"), "{message}");
        // The whole CAR is 1.39 GB; what left the stub is the root and what the sockets
        // buffered before the proxy hung up.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pulled = diamond.bytes_sent();
        assert!(pulled < 16 << 20, "pulled {pulled} bytes");
        assert_eq!(
            diamond.requests(),
            1,
            "refused: no other gateway or block asked for"
        );
        assert_eq!(
            gateway_outcomes(&metrics(&p).await, d_addr, "too_costly"),
            1
        );
        // Control: real DAGs made by js-ipfs, through a proxy of the same configuration.
        let dags = [
            Dag::load("deep-64.car").await,
            Dag::load("balanced-1k.car").await,
            Dag::load("trickle-512.car").await,
            Dag::load("cidv0-4k.car").await,
        ];
        let honest = TrustlessStub::new(&dags, Lie::Honest);
        let p = proxy(&[d_addr, honest.start().await], &[TRUSTLESS], RETRIEVAL).await;
        for dag in &dags {
            let r = client()
                .get(download(&p, &dag.root.to_string()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.bytes().await.unwrap(), Dag::file("file20k.bin"));
        }
    })
    .await;
}

#[tokio::test]
async fn max_dag_blocks_caps_a_walk() {
    bounded(30, async {
        // deep-64 is 316 blocks, balanced-1k 21. The walk fails at deep-64's 101st block, after
        // the verified root gave the length and the answer began: the connection is aborted,
        // never ended cleanly (as for any failure once bytes have gone out).
        let deep = Dag::load("deep-64.car").await;
        let balanced = Dag::load("balanced-1k.car").await;
        let honest = TrustlessStub::new(&[deep.clone(), balanced.clone()], Lie::Honest);
        let p = proxy(
            &[honest.start().await],
            &[TRUSTLESS],
            "[retrieval]\nprobe_interval = \"0s\"\nmax_dag_blocks = 100",
        )
        .await;
        for _ in 0..2 {
            // (Under load the abort may overtake the buffered headers: the same abort.)
            if let Ok(r) = client()
                .get(download(&p, &deep.root.to_string()))
                .send()
                .await
            {
                assert_eq!(r.status(), 200);
                assert_eq!(r.headers()["content-length"], "20000");
                assert!(r.bytes().await.is_err(), "never a clean, short body");
            }
        }
        assert_eq!(honest.cars(), 2, "not cached");
        let r = client()
            .get(download(&p, &balanced.root.to_string()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), Dag::file("file20k.bin"));
    })
    .await;
}
