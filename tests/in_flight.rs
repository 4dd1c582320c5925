//! The `in_flight_requests` gauge counts requests while they are in flight and returns to zero
//! when they end, however they end. A file of its own: the gauge is process-wide, and here no
//! other test moves it.

mod support;

use std::time::Duration;

use support::{bounded, client};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn in_flight(admin: std::net::SocketAddr) -> f64 {
    let text = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("ipfs_media_proxy_in_flight_requests ")?
                .trim()
                .parse()
                .ok()
        })
        .expect("the gauge is exposed")
}

async fn wait_for(admin: std::net::SocketAddr, want: f64) {
    loop {
        if in_flight(admin).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that leaves while the homeserver is still answering: hyper drops the handler, and
/// the request must leave the gauge with it (it used to stay counted for ever).
#[tokio::test]
async fn a_client_that_leaves_mid_request_is_no_longer_in_flight() {
    bounded(30, async {
        let (_hs, builder) = support::builder().await;
        let proxy = builder
            .toml("[admin]\nlisten = \"127.0.0.1:0\"")
            .start()
            .await;
        let admin = proxy.admin.expect("admin listener");
        assert_eq!(in_flight(admin).await, 0.0);

        let mut socket = TcpStream::connect(proxy.addr).await.unwrap();
        socket
            .write_all(b"GET /slow HTTP/1.1\r\nHost: hs.example\r\n\r\n")
            .await
            .unwrap();
        wait_for(admin, 1.0).await;
        drop(socket);
        // The homeserver answers after 3 s; the gauge must fall long before that.
        tokio::time::timeout(Duration::from_millis(1500), wait_for(admin, 0.0))
            .await
            .expect("the abandoned request is still counted in flight");

        // A request that completes counts and uncounts as before.
        support::control(&proxy).await.bytes().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), wait_for(admin, 0.0))
            .await
            .expect("a finished request is still counted in flight");
    })
    .await;
}
