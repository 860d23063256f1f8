//! What the gateway logs: a full run of the real binary at the most verbose level, in both
//! log formats, captured whole. No secret, verify token, signature, payload text or phone
//! number may appear in it.

use std::time::Duration;

use crate::helpers::*;

const LOG_SECRET: &str = "log-secret-Zq81x";
const LOG_PREVIOUS: &str = "log-previous-Jx42y";
const LOG_TOKEN: &str = "log-token-Pw93z";
const KAFKA_PASSWORD: &str = "kafka-pass-Vb38w";
const CHALLENGE: &str = "challenge-Km27v";
const PHONE: &str = "4915799990001";
const DISPLAY_PHONE: &str = "15557650042";
const TEXT: &str = "payload-marker-Hn64u";
const CUSTOMER: &str = "Customer-Name-Rt5s";

fn notification() -> Vec<u8> {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"310987654321001","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"{DISPLAY_PHONE}","phone_number_id":"420123456789002"}},"contacts":[{{"profile":{{"name":"{CUSTOMER}"}},"wa_id":"{PHONE}"}}],"messages":[{{"from":"{PHONE}","id":"wamid.LOG1","timestamp":"1763770001","type":"text","text":{{"body":"{TEXT}"}}}}]}},"field":"messages"}}]}}]}}"#
    )
    .into_bytes()
}

/// Drives every kind of request through a gateway logging at `trace` in `format`, and
/// returns the log of the whole run and the signatures that were sent.
async fn full_run(format: &str) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut serve = GatewayProcess::start(
        dir.path(),
        &[
            ("WABA_GATEWAY__LOG__LEVEL", "trace"),
            ("WABA_GATEWAY__LOG__FORMAT", format),
            ("WABA_GATEWAY__APPS__DEFAULT__SECRET", LOG_SECRET),
            (
                "WABA_GATEWAY__APPS__DEFAULT__PREVIOUS_SECRETS",
                LOG_PREVIOUS,
            ),
            ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", LOG_TOKEN),
            ("WABA_GATEWAY__SERVER__MAX_BODY_BYTES", "2048"),
            ("WABA_GATEWAY__DELIVERY__SPOOL_MAX_BYTES", "1048576"),
            (
                "WABA_GATEWAY__KAFKA__LIBRDKAFKA__SASL_PASSWORD",
                KAFKA_PASSWORD,
            ),
        ],
    );
    serve.wait_ready().await;
    let url = serve.url();
    let body = notification();
    let good = sign(LOG_SECRET, &body);
    let previous = sign(LOG_PREVIOUS, &body);
    let wrong = sign("not-the-secret", &body);
    let mut hostile = b"not json: ".to_vec();
    hostile.extend_from_slice(&body);
    let hostile_signature = sign(LOG_SECRET, &hostile);
    let big = [body.as_slice(); 20].concat();
    let big_signature = sign(LOG_SECRET, &big);

    let verify = |token: &str| {
        format!("{url}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge={CHALLENGE}")
    };
    assert_eq!(get(&verify(LOG_TOKEN)).await.status, 200);
    assert_eq!(get(&verify("wrong-token")).await.status, 403);
    let wrong_format = "sha256=zz".to_owned();
    for (body, signature, status) in [
        (&body, &good, 200),
        (&body, &previous, 200),
        (&body, &wrong, 401),
        (&body, &wrong_format, 401),
        (&hostile, &hostile_signature, 200),
        (&big, &big_signature, 413),
    ] {
        let headers = [("x-hub-signature-256", signature.as_str())];
        assert_eq!(post(&url, body, &headers).await.status, status);
    }
    let elsewhere = format!("http://{}/other?token={LOG_TOKEN}", serve.public);
    let headers = [("x-hub-signature-256", good.as_str())];
    assert_eq!(post(&elsewhere, &body, &headers).await.status, 404);
    serve.send_signal("HUP");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(serve.signal_and_wait("TERM").code(), Some(0));
    // The reader thread takes the last lines after the exit.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = serve.log();
    (
        log,
        vec![good, previous, wrong, hostile_signature, big_signature],
    )
}

fn assert_nothing_secret(format: &str, log: &str, signatures: &[String]) {
    // The capture is real: the run's events are all in it, down to debug level.
    for expected in [
        "listening",
        "verification request answered",
        "verification request refused",
        "notification refused: bad signature",
        "keeping it on the dead-letter topic",
        "SIGHUP",
        "stopped",
    ] {
        assert!(
            log.contains(expected),
            "{format}: {expected:?} not logged:\n{log}"
        );
    }
    let mut forbidden: Vec<&str> = vec![
        LOG_SECRET,
        LOG_PREVIOUS,
        LOG_TOKEN,
        "wrong-token",
        KAFKA_PASSWORD,
        CHALLENGE,
        PHONE,
        DISPLAY_PHONE,
        TEXT,
        CUSTOMER,
        "not json",
        "wamid.LOG1",
    ];
    for signature in signatures {
        forbidden.push(signature);
        forbidden.push(signature.trim_start_matches("sha256="));
    }
    for secret in forbidden {
        assert!(
            !log.contains(secret),
            "{format}: {secret:?} reached the log:\n{log}"
        );
    }
}

#[tokio::test]
async fn a_full_run_at_trace_level_logs_no_secret_signature_payload_or_phone_number() {
    for format in ["text", "json"] {
        let (log, signatures) = full_run(format).await;
        assert_nothing_secret(format, &log, &signatures);
    }
}

/// Refused signatures are logged, not only counted, but a flood of them is one line per
/// interval that says how many were held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_signatures_are_logged_once_per_interval() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut serve = GatewayProcess::start(
        dir.path(),
        &[
            ("WABA_GATEWAY__APPS__DEFAULT__SECRET", LOG_SECRET),
            ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", LOG_TOKEN),
        ],
    );
    serve.wait_ready().await;
    let url = serve.url();
    for n in 0..30 {
        let headers: &[(&str, &str)] = if n % 2 == 0 {
            &[]
        } else {
            &[("x-hub-signature-256", "sha256=not-hex")]
        };
        assert_eq!(post(&url, &notification(), headers).await.status, 401);
    }
    assert_eq!(serve.signal_and_wait("TERM").code(), Some(0));
    let log = serve.log();
    let refused = one_line(&log, "notification refused");
    assert!(refused.contains(r#"reason="missing""#), "{refused}");
    assert!(refused.contains("held_back=0"), "{refused}");
}

/// Every log line a client without the secret (or a flood of Meta's retries while Kafka is
/// down) can cause is written once per 10 s, however many requests cause it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_that_clients_cause_are_rate_limited() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let serve = GatewayProcess::start(
        dir.path(),
        &[
            ("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET),
            ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", VERIFY_TOKEN),
            // Kafka never answers: every signed notification gets 503.
            ("WABA_GATEWAY__KAFKA__BROKERS", "127.0.0.1:1"),
            ("WABA_GATEWAY__DELIVERY__ACK", "kafka"),
            ("WABA_GATEWAY__DELIVERY__KAFKA_ACK_TIMEOUT_MS", "200"),
        ],
    );
    let url = serve.url();
    for _ in 0..1000 {
        let answer = get(&format!(
            "{url}?hub.mode=subscribe&hub.challenge=1&hub.verify_token=wrong"
        ))
        .await;
        assert_eq!(answer.status, 403);
    }
    let body = notification();
    for _ in 0..300 {
        assert_eq!(post_signed(&url, &body, "not-the-secret").await.status, 401);
    }
    let signed: Vec<_> = (0..20)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move { post_signed(&url, &body, SECRET).await })
        })
        .collect();
    for answer in signed {
        assert_eq!(answer.await.expect("a request").status, 503);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = serve.log();
    for line in [
        "verification request refused",
        "notification refused: bad signature",
        // The 503s of Kafka being down are that one line, not one each.
        "Kafka is unreachable: 127.0.0.1:1 (Connection refused)",
    ] {
        assert_eq!(log.matches(line).count(), 1, "{line}:\n{log}");
    }
    assert_eq!(log.matches("notification not accepted").count(), 0, "{log}");
}

/// With every broker down, the log holds one line that names each unreachable broker and
/// why, and nothing per refused request, nor librdkafka's own lines, nor a misleading
/// cause (a topic that could not be created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_is_one_line_naming_each_unreachable_broker() {
    let dir = tempfile::tempdir().expect("dir");
    let mut gateway = GatewayProcess::start(
        dir.path(),
        &[
            ("WABA_GATEWAY__KAFKA__BROKERS", "127.0.0.1:9,127.0.0.1:10"),
            ("WABA_GATEWAY__DELIVERY__ACK", "kafka"),
            ("WABA_GATEWAY__DELIVERY__KAFKA_ACK_TIMEOUT_MS", "300"),
            ("WABA_GATEWAY__SERVER__REQUEST_TIMEOUT_MS", "1000"),
            ("WABA_GATEWAY__SHUTDOWN__DRAIN_TIMEOUT_MS", "1500"),
            ("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET),
            ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", VERIFY_TOKEN),
        ],
    );
    let mut refused = 0;
    for _ in 0..30 {
        if try_notify(&gateway.url(), &fixture("messages_text.json")).await == Some(503) {
            refused += 1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(refused >= 25, "{refused} of 30 refused");
    assert_eq!(gateway.signal_and_wait("TERM").code(), Some(0));
    let log = gateway.log();
    assert!(
        one_line(&log, "Kafka is unreachable").contains(
            "Kafka is unreachable: 127.0.0.1:10 (Connection refused), 127.0.0.1:9 (Connection \
             refused); retrying until a broker answers"
        ),
        "{log}"
    );
    for noise in [
        "notification not accepted",
        "librdkafka:",
        "creating topics failed",
    ] {
        assert!(!log.contains(noise), "{noise}: {log}");
    }
}
