//! The floor of the load benchmark (`benches/before-after.sh` with `FLOOR=1`): the least
//! a receiver can do per notification and still keep the gateway's promise, on the
//! gateway's own dependencies, and nothing else. Each POST's body is read, its
//! `X-Hub-Signature-256` checked (the gateway's prepared keys), its JSON scanned once
//! (serde, nothing kept), and then, by MODE:
//!
//! - `spool`: the body is appended to one file (zeroed beforehand, so that `fdatasync`
//!   flushes data alone) by a writer thread that syncs what it has gathered once per
//!   batch and answers those requests; then each body is produced to Kafka as one record
//!   (gzip level 1, idempotent, acks=all, linger 20 ms and 1 MiB batches: the forwarder's
//!   defaults), with nothing waiting for it;
//! - `kafka`: the body is produced as one record (linger 1 ms and 1,000,000-byte batches,
//!   the settings requests wait on in the gateway) and the request answered once Kafka
//!   has it.
//!
//! Records are keyed by a counter, so that they spread over the topic's partitions as the
//! gateway's conversation keys do. What the floor leaves out: the envelope, the split into
//! one record per change, headers, event ids, metrics, recovery, retries, back-pressure,
//! limits. What it costs per request against the ceiling (`examples/ceiling.rs`) is what
//! any receiver with a durable spool and librdkafka costs on this machine; what the
//! gateway costs above it is what its product work and its glue cost.
//!
//! cargo run --release --example floor -- ADDRESS BROKERS MODE SECRET SPOOL_FILE

use std::convert::Infallible;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, FutureProducer, FutureRecord, Producer, ThreadedProducer,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use waba_gateway::signature::{self, Keys};

const TOPIC: &str = "floor";
/// The spool file is zeroed to this length before the first request.
const SPOOL_BYTES: u64 = 512 << 20;

/// A body for the writer thread, and who to tell once it is synced.
type Append = (Bytes, oneshot::Sender<()>);

/// What each request goes through after its checks.
enum Mode {
    Spool(mpsc::Sender<Append>),
    Kafka(FutureProducer),
}

struct Floor {
    keys: Keys,
    mode: Mode,
    counter: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, address, brokers, mode, secret, spool] = &args[..] else {
        anyhow::bail!("usage: floor ADDRESS BROKERS spool|kafka SECRET SPOOL_FILE");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        create_topic(brokers).await?;
        // Each producer has the topic's partitions and leaders before the first request
        // (one record produced and waited for): the half-rate runs have no warm-up, and
        // their first requests would otherwise wait for the metadata.
        let mode = match mode.as_str() {
            "spool" => {
                let producer: ThreadedProducer<DefaultProducerContext> =
                    producer_config(brokers, 20, 1024 * 1024).create()?;
                producer
                    .send(BaseRecord::<str, [u8]>::to(TOPIC).payload(b"warm-up"))
                    .map_err(|(error, _)| error)?;
                producer.flush(Duration::from_secs(10))?;
                Mode::Spool(start_writer(spool, producer)?)
            }
            "kafka" => {
                let producer: FutureProducer = producer_config(brokers, 1, 1_000_000).create()?;
                let warm_up = FutureRecord::<str, [u8]>::to(TOPIC).payload(b"warm-up");
                producer
                    .send(warm_up, Duration::from_secs(10))
                    .await
                    .map_err(|(error, _)| error)?;
                Mode::Kafka(producer)
            }
            other => anyhow::bail!("MODE is spool or kafka, not {other:?}"),
        };
        let floor = Arc::new(Floor {
            keys: Keys::new([secret.as_bytes()]),
            mode,
            counter: AtomicU64::new(0),
        });
        let listener = TcpListener::bind(address).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let floor = floor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let floor = floor.clone();
                    async move { Ok::<_, Infallible>(floor.handle(request).await) }
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

impl Floor {
    async fn handle(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let digest = request
            .headers()
            .get(signature::HEADER)
            .and_then(|header| signature::parse_header(header.as_bytes()).ok());
        let Some(digest) = digest else {
            return answer(StatusCode::UNAUTHORIZED);
        };
        let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
            return answer(StatusCode::BAD_REQUEST);
        };
        if self.keys.verify(&digest, &[&body]).is_err() {
            return answer(StatusCode::UNAUTHORIZED);
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            return answer(StatusCode::BAD_REQUEST);
        }
        let stored = match &self.mode {
            Mode::Spool(writer) => {
                let (synced, waited) = oneshot::channel();
                writer.send((body, synced)).is_ok() && waited.await.is_ok()
            }
            Mode::Kafka(producer) => {
                let key = self.counter.fetch_add(1, Ordering::Relaxed).to_string();
                let record = FutureRecord::to(TOPIC).key(&key).payload(&body[..]);
                match producer.send_result(record) {
                    Ok(delivery) => matches!(delivery.await, Ok(Ok(_))),
                    Err(_) => false,
                }
            }
        };
        answer(if stored {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        })
    }
}

fn answer(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"accepted\n")));
    *response.status_mut() = status;
    response
}

fn producer_config(brokers: &str, linger_ms: u32, batch_bytes: u32) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "gzip")
        .set("compression.level", "1")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", batch_bytes.to_string());
    config
}

/// The topic, three partitions as the benchmark's gateway topics (the broker does not
/// create topics itself).
async fn create_topic(brokers: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let topic = NewTopic::new(TOPIC, 3, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("could not create topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Zeroes `path` to [`SPOOL_BYTES`], then starts the writer thread: it takes what has
/// arrived, writes it at the end of what it wrote before, `fdatasync`s, answers, and then
/// produces each body.
fn start_writer(
    path: &str,
    producer: ThreadedProducer<DefaultProducerContext>,
) -> anyhow::Result<mpsc::Sender<Append>> {
    let mut file = File::create(path).with_context(|| format!("cannot create {path}"))?;
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..SPOOL_BYTES / zeros.len() as u64 {
        file.write_all(&zeros)?;
    }
    file.sync_all()?;
    let (sender, receiver) = mpsc::channel::<Append>();
    std::thread::Builder::new()
        .name("floor-writer".to_owned())
        .spawn(move || {
            let mut offset = 0u64;
            let mut batch = Vec::new();
            let mut buffer = Vec::new();
            let mut counter = 0u64;
            while let Ok(first) = receiver.recv() {
                batch.push(first);
                batch.extend(receiver.try_iter());
                buffer.clear();
                for (body, _) in &batch {
                    buffer.extend_from_slice(&(body.len() as u32).to_le_bytes());
                    buffer.extend_from_slice(body);
                }
                let written = file
                    .write_all_at(&buffer, offset)
                    .and_then(|()| file.sync_data());
                offset += buffer.len() as u64;
                for (body, synced) in batch.drain(..) {
                    if written.is_err() {
                        continue;
                    }
                    let _ = synced.send(());
                    counter += 1;
                    let key = counter.to_string();
                    let mut record = BaseRecord::<str, [u8]>::to(TOPIC)
                        .key(&key)
                        .payload(&body[..]);
                    // The queue is full only when Kafka falls behind: wait for room.
                    while let Err((_, returned)) = producer.send(record) {
                        std::thread::sleep(Duration::from_millis(1));
                        record = returned;
                    }
                }
            }
        })?;
    Ok(sender)
}
