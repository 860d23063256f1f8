//! The optional source allowlist (`server.allowed_source_cidrs`), with and without a
//! trusted proxy in front.

use crate::helpers::*;

#[tokio::test]
async fn a_source_outside_the_allowlist_gets_403_and_nothing_is_stored() {
    let app = spawn_app(&[("WABA_GATEWAY__SERVER__ALLOWED_SOURCE_CIDRS", "10.9.9.0/24")]).await;
    let body = fixture("messages_text.json");
    assert_eq!(app.notify(&body).await.status, 403);
    let verify = get(&app.url(&format!(
        "/webhook?hub.mode=subscribe&hub.challenge=7&hub.verify_token={VERIFY_TOKEN}"
    )))
    .await;
    assert_eq!(verify.status, 403);
    assert!(!verify.text().contains('7'));
    // Health checks of load balancers and probes are never filtered.
    assert_eq!(get(&app.url("/healthz")).await.status, 200);
    assert!(app.memory.as_ref().expect("memory").records().is_empty());
    assert_eq!(app.metric("waba_gateway_source_refusals_total").await, 2.0);
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
            "173.252.64.0/18",
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
    assert_eq!(app.memory.as_ref().expect("memory").records().len(), 2);
}
