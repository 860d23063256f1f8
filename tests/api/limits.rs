//! Every limit of the webhook listener, from the outside: slow headers, slow bodies, the
//! connection cap and the in-flight cap. The body limit is in `notify`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use waba_gateway::publish::memory::Behaviour;

use crate::helpers::*;

/// Reads what the server sends until it closes the connection or `within` passes.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut received)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&received).into_owned())
}

/// The head of a signed POST of `body` to `/webhook`, on an open connection.
fn head(body: &[u8], connection: &str) -> String {
    format!(
        "POST /webhook HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\nx-hub-signature-256: {}\r\nconnection: {connection}\r\n\r\n",
        body.len(),
        sign(SECRET, body)
    )
}

/// Sends a whole signed POST and reads the status line of the answer.
async fn exchange(stream: &mut TcpStream, body: &[u8]) -> String {
    stream
        .write_all(head(body, "keep-alive").as_bytes())
        .await
        .expect("write");
    stream.write_all(body).await.expect("write");
    let mut answer = vec![0; 4096];
    let read = stream.read(&mut answer).await.expect("read");
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// A connection carrying a signed POST of `body` of which only the first 10 bytes of the
/// body have been sent.
async fn stalled_post(addr: SocketAddr, body: &[u8]) -> TcpStream {
    let mut stream = connect(addr).await;
    stream
        .write_all(head(body, "keep-alive").as_bytes())
        .await
        .expect("write");
    stream.write_all(&body[..10]).await.expect("write");
    stream
}

#[tokio::test]
async fn a_connection_that_is_slow_to_send_its_headers_is_closed() {
    let app = spawn_app(&[("WABA_GATEWAY__SERVER__HEADER_READ_TIMEOUT_MS", "300")]).await;
    let mut stream = connect(app.addr).await;
    stream
        .write_all(b"POST /webhook HTTP/1.1\r\nhost: test\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the gateway closes the connection");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "closed after {waited:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // A prompt client on another connection is served.
    assert_eq!(app.notify(&fixture("messages_text.json")).await.status, 200);
}

#[tokio::test]
async fn a_body_that_arrives_too_slowly_gets_408_and_nothing_is_stored() {
    let app = spawn_app(&[
        ("WABA_GATEWAY__SERVER__REQUEST_TIMEOUT_MS", "400"),
        ("WABA_GATEWAY__DELIVERY__KAFKA_ACK_TIMEOUT_MS", "200"),
    ])
    .await;
    let body = fixture("messages_text.json");
    let mut stream = stalled_post(app.addr, &body).await;
    let started = Instant::now();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the gateway answers and closes");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(app.memory.as_ref().expect("memory").records().is_empty());
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_are_closed_until_one_frees_up() {
    let app = spawn_app(&[("WABA_GATEWAY__SERVER__MAX_CONNECTIONS", "2")]).await;
    let body = fixture("messages_text.json");
    let mut first = connect(app.addr).await;
    let mut second = connect(app.addr).await;
    assert!(
        exchange(&mut first, &body)
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        exchange(&mut second, &body)
            .await
            .starts_with("HTTP/1.1 200")
    );

    let mut third = connect(app.addr).await;
    third
        .write_all(head(&body, "keep-alive").as_bytes())
        .await
        .expect("write");
    let _ = third.write_all(&body).await;
    let answer = read_until_closed(&mut third, Duration::from_secs(5))
        .await
        .expect("the gateway answers and closes");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 5"),
        "{answer}"
    );
    assert!(answer.contains("server.max_connections"), "{answer}");
    assert_eq!(
        app.metric(r#"waba_gateway_overload_refusals_total{limit="connections"}"#)
            .await,
        1.0
    );
    assert_eq!(app.metric("waba_gateway_connections").await, 2.0);

    // The open connections keep working, and a closed one frees its place.
    assert!(
        exchange(&mut first, &body)
            .await
            .starts_with("HTTP/1.1 200")
    );
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.metric("waba_gateway_connections").await > 1.0 {
        assert!(
            Instant::now() < deadline,
            "the closed connection was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut fourth = connect(app.addr).await;
    assert!(
        exchange(&mut fourth, &body)
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert_eq!(app.memory.as_ref().expect("memory").records().len(), 4);
}

#[tokio::test]
async fn requests_over_the_in_flight_cap_get_503_and_the_others_finish() {
    let app = spawn_app(&[("WABA_GATEWAY__SERVER__MAX_IN_FLIGHT_REQUESTS", "2")]).await;
    let memory = app.memory.clone().expect("memory");
    let body = fixture("messages_text.json");
    // Two notifications waiting for a slow Kafka hold both places.
    memory.set_behaviour(Behaviour::Hold);
    let url = app.url("/webhook");
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move { post_signed(&url, &body, SECRET).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let refused = app.notify(&body).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["retry-after"], "5");
    assert!(refused.text().contains("server.max_in_flight_requests"));
    assert_eq!(
        app.metric(r#"waba_gateway_overload_refusals_total{limit="in_flight"}"#)
            .await,
        1.0
    );
    // Health checks are not notifications and are never refused.
    assert_eq!(get(&app.url("/healthz")).await.status, 200);

    memory.set_behaviour(Behaviour::Accept);
    for answer in waiting {
        assert_eq!(answer.await.expect("task").status, 200);
    }
    assert_eq!(app.notify(&body).await.status, 200);
    assert_eq!(memory.records().len(), 3);
}

#[tokio::test]
async fn bodies_still_on_their_way_take_no_in_flight_place() {
    let app = spawn_app(&[("WABA_GATEWAY__SERVER__MAX_IN_FLIGHT_REQUESTS", "2")]).await;
    let body = fixture("messages_text.json");
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(stalled_post(app.addr, &body).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.notify(&body).await.status, 200);
    for stream in &mut slow {
        stream.write_all(&body[10..]).await.expect("write");
        let mut answer = vec![0; 4096];
        let read = stream.read(&mut answer).await.expect("read");
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(app.memory.as_ref().expect("memory").records().len(), 5);
}
