//! Moderation and reloading: blocked CIDs are refused everywhere and never fetched, the lists
//! follow their files, and a configuration reload swaps what may change while running.

mod support;

use std::path::Path;
use std::time::Duration;

use cid::Cid;
use ipfs_media_proxy::metrics::METRICS;
use support::gateway::{Behaviour, GatewayStub};
use support::homeserver::HomeserverStub;
use support::{bounded, client, get, get_as, json, ProxyBuilder};

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

/// Writes a list the way admins and tools should: a new file renamed over the old one.
fn write_list(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The same content under another name: CIDv1 in base36 with the dag-pb codec.
fn other_form(cid: &str) -> String {
    let cid = Cid::try_from(cid).unwrap();
    Cid::new_v1(0x70, *cid.hash())
        .to_string_of_base(multibase::Base::Base36Lower)
        .unwrap()
}

fn toml_list(path: &Path, interval: &str) -> String {
    format!(
        "[denylist]\npaths = [{:?}]\nwatch_interval = \"{interval}\"\n",
        path.display().to_string()
    )
}

async fn assert_blocked(response: reqwest::Response) {
    assert_eq!(response.status(), 404);
    let cache_control = response.headers()["cache-control"].to_str().unwrap();
    assert!(
        cache_control.contains("no-store"),
        "a refusal is never cached: {cache_control}"
    );
    let body = json(&response.bytes().await.unwrap());
    assert_eq!(body["errcode"], "M_NOT_FOUND");
    assert!(
        body["error"].as_str().unwrap().contains("blocked"),
        "{body}"
    );
}

#[tokio::test]
async fn blocked_cid_is_refused_on_every_route_and_never_fetched() {
    bounded(30, async {
        let hs = HomeserverStub::new();
        let gw = GatewayStub::new();
        let blocked = gw.add(PNG);
        let allowed = gw.add(&b"fine"[..]);
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("bad.deny");
        // The compact format, naming the CID in another base, version and codec.
        write_list(
            &list,
            &format!("version: 1\nname: test\n---\n# a takedown\n/ipfs/{}\n", other_form(&blocked)),
        );
        let proxy = ProxyBuilder::new(hs.start().await)
            .gateway(gw.start().await)
            .toml(&toml_list(&list, "0s"))
            .start()
            .await;
        let refusals = METRICS.denylist_refusals.get();

        let routes = [
            format!("/_matrix/media/v3/download/example.org/ipfs:{blocked}"),
            format!("/_matrix/media/v3/download/any.server/ipfs_{blocked}/name.png"),
            format!("/_matrix/media/v3/thumbnail/example.org/ipfs:{blocked}?width=32&height=32"),
            format!("/_matrix/client/v1/media/download/example.org/ipfs:{blocked}"),
            format!("/_matrix/client/v1/media/thumbnail/example.org/ipfs:{blocked}?width=32&height=32"),
        ];
        for route in &routes {
            let response = get_as(&proxy, route, "good").await;
            assert_blocked(response).await;
        }
        let federation = client()
            .get(proxy.url(&format!(
                "/_matrix/federation/v1/media/download/ipfs%3A{blocked}"
            )))
            .header(
                "authorization",
                "X-Matrix origin=\"remote.example\",destination=\"localhost\",key=\"ed25519:a\",sig=\"good\"",
            )
            .send()
            .await
            .unwrap();
        assert_blocked(federation).await;
        // HEAD too (no body to read, the status says it).
        let head = client()
            .head(proxy.url(&routes[0]))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 404);

        assert_eq!(gw.hits(&blocked), 0, "blocked content is never fetched");
        assert_eq!(METRICS.denylist_refusals.get() - refusals, 7);

        // Authentication still comes first: an unknown token learns nothing about the list.
        let response = get_as(&proxy, &routes[3], "unknown").await;
        assert_eq!(response.status(), 401);

        let response = get(
            &proxy,
            &format!("/_matrix/media/v3/download/example.org/ipfs:{allowed}"),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap().as_ref(), b"fine");
        proxy.stop().await;
    })
    .await;
}

/// Polls `url` until it answers `status` (the watcher looks every 100 ms), bounded.
async fn until_status(url: &str, status: u16) -> reqwest::Response {
    for _ in 0..100 {
        let response = client().get(url).send().await.unwrap();
        if response.status() == status {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered {status}");
}

#[tokio::test]
async fn list_files_are_followed_atomically_and_blocked_items_leave_the_cache() {
    bounded(60, async {
        let hs = HomeserverStub::new();
        let gw = GatewayStub::new();
        let cid = gw.add(&b"soon blocked"[..]);
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("plain.txt");
        write_list(&list, "# nothing yet\n");
        let proxy = ProxyBuilder::new(hs.start().await)
            .gateway(gw.start().await)
            .toml(&toml_list(&list, "100ms"))
            .start()
            .await;
        let url = proxy.url(&format!("/_matrix/media/v3/download/s/ipfs:{cid}"));
        let response = client().get(&url).send().await.unwrap();
        assert_eq!(response.bytes().await.unwrap().as_ref(), b"soon blocked");
        assert_eq!(proxy.app.resolver().cache().entry_count(), 1);

        // The plain form, CIDv0-free but in another base: one CID per line.
        write_list(&list, &format!("{}\n", other_form(&cid)));
        assert_blocked(until_status(&url, 404).await).await;
        assert_eq!(
            proxy.app.resolver().cache().entry_count(),
            0,
            "a newly blocked item is dropped from memory"
        );
        assert_eq!(proxy.app.denylist().current().len(), 1);

        // A broken file keeps the previous list whole.
        write_list(&list, &format!("{cid}\nthis is not a CID\n"));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(proxy.app.denylist().current().len(), 1);
        assert_blocked(client().get(&url).send().await.unwrap()).await;

        // Lifting the block serves the content again (fetched anew: it left the cache).
        write_list(&list, "");
        let response = until_status(&url, 200).await;
        assert_eq!(response.bytes().await.unwrap().as_ref(), b"soon blocked");
        assert_eq!(gw.hits(&cid), 2);
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reload_swaps_gateways_and_timeouts_and_reports_the_rest() {
    bounded(30, async {
        let hs = HomeserverStub::new();
        let hs_addr = hs.start().await;
        let old_gw = GatewayStub::new();
        let new_gw = GatewayStub::new();
        let cid = new_gw.add(&b"only on the new gateway"[..]);
        let builder = ProxyBuilder::new(hs_addr).gateway(old_gw.start().await);
        let proxy = builder.start().await;
        let url = proxy.url(&format!("/_matrix/media/v3/download/s/ipfs:{cid}"));
        assert_eq!(client().get(&url).send().await.unwrap().status(), 404);

        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.deny");
        write_list(&list, "");
        let new = ProxyBuilder::new(hs_addr)
            .gateway(new_gw.start().await)
            .toml(&format!(
                "[cache]\nmax_bytes = \"1GiB\"\n[media]\ndefault_timeout = \"300ms\"\n{}",
                toml_list(&list, "0s")
            ))
            .config();
        let changes = proxy.app.reload(&new).unwrap();
        assert_eq!(
            changes.applied,
            ["gateways", "media.default_timeout", "denylist"]
        );
        assert_eq!(changes.need_restart, ["cache"]);

        let response = client().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.bytes().await.unwrap().as_ref(),
            b"only on the new gateway"
        );
        // The new wait applies: content that takes 5 s gives up after the new 300 ms default.
        let slow = new_gw.add_with(&b"slow"[..], Behaviour::Delay(Duration::from_secs(5)));
        let started = std::time::Instant::now();
        let response = get(&proxy, &format!("/_matrix/media/v3/download/s/ipfs:{slow}")).await;
        assert_eq!(response.status(), 504);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );

        // A reload whose denylist is broken applies the rest and keeps the old list.
        write_list(&list, "garbage\n");
        let mut broken = new.clone();
        broken.media.default_timeout = Duration::from_secs(3);
        let changes = proxy.app.reload(&broken).unwrap();
        assert_eq!(changes.applied, ["media.default_timeout"]);
        assert_eq!(proxy.app.denylist().current().len(), 0);
        // Also when the broken list is a new path: not reported as applied, since it is not.
        let other = dir.path().join("other.deny");
        write_list(&other, "garbage\n");
        let mut moved = broken.clone();
        moved.denylist.paths = vec![other];
        moved.media.default_timeout = Duration::from_secs(4);
        let changes = proxy.app.reload(&moved).unwrap();
        assert_eq!(changes.applied, ["media.default_timeout"]);
        proxy.stop().await;
    })
    .await;
}

/// A Kubernetes ConfigMap volume: the file is a symlink through `..data`, and an update makes
/// a new directory and flips `..data` to it atomically. The file check must see that.
#[cfg(unix)]
#[test]
fn configmap_style_symlink_flip_is_seen() {
    use ipfs_media_proxy::denylist::Denylists;
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..v1")).unwrap();
    std::fs::write(d.join("..v1/list.deny"), "").unwrap();
    symlink("..v1", d.join("..data")).unwrap();
    symlink("..data/list.deny", d.join("list.deny")).unwrap();
    let lists = Denylists::load(&[d.join("list.deny")], Duration::from_secs(1)).unwrap();
    assert!(lists.reload_if_changed().is_none(), "nothing changed yet");

    let cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
    std::fs::create_dir(d.join("..v2")).unwrap();
    // Same length and possibly the same mtime second as before would not do: the inode
    // differs, and so does the content here.
    std::fs::write(d.join("..v2/list.deny"), format!("{cid}\n")).unwrap();
    symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    let list = lists
        .reload_if_changed()
        .expect("the flip is seen")
        .unwrap();
    assert!(list.blocks(&Cid::try_from(cid).unwrap()));
    assert!(lists.reload_if_changed().is_none(), "and read once");
}
