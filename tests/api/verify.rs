//! The GET verification handshake.

use crate::helpers::*;

#[tokio::test]
async fn verification_echoes_the_challenge_exactly() {
    let app = spawn_app(&[]).await;
    for (sent, echoed) in [
        ("1158201444", "1158201444"),
        ("ch%2Fal-lenge%20%C3%A9", "ch/al-lenge é"),
        ("abc+def", "abc def"),
    ] {
        let answer = get(&app.url(&format!(
            "/webhook?hub.mode=subscribe&hub.challenge={sent}&hub.verify_token={VERIFY_TOKEN}"
        )))
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.text(), echoed);
        assert_eq!(answer.headers["content-type"], "text/plain; charset=utf-8");
    }
    assert_eq!(
        app.metric(r#"waba_gateway_http_requests_total{route="webhook_verify",status="200"}"#)
            .await,
        3.0
    );
}

#[tokio::test]
async fn verification_with_a_wrong_token_or_mode_is_refused() {
    let app = spawn_app(&[]).await;
    for query in [
        "hub.mode=subscribe&hub.challenge=1&hub.verify_token=wrong",
        "hub.mode=subscribe&hub.challenge=1&hub.verify_token=test-verify-token-but-longer",
        "hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=test-verify-token",
    ] {
        let answer = get(&app.url(&format!("/webhook?{query}"))).await;
        assert_eq!(answer.status, 403, "{query}");
        assert!(!answer.text().contains('1'), "the challenge is not echoed");
    }
}

#[tokio::test]
async fn verification_with_a_missing_parameter_is_a_bad_request() {
    let app = spawn_app(&[]).await;
    for query in [
        "",
        "hub.challenge=1&hub.verify_token=test-verify-token",
        "hub.mode=subscribe&hub.verify_token=test-verify-token",
        "hub.mode=subscribe&hub.challenge=1",
    ] {
        let answer = get(&app.url(&format!("/webhook?{query}"))).await;
        assert_eq!(answer.status, 400, "{query}");
    }
}
