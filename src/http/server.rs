//! The accept loop and each connection: the source allowlist at accept, the connection cap
//! (with a few connections over it answered 503 before they are closed), the TLS
//! handshake, and HTTP/1.1 with a small request head and a graceful shutdown that lets
//! requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::{Cap, Gateway, Listener, Peer};
use crate::metrics::Metrics;
use crate::telemetry::Throttle;
use crate::tls::{self, Tls};

/// Connections over `server.max_connections` that are answered 503 at once; beyond them
/// a connection is closed unanswered.
const OVER_CAPACITY_CONNECTIONS: usize = 64;

/// The largest request head (request line and headers) read, and so the most a connection
/// buffers before its request is routed; a larger head gets 431. Meta's are under 2 KiB.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How one listener serves its connections.
pub struct Serving {
    pub listener: Listener,
    pub gateway: Arc<Gateway>,
    pub metrics: Arc<Metrics>,
    pub header_read_timeout: Duration,
    /// The connection cap, on the webhook listener.
    pub max_connections: Option<usize>,
    pub tls: Option<Arc<Tls>>,
    /// Once the listener has closed, how long connections accepted last may take to
    /// send their first request before idle ones are closed.
    pub close_grace: Duration,
}

/// Accepts connections until `stop` turns true; returns a future that resolves when the
/// connections still open have finished their requests.
pub async fn serve(
    socket: TcpListener,
    serving: Serving,
    mut stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(serving.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let mut over_capacity_builder = builder.clone();
    over_capacity_builder.keep_alive(false);
    let mut accepting = Accepting {
        over_capacity_builder,
        builder,
        open: serving
            .max_connections
            .map(|cap| Arc::new(Semaphore::new(cap))),
        over_capacity: Arc::new(Semaphore::new(OVER_CAPACITY_CONNECTIONS)),
        graceful: GracefulShutdown::new(),
        failures: Throttle::new(Duration::from_secs(10)),
        serving,
    };
    loop {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((stream, peer)) => accepting.admit(stream, peer),
                Err(error) => {
                    // Out of file descriptors (a flood of connections) and the like: back
                    // off instead of spinning, and say so once per interval.
                    if let Some(held_back) = accepting.failures.admit() {
                        tracing::warn!(%error, held_back, "accepting a connection failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    // Connections the kernel has completed but not yet handed over would be reset when the
    // socket closes, with a request perhaps already written: take them first.
    if let Ok(socket) = socket.into_std() {
        while let Ok((stream, peer)) = socket.accept() {
            let stream = stream
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(stream));
            if let Ok(stream) = stream {
                accepting.admit(stream, peer);
            }
        }
    }
    let Accepting {
        graceful, serving, ..
    } = accepting;
    async move {
        // A connection accepted last may not have sent its request yet: graceful shutdown
        // would close it as idle.
        tokio::time::sleep(serving.close_grace).await;
        graceful.shutdown().await;
    }
}

/// The accept loop's state.
struct Accepting {
    serving: Serving,
    builder: hyper::server::conn::http1::Builder,
    over_capacity_builder: hyper::server::conn::http1::Builder,
    /// One permit per open connection, under `max_connections`.
    open: Option<Arc<Semaphore>>,
    /// One permit per connection answered 503 over the cap.
    over_capacity: Arc<Semaphore>,
    graceful: GracefulShutdown,
    /// Rate limit of the log line for failed accepts.
    failures: Throttle,
}

impl Accepting {
    /// Serves a connection just accepted on its own task, or closes it: from a source
    /// the allowlist refuses (before anything is read, taking no place under the cap), or
    /// when even the answered overflow is full.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let serving = &self.serving;
        if serving.listener == Listener::Public
            && let Some(sources) = serving.gateway.sources()
            && !sources.admits_connection(peer.ip())
        {
            serving.gateway.source_refused(peer.ip());
            return;
        }
        let _ = stream.set_nodelay(true);
        let (listener, builder, permit) = match &self.open {
            None => (serving.listener, &self.builder, None),
            Some(open) => match open.clone().try_acquire_owned() {
                Ok(permit) => (serving.listener, &self.builder, Some(permit)),
                Err(_) => {
                    serving.gateway.note_overload(Cap::Connections);
                    match self.over_capacity.clone().try_acquire_owned() {
                        Ok(permit) => (
                            Listener::OverCapacity,
                            &self.over_capacity_builder,
                            Some(permit),
                        ),
                        // Flooded even past the answered overflow: close at once.
                        Err(_) => return,
                    }
                }
            },
        };
        let connection = Connection {
            listener,
            builder: builder.clone(),
            gateway: serving.gateway.clone(),
            metrics: serving.metrics.clone(),
            tls: serving.tls.clone(),
            handshake_timeout: serving.header_read_timeout,
            watcher: self.graceful.watcher(),
            permit,
        };
        tokio::spawn(connection.run(stream, peer));
    }
}

/// One accepted connection, served on its own task.
struct Connection {
    listener: Listener,
    builder: hyper::server::conn::http1::Builder,
    gateway: Arc<Gateway>,
    metrics: Arc<Metrics>,
    tls: Option<Arc<Tls>>,
    handshake_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
    /// Held while the connection is open, when it counts against a cap.
    permit: Option<OwnedSemaphorePermit>,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr) {
        // Connections under the cap; the ones answered 503 over it are not "open".
        let counted = self.permit.is_some() && self.listener != Listener::OverCapacity;
        if counted {
            self.metrics.connections.inc();
        }
        let metrics = self.metrics.clone();
        self.serve(stream, peer).await;
        if counted {
            metrics.connections.dec();
        }
    }

    async fn serve(self, stream: TcpStream, peer: SocketAddr) {
        let Self {
            listener,
            builder,
            gateway,
            metrics,
            tls,
            handshake_timeout,
            watcher,
            permit: _permit,
        } = self;
        // Only what reads it gets the peer: an extension is two allocations per request.
        let peer = gateway.reads_peer().then_some(Peer(peer.ip()));
        let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let gateway = gateway.clone();
            if let Some(peer) = peer {
                request.extensions_mut().insert(peer);
            }
            async move { Ok::<_, Infallible>(gateway.handle(listener, request).await) }
        });
        let served = match tls {
            None => {
                watcher
                    .watch(builder.serve_connection(TokioIo::new(stream), service))
                    .await
            }
            Some(tls) => {
                let handshake =
                    tokio::time::timeout(handshake_timeout, tls.acceptor().accept(stream));
                let stream = match handshake.await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        let reason = tls::failure_reason(&error);
                        metrics
                            .tls_handshake_failures
                            .with_label_values(&[reason])
                            .inc();
                        tracing::debug!(reason, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        metrics
                            .tls_handshake_failures
                            .with_label_values(&["timeout"])
                            .inc();
                        tracing::debug!(
                            "TLS handshake did not finish within server.header_read_timeout_ms"
                        );
                        return;
                    }
                };
                watcher
                    .watch(builder.serve_connection(TokioIo::new(stream), service))
                    .await
            }
        };
        if let Err(error) = served {
            tracing::debug!(%error, "connection ended with an error");
        }
    }
}
