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

/// Fails unless the command succeeded, with `what` and its stderr as the message.
fn assert_success(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert_success(&out, "");
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
    assert_success(&out, "the environment overrides the file: ");
}

/// The binary running with `--log-format json`, its log lines read on a thread. A failed
/// assertion must not leave it running (it would hold the test's pipes open): killed on drop.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(config: &std::path::Path) -> Self {
        Self::start_with(config, &[])
    }

    fn start_with(config: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// The next log line that `want` accepts (10 s at most).
    fn next_line(&self, want: &dyn Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("expected log line did not come");
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if want(&v) {
                return v;
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and returns the exit status (10 s at most).
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return exit;
            }
            assert!(Instant::now() < deadline, "did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the binary is started in front of: a gateway stub serving `bytes` and a homeserver
/// stub, both started; then the gateway, the item's CID, a free port for the binary, a folder
/// for its files and the TOML (`[server]`, `[homeserver]`, `[[gateways]]`) naming them.
async fn stubs(bytes: &'static [u8]) -> (GatewayStub, String, u16, tempfile::TempDir, String) {
    let hs = HomeserverStub::new();
    let hs_addr = hs.start().await;
    let gw = GatewayStub::new();
    let cid = gw.add(bytes);
    let gw_addr = gw.start().await;
    let port = free_port();
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[homeserver]\nurl = \"http://{hs_addr}\"\n[[gateways]]\nurl = \"http://{gw_addr}\"\n"
    );
    (gw, cid, port, tempfile::tempdir().unwrap(), base)
}

/// Starts the binary, reads its JSON log, fetches twice (miss then hit), and stops it with
/// SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_and_sigterm() {
    let (_gw, cid, port, dir, base) = stubs(b"logged bytes").await;
    let path = write_config(&dir, &base);
    let mut proxy = Running::start(&path);
    let next_line = |want: &dyn Fn(&serde_json::Value) -> bool| proxy.next_line(want);
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

    assert!(proxy.terminate().success());
}

/// `HTTP_PROXY` and friends in the environment are not used for gateway requests: a request
/// may only go to an address the configuration names (and a private gateway's token with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_proxies_are_not_used_for_gateways() {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&hits);
    let (proxy_addr, _task) = support::serve(move |_req| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            use http_body_util::BodyExt;
            let body = http_body_util::Full::new(bytes::Bytes::from_static(b"not the content"));
            http::Response::new(body.map_err(|never| match never {}).boxed())
        }
    })
    .await;
    let (gw, cid, port, dir, base) = stubs(b"from the gateway").await;
    let path = write_config(
        &dir,
        &format!("{base}[retrieval]\nprobe_interval = \"0s\"\n"),
    );
    let env_proxy = format!("http://{proxy_addr}");
    let _proxy = Running::start_with(
        &path,
        &[
            ("HTTP_PROXY", &env_proxy),
            ("http_proxy", &env_proxy),
            ("ALL_PROXY", &env_proxy),
            ("all_proxy", &env_proxy),
            ("NO_PROXY", ""),
            ("no_proxy", ""),
        ],
    );
    _proxy.next_line(&|v| v["message"] == "listening");
    let url = format!("http://127.0.0.1:{port}/_matrix/media/v3/download/s/ipfs_{cid}");
    let r = support::client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"from the gateway");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(gw.hits(&cid), 1);
}

/// An upload stored on IPFS: one access-log line with route `upload`, the CID, the bytes and
/// the outcome; the store's `Authorization` value appears in no line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_access_log_line_and_the_store_secret_is_never_logged() {
    use http_body_util::BodyExt;
    let hs = HomeserverStub::new();
    let hs_addr = hs.start().await;
    let bytes = b"an uploaded file";
    let cid = support::gateway::raw_cid(bytes).to_string();
    let answer = format!("{{\"Name\":\"upload\",\"Hash\":\"{cid}\"}}\n");
    let (store, _task) = support::serve(move |req: http::Request<hyper::body::Incoming>| {
        let answer = answer.clone();
        async move {
            let _ = req.into_body().collect().await;
            http::Response::new(
                http_body_util::Full::new(bytes::Bytes::from(answer))
                    .map_err(|never| match never {})
                    .boxed(),
            )
        }
    })
    .await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[homeserver]\nurl = \"http://{hs_addr}\"\n\
             [[gateways]]\nurl = \"http://127.0.0.1:9\"\n[upload]\nenabled = true\n\
             [upload.store]\nkind = \"kubo\"\nurl = \"http://{store}\"\nauthorization = \"Basic c3RvcmUtc2VjcmV0\"\n"
        ),
    );
    let proxy = Running::start(&path);
    let no_secret = |v: &serde_json::Value| {
        assert!(!v.to_string().contains("c3RvcmUtc2VjcmV0"), "logged: {v}");
    };
    proxy.next_line(&|v| {
        no_secret(v);
        v["message"] == "listening"
    });
    let r = support::client()
        .post(format!(
            "http://127.0.0.1:{port}/_matrix/media/v3/upload?filename=f.txt"
        ))
        .bearer_auth("good")
        .body(&bytes[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = proxy.next_line(&|v| {
        no_secret(v);
        v["message"] == "request"
    });
    assert_eq!(v["route"], "upload");
    assert_eq!(v["cid"], cid);
    assert_eq!(v["upload_bytes"], bytes.len());
    assert_eq!(v["outcome"], "stored");
    assert_eq!(v["status"], 200);
    assert_eq!(v["path"], "/_matrix/media/v3/upload");
}

/// SIGHUP: the file is read again; what can change applies at once (the denylist, here named
/// by a path relative to the config file), what cannot is reported, a broken file changes
/// nothing, and the process keeps serving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_what_it_can() {
    let (_gw, cid, port, dir, base) = stubs(b"reload me").await;
    let path = write_config(&dir, &base);
    let proxy = Running::start(&path);
    proxy.next_line(&|v| v["message"] == "listening");
    let url = format!("http://127.0.0.1:{port}/_matrix/media/v3/download/s/ipfs:{cid}");
    assert_eq!(
        support::client().get(&url).send().await.unwrap().status(),
        200
    );

    std::fs::write(dir.path().join("takedowns.deny"), format!("/ipfs/{cid}\n")).unwrap();
    write_config(
        &dir,
        &format!("{base}[denylist]\npaths = [\"takedowns.deny\"]\nwatch_interval = \"0s\"\n"),
    );
    proxy.signal("HUP");
    let v = proxy.next_line(&|v| v["message"] == "configuration reloaded");
    assert_eq!(v["applied"], "[\"denylist\"]");
    let r = support::client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v = proxy.next_line(&|v| v["message"] == "refused: the CID is on a denylist");
    assert_eq!(v["level"], "WARN");

    // A new listen address needs a restart: reported, and the old one keeps serving.
    let moved = base.replace(&port.to_string(), &free_port().to_string());
    write_config(
        &dir,
        &format!("{moved}[denylist]\npaths = [\"takedowns.deny\"]\nwatch_interval = \"0s\"\n[log]\nlevel = \"debug\"\n"),
    );
    proxy.signal("HUP");
    let v = proxy.next_line(&|v| {
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("after a restart")
    });
    assert_eq!(v["keys"], "[\"server\"]");
    let v = proxy.next_line(&|v| v["message"] == "configuration reloaded");
    assert_eq!(v["applied"], "[\"log.level\"]");

    // A broken file: logged, nothing changes.
    write_config(&dir, "[server]\nlisten = 5\n");
    proxy.signal("HUP");
    let v = proxy.next_line(&|v| {
        v["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("reload failed")
    });
    assert!(
        v["error"].as_str().unwrap().contains("server.listen"),
        "{v}"
    );
    let r = support::client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 404, "the denylist stays in force");
    let mut proxy = proxy;
    assert!(proxy.terminate().success());
}

/// A denylist that cannot be read stops the start: an admin who configured one wants it in
/// force, not a proxy serving what it should refuse.
#[test]
fn unreadable_denylist_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.deny"), "bafy-not-a-cid\n").unwrap();
    let path = write_config(
        &dir,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n[homeserver]\nurl = \"http://127.0.0.1:9\"\n[[gateways]]\nurl = \"http://127.0.0.1:9\"\n[denylist]\npaths = [\"broken.deny\", \"missing.deny\"]\n",
            free_port()
        ),
    );
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.deny: line 1"), "{stderr}");
}
