//! Shutdown drains what is in flight and stops taking new connections.

mod support;

use std::sync::Arc;

use support::gateway::{Behaviour, GatewayStub};
use support::homeserver::HomeserverStub;
use support::{bounded, client, pattern, ProxyBuilder};
use tokio::sync::Notify;

#[tokio::test]
async fn shutdown_drains_in_flight_downloads() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let release = Arc::new(Notify::new());
        let bytes = pattern(500_000, 21);
        let cid = gw.add_with(bytes.clone(), Behaviour::HoldAfter(50_000, release.clone()));
        let hs = HomeserverStub::new();
        let proxy = ProxyBuilder::new(hs.start().await)
            .gateway(gw.start().await)
            .start()
            .await;
        let addr = proxy.addr;
        let mut response = client()
            .get(proxy.url(&format!("/_matrix/media/v3/download/s/ipfs:{cid}")))
            .send()
            .await
            .unwrap();
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
