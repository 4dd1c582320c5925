//! Federation media for ipfs IDs, the `ipfs_<cid>` alias, and the capabilities edit.

mod support;

use support::gateway::GatewayStub;
use support::homeserver::{HomeserverStub, CAPABILITIES};
use support::{bounded, client, get, Proxy};

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

async fn setup(extra: &str) -> (HomeserverStub, GatewayStub, Proxy, String) {
    support::proxy_serving(PNG, extra).await
}

fn x_matrix(sig: &str) -> String {
    format!("X-Matrix origin=\"remote.example\",destination=\"localhost\",key=\"ed25519:a\",sig=\"{sig}\"")
}

/// `GET {url}` with an `X-Matrix` authorization signed `sig`.
async fn signed_get(url: &str, sig: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("authorization", x_matrix(sig))
        .send()
        .await
        .unwrap()
}

/// Parses a multipart answer with a real multipart parser (multer, as used by axum).
async fn parts(response: reqwest::Response) -> Vec<(String, Option<String>, bytes::Bytes)> {
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    // multer's own helper only accepts multipart/form-data; the boundary rule is the same.
    let boundary = content_type.split("boundary=").nth(1).unwrap().to_owned();
    let mut multipart = multer::Multipart::new(response.bytes_stream(), boundary);
    let mut out = Vec::new();
    while let Some(field) = multipart.next_field().await.unwrap() {
        let ct = field.headers()["content-type"].to_str().unwrap().to_owned();
        let cd = field
            .headers()
            .get("content-disposition")
            .map(|v| v.to_str().unwrap().to_owned());
        out.push((ct, cd, field.bytes().await.unwrap()));
    }
    out
}

#[tokio::test]
async fn signed_request_for_unknown_media_is_served_as_multipart() {
    bounded(30, async {
        let (hs, gw, proxy, cid) = setup("").await;
        for prefix in [
            "/_matrix/federation/v1/media/download",
            "/_matrix/federation/unstable/org.matrix.msc3916.v2/media/download",
        ] {
            let target = format!("{prefix}/ipfs%3A{cid}?timeout_ms=5000");
            let response = signed_get(&proxy.url(&target), "good").await;
            assert_eq!(response.status(), 200);
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            let boundary = content_type
                .strip_prefix("multipart/mixed; boundary=")
                .unwrap();
            assert!(
                !boundary.contains('"') && !boundary.is_empty(),
                "unquoted, last parameter"
            );
            let length: usize = response.headers()["content-length"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let parts = parts(response).await;
            assert_eq!(parts.len(), 2);
            assert_eq!(parts[0].0, "application/json");
            assert_eq!(parts[0].2.as_ref(), b"{}");
            assert_eq!(parts[1].0, "image/png");
            assert_eq!(parts[1].1.as_deref(), Some("inline"));
            assert_eq!(parts[1].2.as_ref(), PNG);
            assert!(length > PNG.len());
            // The homeserver saw the very request that was signed.
            let seen = hs.last();
            assert_eq!(seen.target, target);
            assert_eq!(seen.headers["authorization"], x_matrix("good").as_str());
        }
        assert_eq!(gw.hits(&cid), 1);
    })
    .await;
}

#[tokio::test]
async fn forged_or_missing_signature_gets_the_homeservers_refusal() {
    bounded(30, async {
        let (_hs, gw, proxy, cid) = setup("").await;
        let url = proxy.url(&format!("/_matrix/federation/v1/media/download/ipfs:{cid}"));
        let r = signed_get(&url, "forged").await;
        assert_eq!(r.status(), 401);
        assert_eq!(support::errcode(r).await, "M_UNAUTHORIZED");
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401);
        // A server that does not know the endpoint checked nothing: its 404 is passed back.
        let r = signed_get(&url, "old").await;
        assert_eq!(r.status(), 404);
        assert_eq!(support::errcode(r).await, "M_UNRECOGNIZED");
        // Media the homeserver has is its own answer.
        let r = signed_get(&url, "mine").await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            b"the homeserver's own answer"
        );
        assert_eq!(
            gw.hits(&cid),
            0,
            "nothing fetched for requests the homeserver did not clear"
        );
    })
    .await;
}

#[tokio::test]
async fn alias_form_works_everywhere_and_shares_the_cache() {
    bounded(30, async {
        let (_hs, gw, proxy, cid) = setup("").await;
        for path in [
            format!("/_matrix/media/v3/download/localhost/ipfs_{cid}"),
            format!("/_matrix/media/v3/download/other.example/ipfs:{cid}/x.png"),
            format!("/_matrix/client/v1/media/download/localhost/ipfs_{cid}?access_token=good"),
        ] {
            let r = get(&proxy, &path).await;
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.bytes().await.unwrap().as_ref(), PNG);
        }
        let r = signed_get(
            &proxy.url(&format!("/_matrix/federation/v1/media/download/ipfs_{cid}")),
            "good",
        )
        .await;
        assert_eq!(parts(r).await[1].2.as_ref(), PNG);
        assert_eq!(gw.hits(&cid), 1, "both forms are one cache entry");
    })
    .await;
}

#[tokio::test]
async fn alias_prefix_is_configurable() {
    bounded(30, async {
        let (hs, _gw, proxy, cid) = setup("[media]\nid_alias_prefix = \"cid-\"").await;
        let r = get(&proxy, &format!("/_matrix/media/v3/download/s/cid-{cid}")).await;
        assert_eq!(r.status(), 200);
        let r = get(&proxy, &format!("/_matrix/media/v3/download/s/ipfs_{cid}")).await;
        assert_eq!(r.status(), 201, "no longer ours: the homeserver answered");
        assert_eq!(
            hs.last().target,
            format!("/_matrix/media/v3/download/s/ipfs_{cid}")
        );
    })
    .await;
}

#[tokio::test]
async fn legacy_fallback_servers_use_works_for_any_server_name() {
    bounded(30, async {
        let (_hs, _gw, proxy, cid) = setup("").await;
        let r = get(
            &proxy,
            &format!("/_matrix/media/v3/download/far.away.example/ipfs:{cid}?allow_remote=false"),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), PNG);
    })
    .await;
}

#[tokio::test]
async fn capabilities_are_edited_only_when_enabled() {
    bounded(30, async {
        let (_hs, _gw, proxy, _cid) = setup("").await;
        let r = get(&proxy, "/_matrix/client/v3/capabilities").await;
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            CAPABILITIES.as_bytes(),
            "off by default"
        );

        let (_hs, _gw, proxy, _cid) = setup(
            "[capabilities]\nadvertise_ipfs = true\npreferred_origin = \"media.example.org\"",
        )
        .await;
        for version in ["v3", "r0"] {
            let r = get(&proxy, &format!("/_matrix/client/{version}/capabilities")).await;
            let declared: usize = r.headers()["content-length"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let body = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
            assert_eq!(declared, body.len());
            let entry = r#"{"enabled":true,"preferred_origin":"media.example.org"}"#;
            let expected = CAPABILITIES.replacen(
                "{\"capabilities\": {",
                &format!("{{\"capabilities\": {{\"m.ipfs\":{entry},\"io.t2bot.ipfs\":{entry},"),
                1,
            );
            assert_eq!(body, expected, "every other byte as the homeserver sent it");
        }
    })
    .await;
}
