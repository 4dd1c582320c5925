//! Listening: HTTP/1.1 and h2c on every configured address, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceBuilder;

use crate::app::App;
use crate::config::Config;
use crate::error::MatrixError;
use crate::forwarding::Peer;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the gateway client: {0}")]
    Gateways(#[from] reqwest::Error),
    #[error("cannot read the denylist: {0}")]
    Denylist(#[from] crate::denylist::LoadError),
}

pub struct Server {
    app: Arc<App>,
    listeners: Vec<TcpListener>,
    admin: Option<TcpListener>,
    shutdown_grace: Duration,
    header_read_timeout: Duration,
}

impl Server {
    pub async fn bind(config: &Config) -> Result<Self, StartError> {
        let app = Arc::new(App::new(config)?);
        let mut listeners = Vec::new();
        for addr in config.server.listen.addrs() {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?;
            listeners.push(listener);
        }
        let admin = match config.admin.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Listen { addr, source })?,
            ),
            None => None,
        };
        Ok(Self {
            app,
            listeners,
            admin,
            shutdown_grace: config.server.shutdown_grace,
            header_read_timeout: config.server.header_read_timeout,
        })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn app(&self) -> Arc<App> {
        Arc::clone(&self.app)
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives in-flight requests
    /// `server.shutdown_grace` to finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel(64);

        // One accept loop per address, all feeding connections to the loop below.
        for listener in self.listeners {
            let conn_tx = conn_tx.clone();
            let mut stop_rx = stop_rx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop_rx.changed() => break,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, peer)) => {
                                let _ = stream.set_nodelay(true);
                                if conn_tx.send((stream, peer)).await.is_err() {
                                    break;
                                }
                            }
                            // Out of file descriptors and the like: back off, keep serving.
                            Err(error) => {
                                tracing::warn!(%error, "accept failed");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        },
                    }
                }
            });
        }
        drop(conn_tx);
        if let Some(admin) = self.admin {
            tokio::spawn(serve_admin(admin, Arc::clone(&self.app), stop_rx.clone()));
        }

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                next = conn_rx.recv() => {
                    let Some((stream, peer)) = next else { break };
                    let app = Arc::clone(&self.app);
                    let client = Peer::new(peer);
                    let service = TowerToHyperService::new(
                        ServiceBuilder::new().service_fn(move |request: http::Request<Incoming>| {
                            let app = Arc::clone(&app);
                            let peer = client.clone();
                            let request = request.map(box_incoming);
                            // A bug in a handler is one 500 for one request, never a dead
                            // process. (tower-http's CatchPanic future trips a rustc
                            // higher-ranked `Send` inference error under hyper-util's auto
                            // connection, so the unwind is caught here instead.)
                            async move {
                                let handled = AssertUnwindSafe(app.handle(request, peer));
                                let response = match handled.catch_unwind().await {
                                    Ok(response) => response,
                                    Err(panic) => panic_response(panic),
                                };
                                Ok::<_, Infallible>(response)
                            }
                        }),
                    );
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%peer, error = %error, "connection ended with an error");
                        }
                    });
                }
            }
        }
        let _ = stop_tx.send(true);
        tracing::info!("shutting down: draining in-flight requests");
        if tokio::time::timeout(self.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?self.shutdown_grace,
                "requests still in flight after the grace period; closing them"
            );
        }
    }
}

/// The admin listener: small, HTTP/1.1, closed with the main listeners.
async fn serve_admin(listener: TcpListener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let app = Arc::clone(&app);
                async move { Ok::<_, Infallible>(crate::admin::handle(app, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn box_incoming(body: Incoming) -> crate::body::Body {
    body.map_err(|e| Box::new(e) as crate::body::BoxError)
        .boxed()
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<crate::body::Body> {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = text, "request handler panicked");
    MatrixError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "M_UNKNOWN",
        "internal error",
    )
    .into_response()
}
