//! Connections are served by `server.workers` threads, each with a runtime of its own, and
//! those threads end with the server. A file of its own: it counts the process's threads.

mod support;

use std::time::Duration;

use support::{bounded, client};

/// Threads of this process named `worker-N`.
fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("worker-"))
        .count()
}

/// `ipfs_media_proxy_connections_total` by worker index, from the metrics text.
fn served_by_worker() -> std::collections::HashMap<u32, u64> {
    ipfs_media_proxy::metrics::render()
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("ipfs_media_proxy_connections_total{worker=\"")?;
            let (worker, count) = rest.split_once("\"} ")?;
            Some((worker.parse().ok()?, count.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn workers_serve_every_connection_and_end_with_the_server() {
    bounded(30, async {
        let (hs, builder) = support::builder().await;
        let proxy = builder.server_line("workers = 3").start().await;
        // They start with the serving task.
        while worker_threads() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(worker_threads(), 3);
        // Twelve clients, so twelve connections, dealt out in turn to the three workers.
        // Each client's first request opens its connection before the next client starts,
        // so the twelve arrive in order and the three workers get four each.
        let before = served_by_worker();
        let mut clients = Vec::new();
        for n in 0..12 {
            let url = proxy.url(&format!("/_matrix/client/versions?n={n}"));
            let client = client();
            let r = client.get(&url).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.bytes().await.unwrap();
            clients.push(tokio::spawn(async move {
                for _ in 0..4 {
                    let r = client.get(&url).send().await.unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                    r.bytes().await.unwrap();
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        let after = served_by_worker();
        let spread: Vec<u64> = (1..=3)
            .map(|w| after.get(&w).copied().unwrap_or(0) - before.get(&w).copied().unwrap_or(0))
            .collect();
        assert_eq!(spread, [4, 4, 4], "connections dealt out in turn");
        assert_eq!(
            hs.recorded().len(),
            60,
            "every request reached the homeserver"
        );
        proxy.stop().await;
        while worker_threads() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
