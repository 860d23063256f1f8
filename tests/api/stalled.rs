//! Clients that send a notification's headers and then hold its body, a thousand at a
//! time: Meta's signed notifications still get 200 within a second.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Stalled clients of each kind.
const STALLED: usize = 500;

/// Opens a connection and sends the head of a POST of 1,000 bytes that never come.
async fn stall(addr: std::net::SocketAddr, signature: Option<&str>) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let signature = signature
        .map(|value| format!("x-hub-signature-256: {value}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nhost: test\r\ncontent-length: 1000\r\nexpect: 100-continue\r\n{signature}\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

/// What the server sent on `stream` within `within`, until it closed it.
async fn received(stream: &mut TcpStream, within: Duration) -> String {
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut bytes)).await;
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_notifications_get_200_while_a_thousand_clients_hold_their_bodies() {
    let app = spawn_app(&[]).await;
    let plausible = format!("sha256={}", "0".repeat(64));
    let mut forged = Vec::with_capacity(STALLED);
    let mut unsigned = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        forged.push(stall(app.addr, Some(&plausible)).await);
        unsigned.push(stall(app.addr, None).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // While the forged ones hold their connections, Meta's notifications go through.
    let body = fixture("messages_text.json");
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let answer = app.notify(&body).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    eprintln!(
        "{STALLED} stalled forged bodies, {STALLED} unsigned: the slowest of 20 signed POSTs took {slowest:?}"
    );
    // Not queued behind the stalled ones, which hold on until the 10 s request timeout.
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");

    // An unsigned request was refused before its body: 401 at once, no `100 Continue`,
    // the connection closed.
    for stream in unsigned.iter_mut().take(50) {
        let answer = received(stream, Duration::from_secs(2)).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(!answer.contains("100 Continue"), "{answer}");
    }
    // A forged one is still waiting for its body: it has had no answer.
    let answer = received(&mut forged[0], Duration::from_millis(100)).await;
    assert!(!answer.contains("HTTP/1.1 4"), "{answer}");
    assert_eq!(
        app.metric(r#"waba_gateway_signature_failures_total{app="default",reason="missing"}"#)
            .await,
        STALLED as f64
    );
    assert_eq!(app.memory.as_ref().expect("memory").records().len(), 20);
}
