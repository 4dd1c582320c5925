//! Connections that send nothing, go idle, or come in past the ceiling are closed, and the
//! proxy keeps serving everyone else (issue #16, item 3). Round after round of them leave the
//! process's descriptors and memory where the warm-up rounds left them.
//!
//! Descriptors are counted for the whole process, so the tests take turns
//! (`support::serial`).

mod support;

use std::time::{Duration, Instant};

use support::homeserver::HomeserverStub;
use support::ProxyBuilder;
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

/// Rounds after the warm-up ones.
const ROUNDS: usize = 10;

/// RSS above the warm baseline: a connection's buffers are a few KiB, so a hundred that
/// were never freed each round would be past it within a few rounds.
const RSS_SLACK: u64 = 8 << 20;

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    support::serially(30, async {
        let (_hs, proxy) =
            proxy_with(&["first_byte_timeout = \"300ms\"", "idle_timeout = \"700ms\""]).await;
        // Nothing sent at all; half an HTTP/2 preface; a preface and SETTINGS, then nothing.
        let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
        let mut half = TcpStream::connect(proxy.addr).await.unwrap();
        half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let mut settings = TcpStream::connect(proxy.addr).await.unwrap();
        settings.write_all(PREFACE_AND_SETTINGS).await.unwrap();
        control(&proxy).await;
        let waited = closed_after(&mut silent).await;
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        for stalled in [&mut half, &mut settings] {
            let waited = closed_after(stalled).await;
            assert!(waited < Duration::from_secs(3), "{waited:?}");
        }
        // A keep-alive connection after one request, idle past `idle_timeout`.
        let mut kept = TcpStream::connect(proxy.addr).await.unwrap();
        kept.write_all(VERSIONS).await.unwrap();
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

/// Thirty of each kind of silent connection at once, with a control request among them, in
/// rounds: every one closed by its timeout, and nothing of them left behind.
#[tokio::test]
async fn rounds_of_silent_connections_leave_nothing_behind() {
    support::serially(90, async {
        const EACH: usize = 30;
        let (_hs, proxy) =
            proxy_with(&["first_byte_timeout = \"300ms\"", "idle_timeout = \"700ms\""]).await;
        let p = &proxy;
        let round = move || async move {
            let mut streams = Vec::new();
            for kind in 0..3 {
                for _ in 0..EACH {
                    let mut s = TcpStream::connect(p.addr).await.unwrap();
                    match kind {
                        0 => {}
                        1 => s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(),
                        _ => s.write_all(PREFACE_AND_SETTINGS).await.unwrap(),
                    }
                    streams.push(s);
                }
            }
            control(p).await;
            for s in &mut streams {
                let waited = closed_after(s).await;
                assert!(waited < Duration::from_secs(3), "{waited:?}");
            }
        };
        let baseline = support::warm(p, round).await;
        for _ in 0..ROUNDS {
            round().await;
        }
        control(p).await;
        // The control's kept connection (two descriptors: both ends are in this process).
        baseline
            .assert_back("after the silent connections", 4, RSS_SLACK, 10)
            .await;
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn past_the_ceiling_new_connections_are_closed_and_the_open_ones_served() {
    support::serially(60, async {
        let (_hs, proxy) =
            proxy_with(&["max_connections = 3", "first_byte_timeout = \"800ms\""]).await;
        let p = &proxy;
        // Two silent connections and a kept-alive one that has been served take every slot;
        // a fourth is accepted and closed at once, while the kept one is still served.
        let round = move || async move {
            let refused_before = refused();
            let mut hogs = Vec::new();
            for _ in 0..2 {
                hogs.push(TcpStream::connect(p.addr).await.unwrap());
            }
            let mut kept = TcpStream::connect(p.addr).await.unwrap();
            assert_served(&mut kept).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut extra = TcpStream::connect(p.addr).await.unwrap();
            let _ = extra.write_all(VERSIONS).await;
            let waited = closed_after(&mut extra).await;
            assert!(waited < Duration::from_millis(500), "{waited:?}");
            assert_eq!(refused() - refused_before, 1);
            assert_served(&mut kept).await;
            // Once the silent ones are closed by their timeout and the kept one leaves,
            // slots are free again (each freed as its connection's task ends).
            for hog in &mut hogs {
                closed_after(hog).await;
            }
            // (No control through the shared client here: its pooled connection would take
            // a slot of the next round. The kept connection is this round's control.)
            drop(kept);
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let baseline = support::warm(p, round).await;
        for _ in 0..ROUNDS {
            round().await;
        }
        baseline
            .assert_back("after the ceiling rounds", 4, RSS_SLACK, 10)
            .await;
        proxy.stop().await;
    })
    .await;
}

const VERSIONS: &[u8] = b"GET /_matrix/client/versions HTTP/1.1\r\nhost: x\r\n\r\n";

/// The HTTP/2 client preface and an empty SETTINGS frame.
const PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Sends a request on the kept-alive `stream` and reads its whole answer (sized or chunked),
/// which must be a success (the stub answers 201).
async fn assert_served(stream: &mut TcpStream) {
    stream.write_all(VERSIONS).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed instead of served");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length = text[..end]
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().unwrap());
        let complete = match length {
            Some(length) => answer.len() >= end + 4 + length,
            None => text.ends_with("\r\n0\r\n\r\n"),
        };
        if complete {
            assert!(text.starts_with("http/1.1 2"), "{text}");
            return;
        }
    }
}

fn refused() -> u64 {
    ipfs_media_proxy::metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix("ipfs_media_proxy_connections_refused_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}
