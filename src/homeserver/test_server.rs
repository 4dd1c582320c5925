//! The keep-alive HTTP/1.1 server the client tests talk to (on 127.0.0.1).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response};

use crate::body::Body;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type TestBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// Counts the connections it accepts: `/close` answers with `Connection: close`, `/big`
/// streams 4 MiB, anything else echoes the request target.
pub async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    Ok::<Response<TestBody>, std::convert::Infallible>(answer(&req))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

fn answer(req: &Request<Incoming>) -> Response<TestBody> {
    let mut response = match req.uri().path() {
        "/big" => {
            let chunks = (0..64).map(|_| {
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![7u8; 64 * 1024])))
            });
            Response::new(StreamBody::new(futures_util::stream::iter(chunks)).boxed())
        }
        _ => Response::new(Full::new(Bytes::from(req.uri().to_string())).boxed()),
    };
    if req.uri().path() == "/close" {
        response
            .headers_mut()
            .insert(header::CONNECTION, "close".parse().unwrap());
    }
    response
}

/// A request to the server above, with a `Host` as clients send it.
pub fn request(method: http::Method, path: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "hs.example")
        .body(crate::body::empty())
        .unwrap()
}

pub fn get(path: &str) -> Request<Body> {
    request(http::Method::GET, path)
}

/// The whole body of an answer.
pub async fn text<B>(response: Response<B>) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    response.into_body().collect().await.unwrap().to_bytes()
}

/// Answers one request per connection with `200 ok` (no `Connection: close`) and closes it:
/// a keep-alive connection the server ends while the client holds it idle. Counts connections.
pub async fn closing_server() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
    });
    (addr, accepted)
}
