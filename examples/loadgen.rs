//! A load generator for the benchmarks: signed notifications over keep-alive HTTP/1.1
//! connections, closed-loop (as fast as answers come: the maximum rate) or open-loop at a
//! fixed rate (latency measured from each request's scheduled start, so a slow answer
//! cannot hide the requests queued behind it).
//!
//! cargo run --release --example loadgen -- URL SECRET CONNECTIONS SECONDS RATE FILE...
//! RATE 0 means closed-loop. Prints one line of `key=value` figures.

#![allow(clippy::print_stdout)] // printing the figures is what this tool is for

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 6,
        "usage: loadgen URL SECRET CONNECTIONS SECONDS RATE FILE..."
    );
    let url: hyper::Uri = args[0].parse()?;
    let connections: usize = args[2].parse()?;
    let duration = Duration::from_secs_f64(args[3].parse()?);
    let rate: f64 = args[4].parse()?;
    let bodies: Vec<(Bytes, String)> = args[5..]
        .iter()
        .map(|file| {
            let body = std::fs::read(file)?;
            let signature = waba_gateway::signature::sign(args[1].as_bytes(), &body);
            Ok((Bytes::from(body), signature))
        })
        .collect::<anyhow::Result<_>>()?;
    let address = format!(
        "{}:{}",
        url.host().unwrap_or("127.0.0.1"),
        url.port_u16().unwrap_or(80)
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let (address, url, bodies) = (address.clone(), url.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&address).await?;
            stream.set_nodelay(true)?;
            let (mut sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(driver);
            let interval = (rate > 0.0).then(|| Duration::from_secs_f64(connections as f64 / rate));
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut n = connection;
            while started.elapsed() < duration {
                let scheduled = match interval {
                    Some(interval) => {
                        let at = started
                            + interval.mul_f64((latencies.len() as u64 + failures) as f64)
                            + interval.mul_f64(connection as f64 / connections as f64);
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now(),
                };
                let (body, signature) = &bodies[n % bodies.len()];
                n += connections;
                let request = hyper::Request::post(url.clone())
                    .header("host", "gateway")
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", signature)
                    .body(Full::new(body.clone()))?;
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let ok = response.status() == 200;
                response.into_body().collect().await?;
                if ok {
                    latencies.push(scheduled.elapsed().as_micros() as u64);
                } else {
                    failures += 1;
                }
            }
            Ok::<_, anyhow::Error>((latencies, failures))
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (mut some, failed) = task.await??;
        latencies.append(&mut some);
        failures += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let quantile = |q: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |micros| *micros as f64 / 1000.0)
    };
    println!(
        "requests={} non2xx={} rps={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2}",
        latencies.len() as u64 + failures,
        failures,
        latencies.len() as f64 / elapsed,
        quantile(0.50),
        quantile(0.99),
        quantile(0.999),
    );
    Ok(())
}
