//! Connections that send nothing, go idle, or come in past the ceiling are closed, and the
//! proxy keeps serving everyone else (issue #16, item 3).

mod support;

use std::time::{Duration, Instant};

use support::homeserver::HomeserverStub;
use support::{bounded, ProxyBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits for the proxy to close `stream`: the read that ends it (EOF or reset), and when.
async fn closed_after(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

/// The proxy in front of a stub homeserver, with these `[server]` lines.
async fn proxy_with(server_lines: &[&str]) -> (HomeserverStub, support::Proxy) {
    let hs = HomeserverStub::new();
    let mut builder = ProxyBuilder::new(hs.start().await);
    for line in server_lines {
        builder = builder.server_line(line);
    }
    (hs, builder.start().await)
}

async fn control(proxy: &support::Proxy) {
    support::control(proxy).await;
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    bounded(30, async {
        let (_hs, proxy) =
            proxy_with(&["first_byte_timeout = \"300ms\"", "idle_timeout = \"700ms\""]).await;
        // Nothing sent at all; half an HTTP/2 preface; a preface and SETTINGS, then nothing.
        let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
        let mut half = TcpStream::connect(proxy.addr).await.unwrap();
        half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let mut settings = TcpStream::connect(proxy.addr).await.unwrap();
        settings
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap();
        control(&proxy).await;
        let waited = closed_after(&mut silent).await;
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        for stalled in [&mut half, &mut settings] {
            let waited = closed_after(stalled).await;
            assert!(waited < Duration::from_secs(3), "{waited:?}");
        }
        // A keep-alive connection after one request, idle past `idle_timeout`.
        let mut kept = TcpStream::connect(proxy.addr).await.unwrap();
        kept.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 11];
        kept.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 20");
        let waited = closed_after(&mut kept).await;
        assert!(
            (Duration::from_millis(300)..Duration::from_secs(3)).contains(&waited),
            "{waited:?}"
        );
        control(&proxy).await;
        let metrics = ipfs_media_proxy::metrics::render();
        for reason in ["silent", "idle"] {
            assert!(
                metrics.contains(&format!(
                    "ipfs_media_proxy_connection_timeouts_total{{outcome=\"{reason}\"}}"
                )),
                "{reason}"
            );
        }
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn past_the_ceiling_new_connections_are_closed_and_the_open_ones_served() {
    bounded(30, async {
        let (_hs, proxy) =
            proxy_with(&["max_connections = 3", "first_byte_timeout = \"800ms\""]).await;
        let refused_before = refused();
        // Three silent connections take every slot.
        let mut hogs = Vec::new();
        for _ in 0..3 {
            hogs.push(TcpStream::connect(proxy.addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The fourth is accepted and closed at once.
        let mut extra = TcpStream::connect(proxy.addr).await.unwrap();
        let _ = extra
            .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        let waited = closed_after(&mut extra).await;
        assert!(waited < Duration::from_millis(500), "{waited:?}");
        assert_eq!(refused() - refused_before, 1);
        // Once the silent ones are closed by their timeout, slots are free again.
        for hog in &mut hogs {
            closed_after(hog).await;
        }
        control(&proxy).await;
        proxy.stop().await;
    })
    .await;
}

fn refused() -> u64 {
    ipfs_media_proxy::metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix("ipfs_media_proxy_connections_refused_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}
