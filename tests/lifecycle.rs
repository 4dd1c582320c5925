//! Shutdown drains what is in flight and stops taking new connections.

mod support;

use support::gateway::holding;
use support::{bounded, get};

#[tokio::test]
async fn shutdown_drains_in_flight_downloads() {
    bounded(30, async {
        let (gw, cid, release, bytes) = holding(500_000, 21, 50_000);
        let (_hs, builder) = support::builder().await;
        let proxy = builder.gateway(gw.start().await).start().await;
        let addr = proxy.addr;
        let mut response = get(&proxy, &format!("/_matrix/media/v3/download/s/ipfs:{cid}")).await;
        let first = response.chunk().await.unwrap().unwrap();
        let stopping = tokio::spawn(proxy.stop());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "no new connections once shutdown began"
        );
        release.notify_one();
        let mut all = first.to_vec();
        while let Some(part) = response.chunk().await.unwrap() {
            all.extend_from_slice(&part);
        }
        assert_eq!(all, bytes, "the in-flight download finished whole");
        stopping.await.unwrap();
    })
    .await;
}
