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

#[tokio::test]
async fn an_empty_challenge_is_a_bad_request_like_a_missing_one() {
    let app = spawn_app(&[]).await;
    for query in [
        format!("hub.mode=subscribe&hub.challenge=&hub.verify_token={VERIFY_TOKEN}"),
        format!("hub.mode=subscribe&hub.challenge&hub.verify_token={VERIFY_TOKEN}"),
    ] {
        let answer = get(&app.url(&format!("/webhook?{query}"))).await;
        assert_eq!(answer.status, 400, "{query}");
    }
}

#[tokio::test]
async fn a_challenge_that_is_not_utf8_is_echoed_byte_for_byte() {
    let app = spawn_app(&[]).await;
    let answer = get(&app.url(&format!(
        "/webhook?hub.mode=subscribe&hub.challenge=%FF%FEab%00c+d&hub.verify_token={VERIFY_TOKEN}"
    )))
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.as_ref(), b"\xff\xfeab\x00c d");
    assert_eq!(answer.headers["content-type"], "text/plain");
}

#[tokio::test]
async fn a_callback_url_with_a_trailing_slash_is_the_apps_path_too() {
    let app = spawn_app(&[]).await;
    let answer = get(&app.url(&format!(
        "/webhook/?hub.mode=subscribe&hub.challenge=42&hub.verify_token={VERIFY_TOKEN}"
    )))
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "42");
    let answer = post_signed(
        &app.url("/webhook/"),
        &fixture("messages_text.json"),
        SECRET,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(app.memory.as_ref().expect("memory").records().len(), 1);
    assert_eq!(get(&app.url("/webhook//")).await.status, 404);
}
