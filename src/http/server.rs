//! The accept loop and each connection: the connection cap (with a few connections
//! over it answered 503 before they are closed), the TLS handshake, and HTTP/1.1 with a
//! graceful shutdown that lets requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::{Cap, Gateway, Listener, Peer};
use crate::metrics::Metrics;
use crate::tls::{self, Tls};

/// Connections over `server.max_connections` that are answered 503 at once; beyond them
/// a connection is closed unanswered.
const OVER_CAPACITY_CONNECTIONS: usize = 64;

/// How one listener serves its connections.
pub struct Serving {
    pub listener: Listener,
    pub gateway: Arc<Gateway>,
    pub metrics: Arc<Metrics>,
    pub header_read_timeout: Duration,
    /// The connection cap, on the webhook listener.
    pub max_connections: Option<usize>,
    pub tls: Option<Arc<Tls>>,
}

/// Accepts connections until `stop` turns true; returns a future that resolves when the
/// connections still open have finished their requests.
pub async fn serve(
    socket: TcpListener,
    serving: Serving,
    mut stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(serving.header_read_timeout)
        .keep_alive(true);
    let mut over_capacity_builder = builder.clone();
    over_capacity_builder.keep_alive(false);
    let open = serving
        .max_connections
        .map(|cap| Arc::new(Semaphore::new(cap)));
    let over_capacity = Arc::new(Semaphore::new(OVER_CAPACITY_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = socket.accept() => {
                let (stream, _) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (listener, builder, permit) = match &open {
                    None => (serving.listener, &builder, None),
                    Some(open) => match open.clone().try_acquire_owned() {
                        Ok(permit) => (serving.listener, &builder, Some(permit)),
                        Err(_) => {
                            Cap::Connections.count(&serving.metrics);
                            match over_capacity.clone().try_acquire_owned() {
                                Ok(permit) => {
                                    (Listener::OverCapacity, &over_capacity_builder, Some(permit))
                                }
                                // Flooded even past the answered overflow: close at once.
                                Err(_) => continue,
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
                    watcher: graceful.watcher(),
                    permit,
                };
                tokio::spawn(connection.run(stream));
            }
            _ = stop.changed() => break,
        }
    }
    drop(socket);
    graceful.shutdown()
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
    async fn run(self, stream: TcpStream) {
        // Connections under the cap; the ones answered 503 over it are not "open".
        let counted = self.permit.is_some() && self.listener != Listener::OverCapacity;
        if counted {
            self.metrics.connections.inc();
        }
        let metrics = self.metrics.clone();
        self.serve(stream).await;
        if counted {
            metrics.connections.dec();
        }
    }

    async fn serve(self, stream: TcpStream) {
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
        let peer = stream.peer_addr().ok().map(|addr| Peer(addr.ip()));
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
