//! The optional source allowlist (`server.allowed_source_cidrs`), with and without a
//! trusted proxy in front: refused sources are closed at accept.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

#[tokio::test]
async fn a_source_outside_the_allowlist_is_closed_at_accept_and_nothing_is_stored() {
    let app = spawn_app(&[("WABA_GATEWAY__SERVER__ALLOWED_SOURCE_CIDRS", "10.9.9.0/24")]).await;
    let body = fixture("messages_text.json");
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let answer = raw_exchange(&mut stream, &body).await;
    assert!(answer.is_err(), "closed without an answer: {answer:?}");
    let verify = try_request_status(&app.url(&format!(
        "/webhook?hub.mode=subscribe&hub.challenge=7&hub.verify_token={VERIFY_TOKEN}"
    )))
    .await;
    assert_eq!(verify, None, "no answer, so no challenge");
    // Probes use the admin listener, which is never filtered.
    assert_eq!(get(&app.admin_url("/healthz")).await.status, 200);
    assert!(app.memory.as_ref().expect("memory").records().is_empty());
    assert_eq!(app.metric("waba_gateway_source_refusals_total").await, 2.0);
    assert_eq!(app.metric("waba_gateway_connections").await, 0.0);
}

/// A GET's status, or `None` when the connection gave no answer.
async fn try_request_status(url: &str) -> Option<u16> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri = url.parse().expect("a URL");
    client
        .get(uri)
        .await
        .ok()
        .map(|answer| answer.status().as_u16())
}

/// Refused sources hold no place under `server.max_connections` and buffer nothing: with
/// a thousand idle connections and 1,400 sending an endless request head from outside the
/// allowlist, every signed notification from an allowed source gets 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sources_take_no_connection_place_and_allowed_ones_are_served() {
    let app = spawn_app(&[
        ("WABA_GATEWAY__SERVER__ALLOWED_SOURCE_CIDRS", "127.0.0.1/32"),
        ("WABA_GATEWAY__SERVER__MAX_CONNECTIONS", "300"),
    ])
    .await;
    let (idle_source, dribbling_source) =
        (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let mut refused = Vec::new();
    for _ in 0..1000 {
        refused.push(connect_from(idle_source, app.addr).await.expect("connect"));
    }
    let head = format!(
        "POST /webhook HTTP/1.1\r\nhost: test\r\nx-pad: {}",
        "a".repeat(16_000)
    );
    for _ in 0..1400 {
        let mut stream = connect_from(dribbling_source, app.addr)
            .await
            .expect("connect");
        // The gateway may already have closed it: a failed write is the expected end.
        let _ = stream.write_all(head.as_bytes()).await;
        refused.push(stream);
    }
    let body = fixture("messages_text.json");
    for _ in 0..20 {
        assert_eq!(app.notify(&body).await.status, 200);
    }
    // Every refused connection was closed without a byte of answer.
    for stream in refused.iter_mut().step_by(100) {
        let mut received = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received))
            .await
            .expect("closed by the gateway");
        assert!(read.is_err() || received.is_empty(), "{received:?}");
    }
    assert_eq!(
        app.metric("waba_gateway_source_refusals_total").await,
        2400.0
    );
    assert_eq!(
        app.metric(r#"waba_gateway_overload_refusals_total{limit="connections"}"#)
            .await,
        0.0
    );
    assert_eq!(app.memory.as_ref().expect("memory").records().len(), 20);
}

#[tokio::test]
async fn a_source_inside_the_allowlist_is_served() {
    let app = spawn_app(&[(
        "WABA_GATEWAY__SERVER__ALLOWED_SOURCE_CIDRS",
        "173.252.64.0/18, 127.0.0.0/8",
    )])
    .await;
    assert_eq!(app.notify(&fixture("messages_text.json")).await.status, 200);
    assert_eq!(app.metric("waba_gateway_source_refusals_total").await, 0.0);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_is_read_from_x_forwarded_for() {
    let app = spawn_app(&[
        (
            "WABA_GATEWAY__SERVER__ALLOWED_SOURCE_CIDRS",
            "173.252.64.0/18, 2a03:2880::/32",
        ),
        ("WABA_GATEWAY__SERVER__TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let body = fixture("messages_text.json");
    let signature = sign(SECRET, &body);
    let url = app.url("/webhook");
    for (forwarded, status) in [
        (Some("173.252.64.9"), 200),
        (Some("173.252.64.9, 127.0.0.1"), 200),
        // Entries with the client's port, as some load balancers write them.
        (Some("173.252.64.9:52311"), 200),
        (Some("[2a03:2880:f000::1]:443, 127.0.0.1:8080"), 200),
        (Some("[2a03:2880:f000::1]:443, 1.2.3.4:8080"), 403),
        (Some("1.2.3.4"), 403),
        // A client cannot slip an allowed address in before its own.
        (Some("173.252.64.9, 1.2.3.4"), 403),
        // The proxy itself is not a client.
        (None, 403),
    ] {
        let mut headers = vec![("x-hub-signature-256", signature.as_str())];
        headers.extend(forwarded.map(|value| ("x-forwarded-for", value)));
        let answer = post(&url, &body, &headers).await;
        assert_eq!(answer.status, status, "{forwarded:?}");
    }
    assert_eq!(app.memory.as_ref().expect("memory").records().len(), 4);
}
