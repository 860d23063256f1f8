//! POST notifications against an in-memory publisher: statuses, records, metrics.

use std::time::Duration;

use waba_gateway::publish::memory::Behaviour;

use crate::helpers::*;

#[tokio::test]
async fn a_signed_notification_is_accepted_and_split_into_records() {
    let app = spawn_app(&[]).await;
    let body = fixture("multi_two_entries_three_fields_each.json");
    let answer = app.notify(&body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let records = app.memory.as_ref().expect("memory").records();
    let topics: Vec<&str> = records.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "whatsapp.messages",
            "whatsapp.phone_number_quality_update",
            "whatsapp.message_template_status_update",
            "whatsapp.messages",
            "whatsapp.account_review_update",
            "whatsapp.template_category_update",
        ]
    );
    assert!(
        records
            .iter()
            .all(|r| r.header("wa-app") == Some("default"))
    );
    assert_eq!(
        app.metric(r#"waba_gateway_changes_total{app="default",field="messages"}"#)
            .await,
        2.0
    );
    assert_eq!(
        app.metric(r#"waba_gateway_signature_matches_total{app="default",secret="current"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_bad_signature_gets_401_stores_nothing_and_is_counted_by_reason() {
    let app = spawn_app(&[]).await;
    let body = fixture("messages_text.json");
    let good = sign(SECRET, &body);
    let mut tampered = body.clone();
    tampered[40] ^= 1;
    let cases: [(&[u8], Option<String>, &str); 5] = [
        (&tampered, Some(good.clone()), "mismatch"),
        (&body, Some(sign("another-secret", &body)), "mismatch"),
        (&body, None, "missing"),
        (
            &body,
            Some(good.trim_start_matches("sha256=").to_owned()),
            "malformed",
        ),
        (
            &body,
            Some("sha1=2fd4e1c67a2d28fced849ee1bb76e7391b93eb12".to_owned()),
            "malformed",
        ),
    ];
    for (body, header, _) in &cases {
        let headers: Vec<(&str, &str)> = header
            .iter()
            .map(|h| ("x-hub-signature-256", h.as_str()))
            .collect();
        let answer = post(&app.url("/webhook"), body, &headers).await;
        assert_eq!(answer.status, 401);
    }
    // Meta's SHA-1 header alone is not enough.
    let answer = post(
        &app.url("/webhook"),
        &body,
        &[(
            "x-hub-signature",
            "sha1=2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
        )],
    )
    .await;
    assert_eq!(answer.status, 401);
    assert!(app.memory.as_ref().expect("memory").records().is_empty());
    for (reason, count) in [("mismatch", 2.0), ("missing", 2.0), ("malformed", 2.0)] {
        assert_eq!(
            app.metric(&format!(
                r#"waba_gateway_signature_failures_total{{app="default",reason="{reason}"}}"#
            ))
            .await,
            count,
            "{reason}"
        );
    }
}

#[tokio::test]
async fn a_previous_secret_is_accepted_during_rotation_and_counted_as_previous() {
    let app = spawn_app(&[(
        "WABA_GATEWAY__APPS__DEFAULT__PREVIOUS_SECRETS",
        "old-1,old-2",
    )])
    .await;
    let body = fixture("security.json");
    let answer = post_signed(&app.url("/webhook"), &body, "old-2").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        app.metric(r#"waba_gateway_signature_matches_total{app="default",secret="previous"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_whether_declared_or_streamed() {
    let app = spawn_app(&[("WABA_GATEWAY__SERVER__MAX_BODY_BYTES", "2048")]).await;
    let body = vec![b'x'; 4096];
    let signature = sign(SECRET, &body);
    let answer = post(
        &app.url("/webhook"),
        &body,
        &[("x-hub-signature-256", &signature)],
    )
    .await;
    assert_eq!(answer.status, 413);
    // Without Content-Length: chunked transfer encoding, counted as it streams.
    let answer = chunked_post(app.addr, "/webhook", &body, &signature).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(app.memory.as_ref().expect("memory").records().is_empty());
}

async fn chunked_post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &[u8],
    signature: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\nx-hub-signature-256: {signature}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    for chunk in body.chunks(1000) {
        let _ = stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = stream.write_all(chunk).await;
        let _ = stream.write_all(b"\r\n").await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0; 1024];
    let read = stream.read(&mut answer).await.expect("read");
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

#[tokio::test]
async fn when_kafka_cannot_take_the_records_meta_gets_503_with_retry_after() {
    let app = spawn_app(&[]).await;
    app.memory
        .as_ref()
        .expect("memory")
        .set_behaviour(Behaviour::Unavailable);
    let answer = app.notify(&fixture("messages_text.json")).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.headers["retry-after"], "5");
    assert_eq!(
        app.metric(r#"waba_gateway_changes_total{app="default",field="messages"}"#)
            .await,
        0.0,
        "nothing is counted as accepted"
    );
}

#[tokio::test]
async fn when_kafka_never_acknowledges_meta_gets_503_within_the_ack_timeout() {
    let app = spawn_app(&[("WABA_GATEWAY__DELIVERY__KAFKA_ACK_TIMEOUT_MS", "300")]).await;
    app.memory
        .as_ref()
        .expect("memory")
        .set_behaviour(Behaviour::Hang);
    // When exactly: `http::tests`, on a paused clock.
    let answer = app.notify(&fixture("messages_text.json")).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.headers["retry-after"], "5");
}

#[tokio::test]
async fn a_record_kafka_refuses_goes_to_the_dead_letter_topic_with_the_reason() {
    let app = spawn_app(&[]).await;
    let memory = app.memory.as_ref().expect("memory");
    memory.set_behaviour(Behaviour::RejectTopic("whatsapp.history".to_owned()));
    let answer = app.notify(&fixture("history.json")).await;
    assert_eq!(answer.status, 200);
    let records = memory.records();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.topic, "whatsapp.deadletter");
    assert_eq!(record.header("wa-topic"), Some("whatsapp.history"));
    assert!(
        record
            .header("wa-error")
            .is_some_and(|e| e.starts_with("record_too_large: ")),
        "{:?}",
        record.header("wa-error")
    );
    let envelope: serde_json::Value = serde_json::from_slice(&record.value).expect("envelope");
    assert_eq!(envelope["field"], "history");
}

#[tokio::test]
async fn an_array_of_notifications_is_accepted() {
    let app = spawn_app(&[]).await;
    let answer = app
        .notify(&fixture("array_of_two_notifications.json"))
        .await;
    assert_eq!(answer.status, 200);
    let topics: Vec<String> = app
        .memory
        .as_ref()
        .expect("memory")
        .records()
        .into_iter()
        .map(|r| r.topic)
        .collect();
    assert_eq!(topics, ["whatsapp.security", "whatsapp.account_update"]);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_404_and_405() {
    let app = spawn_app(&[]).await;
    assert_eq!(get(&app.url("/nope")).await.status, 404);
    let answer = request(
        http::Method::PUT,
        &app.url("/webhook"),
        bytes::Bytes::new(),
        &[],
    )
    .await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.headers["allow"], "GET, POST");
    assert_eq!(get(&app.admin_url("/webhook")).await.status, 404);
}

#[tokio::test]
async fn health_and_readiness_answer_on_both_listeners() {
    let app = spawn_app(&[]).await;
    for url in [app.url("/healthz"), app.admin_url("/healthz")] {
        assert_eq!(get(&url).await.status, 200);
    }
    app.wait_ready().await;
    assert_eq!(get(&app.url("/readyz")).await.status, 200);
    let metrics = get(&app.admin_url("/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .text()
            .contains("waba_gateway_build_info{revision=\"")
    );
}

#[tokio::test]
async fn shutdown_turns_readiness_off_at_once_and_lets_a_request_in_flight_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut app = spawn_app(&[]).await;
    app.wait_ready().await;
    let body = fixture("messages_text.json");
    let signature = sign(SECRET, &body);
    // A request whose body is still arriving when shutdown begins.
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /webhook HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\nx-hub-signature-256: {signature}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&body[..10]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let admin = app.admin_url("/readyz");
    let stopping = app.begin_stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        get(&admin).await.status,
        503,
        "not ready from the first moment"
    );
    assert!(
        tokio::net::TcpStream::connect(app.addr).await.is_err(),
        "no new connections are taken"
    );

    stream.write_all(&body[10..]).await.expect("write");
    let mut answer = vec![0; 512];
    let read = stream.read(&mut answer).await.expect("read");
    assert!(
        answer[..read].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..read])
    );
    stopping.await.expect("task").expect("clean stop");
    assert_eq!(app.memory.as_ref().expect("memory").records().len(), 1);
}

/// On SIGTERM the gateway is not ready at once but keeps serving for the lame-duck period,
/// so that load balancers stop sending before anything is refused; then it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_lame_duck_period_requests_get_200_while_readyz_says_503() {
    let mut app = spawn_app(&[("WABA_GATEWAY__SHUTDOWN__LAME_DUCK_MS", "1500")]).await;
    app.wait_ready().await;
    let body = fixture("messages_text.json");
    let (public, admin) = (app.url("/readyz"), app.admin_url("/readyz"));
    let started = std::time::Instant::now();
    let stopping = app.begin_stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        assert_eq!(get(&admin).await.status, 503);
        assert_eq!(get(&public).await.status, 503);
        assert_eq!(app.notify(&body).await.status, 200, "still serving");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Each 200 above came while /readyz said 503: during the lame duck, however slow the
    // machine (the listener closes when it ends).
    stopping.await.expect("task").expect("clean stop");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "stopped before the lame-duck period was over: {:?}",
        started.elapsed()
    );
    assert!(tokio::net::TcpStream::connect(app.addr).await.is_err());
    assert_eq!(app.memory.as_ref().expect("memory").records().len(), 5);
}

/// The real binary on SIGTERM: the first seconds' requests are answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_answers_200_in_the_first_seconds_after_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let mut serve = GatewayProcess::start(
        dir.path(),
        &[
            // Far beyond the half second of requests below, so that a slow machine still
            // sends them all within it.
            ("WABA_GATEWAY__SHUTDOWN__LAME_DUCK_MS", "6000"),
            (
                "WABA_GATEWAY__DELIVERY__SPOOL_DIR",
                spool.to_str().expect("utf-8"),
            ),
        ],
    );
    serve.wait_ready().await;
    let body = fixture("messages_text.json");
    serve.send_signal("TERM");
    let sigterm = std::time::Instant::now();
    // The signal arrives a moment later: from then on /readyz says 503.
    while get(&format!("http://{}/readyz", serve.admin)).await.status != 503 {
        assert!(
            sigterm.elapsed() < Duration::from_secs(5),
            "still ready 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..5 {
        let answer = post_signed(&serve.url(), &body, "demo-app-secret").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let ready = get(&format!("http://{}/readyz", serve.admin)).await;
        assert_eq!(ready.status, 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(serve.signal_and_wait("TERM").code(), Some(0));
    assert!(serve.log().contains("lame duck"), "{}", serve.log());
}

/// What one keep-alive client saw across a stop.
#[derive(Debug, Default)]
struct KeepAliveTally {
    answered: usize,
    /// Answers that said `Connection: close`.
    told_to_close: usize,
    /// Requests written on an open connection that got no answer.
    unanswered: usize,
}

/// Sends signed notifications back to back on one connection, opening a new one when told
/// to close, until a connection is refused (the listener closed) or `until`.
async fn keep_alive_client(
    addr: std::net::SocketAddr,
    until: std::time::Instant,
) -> KeepAliveTally {
    let body = fixture("messages_text.json");
    let mut tally = KeepAliveTally::default();
    while std::time::Instant::now() < until {
        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
            break;
        };
        loop {
            match raw_exchange(&mut stream, &body).await {
                Ok(answer) => {
                    assert_eq!(answer.status, 200, "{}", answer.head);
                    assert_eq!(answer.body, b"accepted\n");
                    tally.answered += 1;
                    if answer.closes() {
                        tally.told_to_close += 1;
                        break;
                    }
                }
                Err(_) => {
                    tally.unanswered += 1;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tally
}

/// Eight keep-alive clients sending to `addr` while `stop` is called 300 ms in, until the
/// listener closes: what they saw, once it is checked that no request written was left
/// unanswered and that every client was told to close.
async fn keep_alive_load_across(addr: std::net::SocketAddr, stop: impl FnOnce()) -> KeepAliveTally {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(keep_alive_client(addr, until)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop();
    let mut total = KeepAliveTally::default();
    for client in clients {
        let tally = client.await.expect("client");
        total.answered += tally.answered;
        total.told_to_close += tally.told_to_close;
        total.unanswered += tally.unanswered;
    }
    eprintln!("keep-alive clients across a stop: {total:?}");
    assert_eq!(total.unanswered, 0, "{total:?}");
    assert!(total.told_to_close >= 8, "{total:?}");
    assert!(
        std::time::Instant::now() < until,
        "the clients never saw the listener close"
    );
    total
}

/// Keep-alive clients across a stop: answers of the lame duck say `Connection: close`, so
/// clients reconnect instead of writing on a connection about to close, and no request
/// written is left without an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_clients_lose_no_request_across_a_stop() {
    let mut app = spawn_app(&[("WABA_GATEWAY__SHUTDOWN__LAME_DUCK_MS", "1000")]).await;
    app.wait_ready().await;
    let mut stopping = None;
    let total = keep_alive_load_across(app.addr, || stopping = Some(app.begin_stop())).await;
    let stopping = stopping.expect("stopped");
    stopping.await.expect("task").expect("clean stop");
    assert_eq!(
        app.memory.as_ref().expect("memory").records().len(),
        total.answered,
        "every answered notification, and only those"
    );
}

/// The same across a real SIGTERM to the binary, its lame duck shortened to 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_clients_lose_no_request_across_a_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let mut serve = GatewayProcess::start(
        dir.path(),
        &[
            ("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET),
            ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", VERIFY_TOKEN),
            ("WABA_GATEWAY__SHUTDOWN__LAME_DUCK_MS", "1000"),
            (
                "WABA_GATEWAY__DELIVERY__SPOOL_DIR",
                spool.to_str().expect("utf-8"),
            ),
        ],
    );
    serve.wait_ready().await;
    let addr = serve.public.parse().expect("an address");
    keep_alive_load_across(addr, || serve.send_signal("TERM")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serve.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
}
