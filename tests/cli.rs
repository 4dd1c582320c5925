//! The binary as an admin runs it: config checks, the access log, SIGTERM.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::gateway::GatewayStub;
use support::homeserver::HomeserverStub;

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-media-proxy");

fn write_config(dir: &tempfile::TempDir, body: &str) -> std::path::PathBuf {
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn shipped_config_checks_and_version_prints() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(BIN)
        .args([
            "--config",
            &format!("{root}/config/ipfs-media-proxy.toml"),
            "--check-config",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_config_names_the_key_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[server]\nlisten = \"127.0.0.1:0\"\n[homeserver]\nurl = \"http://127.0.0.1:1\"\n[[gateways]]\nurl = \"http://127.0.0.1:2\"\n[cache]\nmax_bytes = \"huge\"\n",
    );
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cache.max_bytes"), "{err}");

    let out = Command::new(BIN)
        .args(["--config"])
        .arg(&path)
        .arg("--check-config")
        .env("IPFS_MEDIA_PROXY_CACHE__MAX_BYTES", "1GiB")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the environment overrides the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A failed assertion must not leave the proxy running (it would hold the test's pipes open).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary, reads its JSON log, fetches twice (miss then hit), and stops it with
/// SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_and_sigterm() {
    let hs = HomeserverStub::new();
    let hs_addr = hs.start().await;
    let gw = GatewayStub::new();
    let cid = gw.add(&b"logged bytes"[..]);
    let gw_addr = gw.start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[homeserver]\nurl = \"http://{hs_addr}\"\n[[gateways]]\nurl = \"http://{gw_addr}\"\n"),
    );
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["--log-format", "json", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next_line = |want: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("expected log line did not come");
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if want(&v) {
                return v;
            }
        }
    };
    next_line(&|v| v["message"] == "listening");

    let url = format!("http://127.0.0.1:{port}/_matrix/media/v3/download/s/ipfs:{cid}");
    for expected in ["miss", "hit"] {
        let r = support::client().get(&url).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"logged bytes");
        let v = next_line(&|v| v["message"] == "request");
        assert_eq!(v["route"], "download");
        assert_eq!(v["cache"], expected);
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 12);
        assert_eq!(v["complete"], true);
        assert!(v["duration_ms"].is_string() || v["duration_ms"].is_number());
    }
    let r = support::client()
        .get(format!(
            "http://127.0.0.1:{port}/_matrix/client/versions?access_token=secret"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v = next_line(&|v| v["message"] == "request");
    assert_eq!(v["route"], "passthrough");
    assert_eq!(
        v["path"], "/_matrix/client/versions",
        "queries (tokens) are never logged"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success());
}
