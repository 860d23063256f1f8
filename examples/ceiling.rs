//! The ceiling of the load benchmark (`benches/load.sh`): a bare hyper 1.x server that
//! reads each request's body and answers 200, on the same tokio runtime and HTTP/1.1
//! settings as the gateway. What it costs per request is what any Rust webhook endpoint
//! costs before doing anything; the gateway's figures are reported as ratios to it.
//!
//! cargo run --release --example ceiling -- 127.0.0.1:18081

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&address).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async {
                    let body = request.into_body().collect().await.map(|b| b.to_bytes());
                    let status = if body.is_ok() { 200 } else { 400 };
                    let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"ok\n")));
                    *response.status_mut() =
                        hyper::StatusCode::from_u16(status).expect("a valid status");
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
