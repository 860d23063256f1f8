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
    // Not before the timeout; after it, within read_until_closed's 5 s however slow the
    // machine.
    assert!(
        waited >= Duration::from_millis(250),
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
    // Exactly at the request timeout on the paused clock: http::tests.
    assert!(started.elapsed() >= Duration::from_millis(350));
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

#[tokio::test]
async fn a_request_head_past_16_kib_gets_431_and_a_smaller_one_is_served() {
    let app = spawn_app(&[]).await;
    let body = fixture("messages_text.json");
    for (padding, status) in [(8 * 1024, "HTTP/1.1 200"), (17 * 1024, "HTTP/1.1 431")] {
        let mut stream = connect(app.addr).await;
        let signature = sign(SECRET, &body);
        let head = format!(
            "POST /webhook HTTP/1.1\r\nhost: test\r\nx-pad: {}\r\ncontent-length: {}\r\nx-hub-signature-256: {signature}\r\nconnection: close\r\n\r\n",
            "a".repeat(padding),
            body.len()
        );
        // Past the limit the gateway answers and closes while the client still writes.
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&body).await;
        let answer = read_until_closed(&mut stream, Duration::from_secs(5))
            .await
            .expect("answered and closed");
        assert!(answer.starts_with(status), "{padding}: {answer}");
    }
    assert_eq!(app.memory.as_ref().expect("memory").records().len(), 1);
}

/// Settings whose receive budget holds exactly four bodies of 64 KiB.
const SMALL_BUDGET: [(&str, &str); 2] = [
    ("WABA_GATEWAY__SERVER__MAX_BODY_BYTES", "65536"),
    ("WABA_GATEWAY__SERVER__RECEIVE_BUDGET_BYTES", "262144"),
];

/// A forged POST of 65,536 bytes of which all but the last byte were sent.
async fn held_forged_body(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr).await;
    let forged = format!("sha256={}", "0".repeat(64));
    let body = vec![b'x'; 65_536];
    stream
        .write_all(post_head(&body, &forged).as_bytes())
        .await
        .expect("write");
    stream.write_all(&body[1..]).await.expect("write");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_evicts_a_stalled_large_body_when_the_receive_budget_is_full() {
    let app = spawn_app(&SMALL_BUDGET).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(held_forged_body(app.addr).await);
    }
    let used = "waba_gateway_receive_budget_used_bytes";
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.metric(used).await < 262_144.0 {
        assert!(Instant::now() < deadline, "the held bodies never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.metric("waba_gateway_receive_budget_bytes").await,
        262_144.0
    );

    let body = fixture("messages_text.json");
    // While the held bodies may still be arriving, there is no room.
    assert_eq!(app.notify(&body).await.status, 503);
    // Once they have stalled, the largest makes room.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.notify(&body).await.status, 200);
    // One held body made room: it got 503 with Retry-After, and its connection closed.
    let mut evicted = Vec::new();
    for stream in &mut held {
        if let Some(answer) = read_until_closed(stream, Duration::from_millis(300)).await {
            evicted.push(answer);
        }
    }
    assert_eq!(evicted.len(), 1, "{evicted:?}");
    assert!(evicted[0].starts_with("HTTP/1.1 503"), "{}", evicted[0]);
    let head = evicted[0].to_ascii_lowercase();
    assert!(head.contains("retry-after: 5"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(head.contains("server.receive_budget_bytes"), "{head}");
    assert_eq!(
        app.metric(r#"waba_gateway_overload_refusals_total{limit="receive_budget"}"#)
            .await,
        2.0
    );
    // Each held body took four pieces of 16 KiB.
    assert_eq!(app.metric(used).await, 3.0 * 65_536.0);
    // Clients that go away give their bytes back at once.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(2);
    while app.metric(used).await > 0.0 {
        assert!(Instant::now() < deadline, "the budget was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.memory.as_ref().expect("memory").records().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_fit_beside_whole_bodies_gets_503_and_is_not_read() {
    let app = spawn_app(&SMALL_BUDGET).await;
    let memory = app.memory.clone().expect("memory");
    // Four authentic bodies of 64 KiB, whole and waiting for a slow Kafka, fill the budget:
    // they are not evicted.
    memory.set_behaviour(Behaviour::Hold);
    let large = vec![b'x'; 65_536];
    let url = app.url("/webhook");
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let (url, large) = (url.clone(), large.clone());
            tokio::spawn(async move { post_signed(&url, &large, SECRET).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.metric("waba_gateway_receive_budget_used_bytes").await < 262_144.0 {
        assert!(Instant::now() < deadline, "the bodies never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = app.notify(&fixture("messages_text.json")).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["retry-after"], "5");
    assert_eq!(refused.headers["connection"], "close");

    memory.set_behaviour(Behaviour::Accept);
    for answer in waiting {
        assert_eq!(answer.await.expect("task").status, 200);
    }
    assert_eq!(app.notify(&fixture("messages_text.json")).await.status, 200);
    // Four dead letters (not notifications) and the notification.
    assert_eq!(memory.records().len(), 5);
    assert_eq!(
        app.metric("waba_gateway_receive_budget_used_bytes").await,
        0.0
    );
}
