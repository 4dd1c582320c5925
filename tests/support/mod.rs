//! Stub servers on 127.0.0.1 ephemeral ports, and the real proxy started in-process in front
//! of them. Each stub records what it received so tests can assert on the exact bytes.
#![allow(dead_code)]

pub mod gateway;
pub mod homeserver;
pub mod store;
pub mod trustless;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use ipfs_media_proxy::app::App;
use ipfs_media_proxy::{Config, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub type StubBody = BoxBody<Bytes, std::io::Error>;

/// Serves `handler` on 127.0.0.1:0 until the returned guard is dropped.
pub async fn serve<F, Fut>(handler: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<StubBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// Serves `answer(stub, request)` on 127.0.0.1:0 for as long as the test runs: for stubs
/// that keep their state in a cloneable handle.
pub async fn serve_stub<T, F, Fut>(stub: &T, answer: F) -> SocketAddr
where
    T: Clone + Send + Sync + 'static,
    F: Fn(T, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<StubBody>> + Send + 'static,
{
    let stub = stub.clone();
    serve(move |req| answer(stub.clone(), req)).await.0
}

/// The proxy, running in this process.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops accepting and waits for the drain (bounded).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub struct ProxyBuilder {
    homeserver: SocketAddr,
    gateways: Vec<SocketAddr>,
    gateway_lines: String,
    server_lines: String,
    sections: String,
}

impl ProxyBuilder {
    pub fn new(homeserver: SocketAddr) -> Self {
        Self {
            homeserver,
            gateways: Vec::new(),
            gateway_lines: String::new(),
            server_lines: String::new(),
            sections: String::new(),
        }
    }

    pub fn gateway(mut self, addr: SocketAddr) -> Self {
        self.gateways.push(addr);
        self
    }

    /// A line added to `[server]`.
    pub fn server_line(mut self, line: &str) -> Self {
        self.server_lines.push_str(line);
        self.server_lines.push('\n');
        self
    }

    /// A line added to every `[[gateways]]` entry.
    pub fn gateway_line(mut self, line: &str) -> Self {
        self.gateway_lines.push_str(line);
        self.gateway_lines.push('\n');
        self
    }

    /// TOML appended after the required sections (`[cache]`, `[media]`, ...).
    pub fn toml(mut self, text: &str) -> Self {
        self.sections.push_str(text);
        self.sections.push('\n');
        self
    }

    pub fn config(&self) -> Config {
        // Two connection workers unless a test says otherwise, whatever the machine: with the
        // default of one per CPU a many-core CI machine starts a dozen threads per proxy, and
        // the descriptor and memory baselines would depend on how many of them the warm-up
        // happened to reach.
        let workers = if self.server_lines.contains("workers") {
            ""
        } else {
            "workers = 2\n"
        };
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\n{workers}{}[homeserver]\nurl = \"http://{}\"\n",
            self.server_lines, self.homeserver
        );
        let gateways = if self.gateways.is_empty() {
            // A port nothing listens on: tests that never reach a gateway.
            vec!["127.0.0.1:9".parse().unwrap()]
        } else {
            self.gateways.clone()
        };
        for g in gateways {
            text.push_str(&format!(
                "[[gateways]]\nurl = \"http://{g}\"\n{}",
                self.gateway_lines
            ));
        }
        text.push_str(&self.sections);
        Config::from_toml(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
    }

    pub async fn start(self) -> Proxy {
        let server = Server::bind(&self.config()).await.unwrap();
        let addr = server.local_addrs()[0];
        let admin = server.admin_addr();
        let app = server.app();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            admin,
            app,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// The usual arrangement: the proxy, with `extra` TOML, in front of a new stub homeserver and
/// the gateway stub `gw`.
pub async fn proxy_with(
    gw: &gateway::GatewayStub,
    extra: &str,
) -> (homeserver::HomeserverStub, Proxy) {
    let hs = homeserver::HomeserverStub::new();
    let proxy = ProxyBuilder::new(hs.start().await)
        .gateway(gw.start().await)
        .toml(extra)
        .start()
        .await;
    (hs, proxy)
}

/// A request that passes through to the homeserver stub and must succeed: the proxy still
/// serves. Returns the response, its body unread.
pub async fn control(proxy: &Proxy) -> reqwest::Response {
    let r = client()
        .get(proxy.url("/_matrix/client/versions"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r
}

/// `POST {path}` with `count` copies of `block` as a streamed body.
pub async fn post_blocks(
    proxy: &Proxy,
    path: &str,
    block: Bytes,
    count: usize,
) -> reqwest::Response {
    let blocks = std::iter::repeat_n(block, count).map(Ok::<_, std::io::Error>);
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(blocks));
    client()
        .post(proxy.url(path))
        .body(body)
        .send()
        .await
        .unwrap()
}

/// This process's resident memory (Linux).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Fails unless RSS grew by less than `limit` since `before` while doing `what`.
pub fn assert_rss_growth_below(before: u64, limit: u64, what: &str) {
    let growth = rss_bytes().saturating_sub(before);
    assert!(
        growth < limit,
        "RSS grew by {} MiB while {what}",
        growth >> 20
    );
}

/// Open descriptors of this process (Linux).
pub fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Descriptors and RSS are counted for the whole process: a test that measures them holds
/// this for its whole run, so no other test of its binary opens sockets or allocates under
/// its figures. (Taken outside `bounded`: the wait is bounded by the holders' own bounds.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// What the process held once the proxy and its stubs were up and warm (one request served,
/// so lazily made pools, connections and threads are counted): hostile traffic afterwards
/// must leave descriptors and memory back near it. The proxy runs in this process, so the
/// figures are the proxy's (and the stubs').
pub struct Baseline {
    fds: usize,
    rss: u64,
}

impl Baseline {
    pub fn take() -> Self {
        Self {
            fds: descriptors(),
            rss: rss_bytes(),
        }
    }

    /// Waits (at most `seconds`) until at most `fd_slack` descriptors and `rss_slack` bytes
    /// of RSS more than at the baseline are held; fails naming both figures.
    pub async fn assert_back(&self, what: &str, fd_slack: usize, rss_slack: u64, seconds: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let (fds, rss) = (descriptors(), rss_bytes());
            if fds <= self.fds + fd_slack && rss <= self.rss + rss_slack {
                eprintln!(
                    "{what}: {fds} descriptors (baseline {}), RSS {} KiB (baseline {} KiB)",
                    self.fds,
                    rss >> 10,
                    self.rss >> 10
                );
                return;
            }
            if std::time::Instant::now() >= deadline {
                eprintln!("{what}: this process's TCP sockets:\n{}", socket_table());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not back near the baseline within {seconds} s: {fds} descriptors open \
                 (baseline {}, {fd_slack} more allowed), RSS {} KiB (baseline {} KiB, {} KiB \
                 more allowed)",
                self.fds,
                rss >> 10,
                self.rss >> 10,
                rss_slack >> 10
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Rounds of a scenario run before its [`Baseline`] is taken. The first rounds make pools,
/// threads and allocator pages that later rounds reuse: after one round, CI once saw 8 MiB
/// of such one-off growth during the next twenty. A leak grows with every round, so it still
/// shows after these.
pub const WARM_ROUNDS: usize = 3;

/// The baseline once the proxy is warm: `round` (one round of the scenario) has run
/// [`WARM_ROUNDS`] times, so what is made on first use and at that concurrency is counted,
/// and a control passed through.
pub async fn warm<F, Fut>(proxy: &Proxy, mut round: F) -> Baseline
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..WARM_ROUNDS {
        round().await;
    }
    control(proxy).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    Baseline::take()
}

/// `count` copies of `make(i)`, run concurrently; their outputs in order.
pub async fn concurrently<F, Fut>(count: usize, make: F) -> Vec<Fut::Output>
where
    F: Fn(usize) -> Fut,
    Fut: Future,
{
    futures_util::future::join_all((0..count).map(make)).await
}

/// The bytes running fetches hold now (the process-wide `cache.max_fetch_bytes` gauge).
pub fn fetch_held_bytes() -> u64 {
    let text = ipfs_media_proxy::metrics::render();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("ipfs_media_proxy_fetch_held_bytes ")?
                .parse()
                .ok()
        })
        .expect("the gauge is exported")
}

/// Waits until `done` holds, polling; fails after `seconds`.
pub async fn until(what: &str, seconds: u64, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {seconds} s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A plain HTTP/1.1 client that never follows redirects and never decompresses.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so large bodies need no fixtures.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs a test body with an upper bound, so no test can hang CI.
pub async fn bounded<F: Future>(seconds: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(seconds), f)
        .await
        .expect("test exceeded its time bound")
}

pub fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// This process's TCP sockets, one a line as `local port -> remote port st<state>` (the
/// kernel's hex state: 01 established, 0A listening), to say what a descriptor count is made of.
pub fn socket_table() -> String {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let mut out = String::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            if inodes.contains(f[9]) {
                let port =
                    |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
                out.push_str(&format!("{} -> {} st{}\n", port(f[1]), port(f[2]), f[3]));
            }
        }
    }
    out
}

/// `GET {path}` of the proxy, without credentials.
pub async fn get(proxy: &Proxy, path: &str) -> reqwest::Response {
    get_with(proxy, path, None).await
}

/// `GET {path}` of the proxy with `token` as its bearer token.
pub async fn get_as(proxy: &Proxy, path: &str, token: &str) -> reqwest::Response {
    get_with(proxy, path, Some(token)).await
}

/// `GET {path}` of the proxy, with `token` as its bearer token if there is one.
pub async fn get_with(proxy: &Proxy, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = client().get(proxy.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// The `errcode` of a Matrix error answer (its whole body read as JSON).
pub async fn errcode(response: reqwest::Response) -> serde_json::Value {
    json(&response.bytes().await.unwrap())["errcode"].clone()
}

/// A port on 127.0.0.1 that refuses connections: bound, then dropped.
pub fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A new homeserver stub, started, and a builder for a proxy in front of it.
pub async fn builder() -> (homeserver::HomeserverStub, ProxyBuilder) {
    let hs = homeserver::HomeserverStub::new();
    let builder = ProxyBuilder::new(hs.start().await);
    (hs, builder)
}

/// [`proxy_with`] a new gateway stub serving `bytes`: the stubs, the proxy and the bytes' CID.
pub async fn proxy_serving(
    bytes: &'static [u8],
    extra: &str,
) -> (
    homeserver::HomeserverStub,
    gateway::GatewayStub,
    Proxy,
    String,
) {
    let gw = gateway::GatewayStub::new();
    let cid = gw.add(bytes);
    let (hs, proxy) = proxy_with(&gw, extra).await;
    (hs, gw, proxy, cid)
}

/// The proxy as configured by default, with no gateway, in front of a new homeserver stub.
pub async fn plain_proxy() -> (homeserver::HomeserverStub, Proxy) {
    let (hs, builder) = builder().await;
    (hs, builder.start().await)
}

/// [`bounded`], holding [`serial`] for the whole test (taken first, outside the bound): for
/// the tests of a binary that measures descriptors or RSS.
pub async fn serially<F: Future>(seconds: u64, f: F) -> F::Output {
    let _serial = serial().await;
    bounded(seconds, f).await
}
