//! For the stub stores of the upload and pin tests (Kubo's RPC, Cluster's REST API) and the
//! write requests sent to the proxy.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::homeserver::HomeserverStub;
use super::{client, json, Proxy, ProxyBuilder, StubBody};

/// A store's answer: `body` with `status`.
pub fn text(status: StatusCode, body: &str) -> Response<StubBody> {
    let mut r = Response::new(
        http_body_util::Full::new(Bytes::from(body.to_owned()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

/// The `arg` of a Kubo RPC query ("" without one).
pub fn arg(query: &str) -> String {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("arg="))
        .unwrap_or("")
        .to_owned()
}

/// The first part of a store call's `multipart/form-data` body: the file, as both stores'
/// `add` and `dag/import` take it.
pub async fn first_part(req: Request<Incoming>) -> multer::Result<Option<multer::Field<'static>>> {
    let boundary = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .expect("a multipart store call");
    let stream = http_body_util::BodyDataStream::new(req.into_body());
    multer::Multipart::new(stream, boundary).next_field().await
}

/// A store that keeps nothing: reads the file of a store call to its end and puts its length
/// in `seen.0`; the CID to answer, `seen.1`, is the test's to set.
pub async fn count_file(req: Request<Incoming>, seen: &Mutex<(u64, String)>) -> String {
    let mut field = first_part(req).await.unwrap().unwrap();
    let mut len = 0;
    while let Some(chunk) = field.chunk().await.unwrap() {
        len += chunk.len() as u64;
    }
    let mut seen = seen.lock().unwrap();
    seen.0 = len;
    seen.1.clone()
}

/// The proxy with uploads on, and the stubs behind it: the homeserver, the gateway `G`, the
/// store `S`.
pub struct Setup<G, S> {
    pub hs: HomeserverStub,
    pub gw: G,
    pub store: S,
    pub proxy: Proxy,
}

impl<G, S> Setup<G, S> {
    /// Starts the proxy `builder` describes (in front of `hs`, `gw` and `store`).
    pub async fn start(hs: HomeserverStub, gw: G, store: S, builder: ProxyBuilder) -> Self {
        let proxy = builder.start().await;
        Setup {
            hs,
            gw,
            store,
            proxy,
        }
    }
}

/// POSTs `body` to the proxy's `path` as `content_type`, with `token` when there is one: the
/// status and the JSON answer.
pub async fn post_as(
    proxy: &Proxy,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let mut request = client()
        .post(proxy.url(path))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.unwrap();
    let status = r.status();
    (status, json(&r.bytes().await.unwrap()))
}

/// For the memory tests: the proxy with uploads on (`upload_lines` added to `[upload]`) in
/// front of the Kubo stub `store`, and a client patient enough for a debug build to hash a
/// large body.
pub async fn proxy_before<F, Fut>(store: F, upload_lines: &str) -> (Proxy, reqwest::Client)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<StubBody>> + Send + 'static,
{
    let (store, _task) = super::serve(store).await;
    let hs = HomeserverStub::new();
    let proxy = ProxyBuilder::new(hs.start().await)
        .toml(&format!(
            "[upload]\nenabled = true\n{upload_lines}\n\
             [upload.store]\nkind = \"kubo\"\nurl = \"http://{store}\"\n"
        ))
        .start()
        .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(240))
        .build()
        .unwrap();
    (proxy, client)
}
