//! The admin listener: metrics that move with traffic, health and readiness.

mod support;

use support::gateway::GatewayStub;
use support::homeserver::HomeserverStub;
use support::{bounded, client, json, ProxyBuilder};

/// A sample's value from the text exposition (`name{labels} value`).
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let cid = gw.add(&b"metered bytes"[..]);
        let gw_addr = gw.start().await;
        let (_hs, builder) = support::builder().await;
        let proxy = builder
            .gateway(gw_addr)
            .toml("[admin]\nlisten = \"127.0.0.1:0\"")
            .start()
            .await;
        let admin = proxy.admin.expect("admin listener");
        let metrics = || async {
            let r = client().get(format!("http://{admin}/metrics")).send().await.unwrap();
            assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
            r.text().await.unwrap()
        };
        let before = metrics().await;
        let url = proxy.url(&format!("/_matrix/media/v3/download/s/ipfs:{cid}"));
        for _ in 0..3 {
            client().get(&url).send().await.unwrap().bytes().await.unwrap();
        }
        client().get(proxy.url("/_matrix/client/versions")).send().await.unwrap();
        // The log line (and its metrics) is written when the body is done.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let after = metrics().await;
        let delta = |key: &str| sample(&after, key) - sample(&before, key);
        assert_eq!(delta("ipfs_media_proxy_requests_total{route=\"download\",status_class=\"2xx\"}"), 3.0);
        assert!(delta("ipfs_media_proxy_requests_total{route=\"passthrough\",status_class=\"2xx\"}") >= 1.0);
        assert_eq!(delta("ipfs_media_proxy_cache_lookups_total{outcome=\"hit\"}"), 2.0);
        assert!(delta("ipfs_media_proxy_cache_lookups_total{outcome=\"miss\"}") >= 1.0);
        assert!(delta("ipfs_media_proxy_response_bytes_total{route=\"download\"}") >= 39.0);
        assert!(sample(&after, "ipfs_media_proxy_cache_entries") >= 1.0);
        assert!(after.contains(&format!("ipfs_media_proxy_gateway_requests_total{{gateway=\"http://{gw_addr}\",outcome=\"ok\"}}")));
        assert!(!after.contains(&cid), "no CID in any label");

        let r = client().get(format!("http://{admin}/health")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = client().get(format!("http://{admin}/ready")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn not_ready_without_a_gateway_or_homeserver() {
    bounded(30, async {
        let closed = support::closed_port();
        let hs = HomeserverStub::new();
        let gw = GatewayStub::new();
        // (homeserver, gateway, what the reason names): one of the two cannot be reached.
        for (homeserver, gateway, names) in [
            (hs.start().await, closed, "gateway"),
            (closed, gw.start().await, "homeserver"),
        ] {
            let proxy = ProxyBuilder::new(homeserver)
                .gateway(gateway)
                .toml("[admin]\nlisten = \"127.0.0.1:0\"")
                .start()
                .await;
            let (status, v) = ready(&proxy).await;
            assert_eq!(status, 503);
            assert!(v["reason"].as_str().unwrap().contains(names), "{v}");
        }
    })
    .await;
}

/// `GET /ready` on the admin listener: the status and the JSON body.
async fn ready(proxy: &support::Proxy) -> (u16, serde_json::Value) {
    let r = client()
        .get(format!("http://{}/ready", proxy.admin.unwrap()))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, json(&r.bytes().await.unwrap()))
}
