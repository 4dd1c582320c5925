//! Listening: HTTP/1.1 and h2c on every configured address, connections served by worker
//! threads, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::admin::Admin;
use crate::app::App;
use crate::config::Config;
use crate::connection::{Activity, Ceiling, Slot, Watched};
use crate::forwarding::Peer;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    App(#[from] crate::app::BuildError),
}

pub struct Server {
    app: Arc<App>,
    listeners: Vec<TcpListener>,
    admin: Option<TcpListener>,
    shutdown_grace: Duration,
    header_read_timeout: Duration,
    /// hyper's per-connection buffer bound (`server.connection_buffer`).
    connection_buffer: usize,
    workers: usize,
    ceiling: Ceiling,
    timeouts: Timeouts,
}

/// How long a connection may be silent, or idle (see `connection`).
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    first_byte: Duration,
    idle: Duration,
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
            connection_buffer: config.server.connection_buffer.as_u64() as usize,
            workers: config.server.workers,
            // Up to one buffer each way to the client and to the homeserver: about two.
            ceiling: Ceiling::new(
                config.server.max_connections,
                2 * config.server.connection_buffer.as_u64(),
            ),
            timeouts: Timeouts {
                first_byte: config.server.first_byte_timeout,
                idle: config.server.idle_timeout,
            },
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
    ///
    /// Connections are served by `server.workers` threads, each running a current-thread
    /// runtime of its own, and dealt out to them in turn as they are accepted: like nginx's
    /// worker processes, a connection's every request, its homeserver exchange and its
    /// response stay on one thread, with no work stealing or cross-thread wake-ups on the
    /// way (the README's benchmarks compare this with a multi-threaded runtime). They share
    /// one `App` (cache, pools, metrics).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.connection_buffer)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_send_buf_size(self.connection_buffer);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel(64);

        // One accept loop per address, all feeding connections to the loop below.
        tracing::info!(
            max_connections = self.ceiling.max(),
            first_byte_timeout = ?self.timeouts.first_byte,
            idle_timeout = ?self.timeouts.idle,
            "connection limits"
        );
        for listener in self.listeners {
            let conn_tx = conn_tx.clone();
            let mut stop_rx = stop_rx.clone();
            let ceiling = self.ceiling.clone();
            tokio::spawn(async move {
                loop {
                    let (stream, peer) = tokio::select! {
                        _ = stop_rx.changed() => break,
                        accepted = accept(&listener) => accepted,
                    };
                    // Past the ceiling a connection is closed at once: the ones open keep
                    // being served, rather than every one starving for descriptors.
                    let Some(slot) = ceiling.try_enter() else {
                        crate::metrics::METRICS.connections_refused.inc();
                        tracing::debug!(%peer, "connection refused: server.max_connections open");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    if conn_tx.send((stream, peer, slot)).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(conn_tx);
        if let Some(admin) = self.admin {
            tokio::spawn(serve_admin(admin, self.app.admin(), stop_rx.clone()));
        }

        let mut workers = Workers::start(
            self.workers,
            &builder,
            &self.app,
            self.shutdown_grace,
            self.timeouts,
        );
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                next = conn_rx.recv() => {
                    let Some((stream, peer, slot)) = next else { break };
                    workers.hand(stream, peer, slot);
                }
            }
        }
        let _ = stop_tx.send(true);
        // Connections accepted but not handed out yet go to the workers too, which close them
        // at once if no request is under way, rather than keeping them until the end.
        conn_rx.close();
        while let Some((stream, peer, slot)) = conn_rx.recv().await {
            workers.hand(stream, peer, slot);
        }
        tracing::info!("shutting down: draining in-flight requests");
        workers.drain().await;
    }
}

/// A new connection on its way to a worker, out of any runtime's reactor, with its slot.
type Handed = (std::net::TcpStream, SocketAddr, Slot);

/// The connection workers, or, when none could be started, this runtime serving them.
struct Workers {
    /// Each worker's queue of new connections.
    queues: Vec<mpsc::UnboundedSender<Handed>>,
    /// Each worker's word that its requests are done (or the grace period is over).
    drained: Vec<oneshot::Receiver<()>>,
    /// Lets the drained workers end: only once all have drained, since a socket one of them
    /// opened (a pooled gateway connection) may carry another's request until then, and it
    /// lives only as long as its runtime.
    release: watch::Sender<bool>,
    /// Each worker's end.
    ended: Vec<oneshot::Receiver<()>>,
    next: usize,
    /// Serving here instead (no workers).
    here: Option<Local>,
}

struct Local {
    builder: auto::Builder<TokioExecutor>,
    app: Arc<App>,
    graceful: GracefulShutdown,
    grace: Duration,
    timeouts: Timeouts,
}

impl Workers {
    /// `count` workers (0: one per CPU).
    fn start(
        count: usize,
        builder: &auto::Builder<TokioExecutor>,
        app: &Arc<App>,
        grace: Duration,
        timeouts: Timeouts,
    ) -> Self {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        if count > crate::worker::MAX {
            tracing::warn!(
                workers = count,
                max = crate::worker::MAX,
                "more connection workers than supported; starting the maximum"
            );
        }
        let (release, released) = watch::channel(false);
        let mut workers = Workers {
            queues: Vec::new(),
            drained: Vec::new(),
            release,
            ended: Vec::new(),
            next: 0,
            here: None,
        };
        for index in 1..=count.min(crate::worker::MAX) {
            let worker = Worker {
                index,
                builder: builder.clone(),
                app: Arc::clone(app),
                grace,
                timeouts,
                released: released.clone(),
            };
            match worker.spawn() {
                Ok(Spawned {
                    queue,
                    drained,
                    ended,
                }) => {
                    workers.queues.push(queue);
                    workers.drained.push(drained);
                    workers.ended.push(ended);
                }
                Err(error) => {
                    tracing::error!(%error, index, "cannot start a connection worker");
                }
            }
        }
        if workers.queues.is_empty() {
            tracing::warn!("no connection worker could start: serving on the main runtime");
            workers.here = Some(Local {
                builder: builder.clone(),
                app: Arc::clone(app),
                graceful: GracefulShutdown::new(),
                grace,
                timeouts,
            });
        }
        workers
    }

    /// Gives a new connection to the next worker in turn.
    fn hand(&mut self, stream: TcpStream, peer: SocketAddr, slot: Slot) {
        if let Some(local) = &self.here {
            let connection = Connection { stream, peer, slot };
            serve_connection(
                &local.builder,
                &local.graceful,
                &local.app,
                connection,
                local.timeouts,
            );
            return;
        }
        // Out of this runtime's reactor, into the worker's (it registers it again).
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot hand a connection to a worker");
                return;
            }
        };
        let mut connection = Some((stream, peer, slot));
        for _ in 0..self.queues.len() {
            let index = self.next % self.queues.len();
            self.next = self.next.wrapping_add(1);
            match self.queues[index].send(connection.take().expect("set until sent")) {
                Ok(()) => return,
                // That worker is gone (it cannot be, short of a bug): try the next one.
                Err(mpsc::error::SendError(back)) => connection = Some(back),
            }
        }
        tracing::error!("every connection worker has ended; connection dropped");
    }

    /// Stops handing out connections and waits for every worker to drain (each gives its
    /// requests the grace period).
    async fn drain(self) {
        drop(self.queues);
        for drained in self.drained {
            let _ = drained.await;
        }
        let _ = self.release.send(true);
        for ended in self.ended {
            let _ = ended.await;
        }
        if let Some(local) = self.here {
            drain(local.graceful, local.grace).await;
        }
    }
}

/// One connection worker, before it starts.
struct Worker {
    index: usize,
    builder: auto::Builder<TokioExecutor>,
    app: Arc<App>,
    grace: Duration,
    timeouts: Timeouts,
    released: watch::Receiver<bool>,
}

/// A started worker's ends: its queue of new connections, its word that it has drained, and
/// its end.
struct Spawned {
    queue: mpsc::UnboundedSender<Handed>,
    drained: oneshot::Receiver<()>,
    ended: oneshot::Receiver<()>,
}

impl Worker {
    /// A thread with a current-thread runtime serving the connections it is handed, until
    /// its queue closes; then it drains them, says so, and waits to be released.
    fn spawn(self) -> std::io::Result<Spawned> {
        let (queue, connections) = mpsc::unbounded_channel::<Handed>();
        let (drained_tx, drained) = oneshot::channel();
        let (ended_tx, ended) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("worker-{}", self.index))
            .spawn(move || {
                crate::worker::enter(self.index);
                // Built here, not by the caller: a runtime must not be dropped in an async
                // context, which is where a thread that failed to start would drop it.
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    // Its queue closes with it: connections go to the other workers.
                    Err(error) => {
                        tracing::error!(%error, index = self.index, "connection worker cannot start");
                        return;
                    }
                };
                runtime.block_on(self.run(connections, drained_tx));
                // Dropping the runtime closes whatever the grace period did not finish.
                drop(runtime);
                let _ = ended_tx.send(());
            })?;
        Ok(Spawned {
            queue,
            drained,
            ended,
        })
    }

    async fn run(
        self,
        mut connections: mpsc::UnboundedReceiver<Handed>,
        drained: oneshot::Sender<()>,
    ) {
        let graceful = GracefulShutdown::new();
        let accepted = crate::metrics::METRICS
            .connections
            .get_or_create(&crate::metrics::WorkerLabel {
                worker: self.index.to_string(),
            })
            .clone();
        while let Some((stream, peer, slot)) = connections.recv().await {
            accepted.inc();
            match TcpStream::from_std(stream) {
                Ok(stream) => {
                    let connection = Connection { stream, peer, slot };
                    serve_connection(
                        &self.builder,
                        &graceful,
                        &self.app,
                        connection,
                        self.timeouts,
                    )
                }
                Err(error) => tracing::warn!(%error, "cannot serve a connection"),
            }
        }
        drain(graceful, self.grace).await;
        let _ = drained.send(());
        // Released once every worker has drained, or when the server is gone.
        let mut released = self.released;
        let _ = released.wait_for(|released| *released).await;
    }
}

/// An accepted connection and the slot it holds under the ceiling.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
}

/// Serves one client connection on this runtime, as a task of its own, until it ends, goes
/// silent or idle past its timeouts, or the server stops.
fn serve_connection(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    app: &Arc<App>,
    connection: Connection,
    timeouts: Timeouts,
) {
    let Connection { stream, peer, slot } = connection;
    let service = TowerToHyperService::new(crate::layers::stack(Arc::clone(app), Peer::new(peer)));
    let activity = Activity::new();
    let io = TokioIo::new(Watched::new(stream, Arc::clone(&activity)));
    let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
    tokio::spawn(async move {
        tokio::select! {
            ended = connection => if let Err(error) = ended {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            },
            // Dropping the connection closes the socket (and cancels what it was serving).
            expired = activity.expired(timeouts.first_byte, timeouts.idle) => {
                crate::metrics::METRICS
                    .connection_timeouts
                    .get_or_create(&crate::metrics::Outcome { outcome: expired.as_str() })
                    .inc();
                tracing::debug!(%peer, reason = expired.as_str(), "connection closed by its timeout");
            }
        }
        drop(slot);
    });
}

/// The next connection. A failed accept (out of file descriptors and the like) is logged
/// and retried after a pause, so the loop neither spins nor stops serving.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Lets in-flight requests finish, for at most `grace`.
async fn drain(graceful: GracefulShutdown, grace: Duration) {
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "requests still in flight after the grace period; closing them"
        );
    }
}

/// The admin listener: small, HTTP/1.1, closed with the main listeners.
async fn serve_admin(listener: TcpListener, admin: Admin, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.changed() => break,
            accepted = accept(&listener) => accepted,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(crate::admin::handle(admin, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
