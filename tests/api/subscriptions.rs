//! `waba-gateway subscriptions` against a fake Graph API on 127.0.0.1:0 that records each
//! request and answers like Meta, errors and throttling included.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const TOKEN: &str = "EAAG-test-access-token-3f9a";
const WABA: &str = "310987654321001";

/// One request the fake Graph API received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: String,
    at: Instant,
}

/// A scripted answer: status, extra headers, body.
type Scripted = (u16, Vec<(&'static str, String)>, String);

struct FakeGraph {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeGraph {
    async fn start(script: Vec<Scripted>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let recorded = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, script) = (recorded.clone(), script.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let (seen, script) = (seen.clone(), script.clone());
                            async move {
                                let header = |name: &str| {
                                    request
                                        .headers()
                                        .get(name)
                                        .map(|v| v.to_str().expect("ascii").to_owned())
                                };
                                let entry = Seen {
                                    method: request.method().to_string(),
                                    path: request.uri().path().to_owned(),
                                    authorization: header("authorization"),
                                    content_type: header("content-type"),
                                    body: String::new(),
                                    at: Instant::now(),
                                };
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .expect("body")
                                    .to_bytes();
                                seen.lock().expect("lock").push(Seen {
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                    ..entry
                                });
                                let (status, headers, body) = script
                                    .lock()
                                    .expect("lock")
                                    .pop_front()
                                    .unwrap_or((500, vec![], "no scripted answer left".to_owned()));
                                let mut response =
                                    http::Response::new(Full::new(Bytes::from(body)));
                                *response.status_mut() =
                                    http::StatusCode::from_u16(status).expect("status");
                                response.headers_mut().insert(
                                    "content-type",
                                    "application/json".parse().expect("value"),
                                );
                                for (name, value) in headers {
                                    response
                                        .headers_mut()
                                        .insert(name, value.parse().expect("value"));
                                }
                                Ok::<_, Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Runs the binary with the Graph base URL pointed here and fast retries.
    async fn run(&self, line: &str, extra_env: &[(&str, &str)]) -> Output {
        let mut command = crate::helpers::binary();
        command
            .args(line.split_whitespace())
            .env("RUST_LOG", "debug")
            .env(
                "WABA_GATEWAY__GRAPH__BASE_URL",
                format!("http://{}", self.addr),
            )
            .env("WABA_GATEWAY__GRAPH__RETRY_BASE_DELAY_MS", "100")
            .env("WABA_GATEWAY__GRAPH__MAX_WAIT_MS", "5000")
            .envs(extra_env.iter().copied());
        tokio::task::spawn_blocking(move || command.output().expect("runs"))
            .await
            .expect("joined")
    }
}

fn ok(body: &str) -> Scripted {
    (200, vec![], body.to_owned())
}

fn graph_error(status: u16, code: i64, message: &str) -> Scripted {
    (
        status,
        vec![],
        format!(
            r#"{{"error":{{"message":"{message}","type":"OAuthException","code":{code},"error_subcode":2494055,"fbtrace_id":"A1b2C3d4E5f6"}}}}"#
        ),
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_token_never_shown(output: &Output) {
    assert!(!stdout(output).contains(TOKEN), "token on stdout");
    assert!(
        !stderr(output).contains(TOKEN),
        "token on stderr (logs included)"
    );
    assert!(!stderr(output).contains("EAAG"), "token on stderr");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_posts_subscribed_apps_with_the_bearer_token() {
    let graph = FakeGraph::start(vec![ok(r#"{"success":true}"#)]).await;
    let output = graph
        .run(
            &format!("subscriptions add --waba-id {WABA} --token {TOKEN}"),
            &[],
        )
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("Subscribed the app to WABA {WABA}.\n")
    );
    let seen = graph.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, format!("/v24.0/{WABA}/subscribed_apps"));
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(seen[0].body, "");
    assert_token_never_shown(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_with_an_override_sends_the_callback_and_verify_token() {
    let graph = FakeGraph::start(vec![ok(r#"{"success":true}"#)]).await;
    let url = "https://hooks.example.com/webhook/eu";
    let output = graph
        .run(&format!("subscriptions add --waba-id {WABA} --override-callback-url {url} --verify-token vt-123"),
            &[
                ("WABA_GATEWAY__GRAPH__ACCESS_TOKEN", TOKEN),
                ("WABA_GATEWAY__GRAPH__API_VERSION", "v23.0"),
            ],
        )
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("Subscribed the app to WABA {WABA}; its notifications go to {url}.\n")
    );
    let seen = graph.seen();
    assert_eq!(seen[0].path, format!("/v23.0/{WABA}/subscribed_apps"));
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).expect("JSON body");
    assert_eq!(
        body,
        serde_json::json!({"override_callback_uri": url, "verify_token": "vt-123"})
    );
    assert!(!stdout(&output).contains("vt-123") && !stderr(&output).contains("vt-123"));
    assert_token_never_shown(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_override_url_is_a_usage_error_and_sends_nothing() {
    let graph = FakeGraph::start(vec![]).await;
    for url in [
        "http://hooks.example.com/webhook",
        &format!("https://example.com/{}", "a".repeat(190)),
    ] {
        let output = graph
            .run(&format!("subscriptions add --waba-id {WABA} --token {TOKEN} --override-callback-url {url} --verify-token v"),
                &[],
            )
            .await;
        assert_eq!(output.status.code(), Some(2), "{url}");
        assert!(
            stderr(&output).contains("--override-callback-url"),
            "{}",
            stderr(&output)
        );
    }
    let output = graph
        .run(&format!("subscriptions add --waba-id {WABA} --token {TOKEN} --override-callback-url https://x.example"),
            &[],
        )
        .await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "an override needs its verify token"
    );
    assert!(graph.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_a_table_or_json() {
    let listing = r#"{"data":[{"whatsapp_business_api_data":{"link":"https://www.facebook.com/games/?app_id=8811","name":"Shop Gateway","id":"8811"}},{"whatsapp_business_api_data":{"link":"https://www.facebook.com/games/?app_id=9922","name":"CRM","id":"9922"},"override_callback_uri":"https://crm.example.com/hook"}]}"#;
    let graph = FakeGraph::start(vec![ok(listing), ok(listing)]).await;
    let token_file = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(token_file.path(), format!("{TOKEN}\n")).expect("write");
    let file_env = [(
        "WABA_GATEWAY__GRAPH__ACCESS_TOKEN_FILE",
        token_file.path().to_str().expect("utf-8"),
    )];
    let output = graph
        .run(&format!("subscriptions list --waba-id {WABA}"), &file_env)
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "NAME          ID    LINK                                         OVERRIDE CALLBACK\n\
         Shop Gateway  8811  https://www.facebook.com/games/?app_id=8811  -\n\
         CRM           9922  https://www.facebook.com/games/?app_id=9922  https://crm.example.com/hook\n"
    );
    let output = graph
        .run(
            &format!("subscriptions list --waba-id {WABA} --json"),
            &file_env,
        )
        .await;
    let apps: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        apps[1]["override_callback_uri"],
        "https://crm.example.com/hook"
    );
    assert_eq!(apps[0]["name"], "Shop Gateway");
    let seen = graph.seen();
    assert!(
        seen.iter().all(|s| s.method == "GET"
            && s.authorization.as_deref() == Some(&*format!("Bearer {TOKEN}")))
    );
    assert_token_never_shown(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_warns_then_deletes_and_refuses_without_confirmation() {
    let graph = FakeGraph::start(vec![ok(r#"{"success":true}"#)]).await;
    let output = graph
        .run(
            &format!("subscriptions remove --waba-id {WABA} --token {TOKEN}"),
            &[],
        )
        .await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "no terminal, no --yes: refused"
    );
    assert!(graph.seen().is_empty());
    let output = graph
        .run(
            &format!("subscriptions remove --waba-id {WABA} --token {TOKEN} --yes"),
            &[],
        )
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("stops webhooks for every phone number"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        stdout(&output),
        format!("Unsubscribed the app from WABA {WABA}.\n")
    );
    let seen = graph.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("DELETE", &*format!("/v24.0/{WABA}/subscribed_apps"))
    );
    assert_token_never_shown(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_error_is_one_line_with_message_code_and_trace_id_and_exit_1() {
    let graph = FakeGraph::start(vec![graph_error(400, 100, "(#100) Invalid WABA id")]).await;
    let output = graph
        .run(
            &format!("subscriptions list --waba-id {WABA} --token {TOKEN}"),
            &[],
        )
        .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr(&output);
    let last = stderr.lines().last().expect("a line");
    assert_eq!(
        last,
        "waba-gateway: Graph API error: (#100) Invalid WABA id (code 100, subcode 2494055, fbtrace_id A1b2C3d4E5f6)"
    );
    assert_eq!(graph.seen().len(), 1, "not a throttling code: no retry");
    assert_token_never_shown(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_with_growing_backoff_then_succeeds() {
    let graph = FakeGraph::start(vec![
        graph_error(
            400,
            80008,
            "(#80008) Too many calls to this WhatsApp Business account",
        ),
        graph_error(429, 130429, "Rate limit hit"),
        graph_error(400, 4, "(#4) Application request limit reached"),
        ok(r#"{"success":true}"#),
    ])
    .await;
    let output = graph
        .run(
            &format!("subscriptions add --waba-id {WABA} --token {TOKEN}"),
            &[],
        )
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let seen = graph.seen();
    assert_eq!(seen.len(), 4, "three throttled attempts, then success");
    let gaps: Vec<u128> = seen
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    // Base 100 ms, doubling, jitter in [d/2, d]: 50-100, 100-200, 200-400 ms (+ slack).
    for (gap, (low, high)) in gaps.iter().zip([(50, 180), (100, 280), (200, 480)]) {
        assert!((low..high).contains(gap), "gaps {gaps:?}");
    }
    assert_token_never_shown(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_gives_up_after_the_attempt_limit_with_a_clear_message() {
    let throttled = graph_error(400, 80007, "(#80007) Rate limit issues");
    let graph = FakeGraph::start(vec![
        throttled.clone(),
        throttled.clone(),
        throttled.clone(),
        ok("{}"),
    ])
    .await;
    let output = graph
        .run(
            &format!("subscriptions add --waba-id {WABA} --token {TOKEN}"),
            &[("WABA_GATEWAY__GRAPH__MAX_ATTEMPTS", "3")],
        )
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("gave up after 3 attempts"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("code 80007"),
        "{}",
        stderr(&output)
    );
    assert_eq!(graph.seen().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regain_access_estimate_beyond_the_wait_budget_gives_up_at_once() {
    let usage = r#"{"310987654321001":[{"type":"whatsapp_business_management","call_count":100,"total_cputime":30,"total_time":30,"estimated_time_to_regain_access":15}]}"#;
    let graph = FakeGraph::start(vec![(
        400,
        vec![("x-business-use-case-usage", usage.to_owned())],
        graph_error(400, 80008, "(#80008) Too many calls").2,
    )])
    .await;
    let started = Instant::now();
    let output = graph
        .run(
            &format!("subscriptions list --waba-id {WABA} --token {TOKEN}"),
            &[],
        )
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("asks to wait 15 minutes"),
        "{}",
        stderr(&output)
    );
    assert!(started.elapsed().as_secs() < 5);
    assert_eq!(graph.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_graph_api_is_a_clear_network_error() {
    let graph = FakeGraph::start(vec![]).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let output = graph
        .run(
            &format!("subscriptions list --waba-id {WABA} --token {TOKEN}"),
            &[("WABA_GATEWAY__GRAPH__BASE_URL", &format!("http://{closed}"))],
        )
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!(
            "cannot reach the Graph API at http://{closed}/v24.0/"
        )),
        "{}",
        stderr(&output)
    );
    assert_token_never_shown(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_and_a_missing_token_exits_78() {
    let graph = FakeGraph::start(vec![]).await;
    let output = graph.run("subscriptions list", &[]).await;
    assert_eq!(output.status.code(), Some(2), "--waba-id is required");
    let output = graph
        .run(
            &format!("subscriptions list --waba-id not-a-number --token {TOKEN}"),
            &[],
        )
        .await;
    assert_eq!(output.status.code(), Some(2));
    let output = graph
        .run(&format!("subscriptions list --waba-id {WABA}"), &[])
        .await;
    assert_eq!(output.status.code(), Some(78));
    assert!(
        stderr(&output).contains("no Graph API access token"),
        "{}",
        stderr(&output)
    );
    assert!(graph.seen().is_empty());
}

const APP_ID: &str = "1234567890123";

fn token_info(valid: bool) -> Scripted {
    ok(&format!(
        r#"{{"data":{{"app_id":"{APP_ID}","type":"SYSTEM_USER","application":"Shop","is_valid":{valid},"expires_at":0,"scopes":["whatsapp_business_management","whatsapp_business_messaging"]}}}}"#
    ))
}

fn subscribed(apps: &[(&str, &str)]) -> Scripted {
    let data: Vec<String> = apps
        .iter()
        .map(|(id, name)| {
            format!(
                r#"{{"whatsapp_business_api_data":{{"name":"{name}","id":"{id}","link":"https://www.facebook.com/games/?app_id={id}"}}}}"#
            )
        })
        .collect();
    ok(&format!(r#"{{"data":[{}]}}"#, data.join(",")))
}

/// Runs the doctor against the fake Graph API and the gateway's own verification endpoint.
async fn doctor(graph: &FakeGraph, callback: &str, verify_token: &str, json: bool) -> Output {
    let json = if json { " --json" } else { "" };
    graph
        .run(
            &format!(
                "subscriptions doctor --waba-id {WABA} --token {TOKEN} --callback-url {callback}{json}"
            ),
            // The gateway's configuration as doctor reads it: an app, with its secret.
            &[
                ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", verify_token),
                ("WABA_GATEWAY__APPS__DEFAULT__SECRET", "app-secret"),
            ],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_every_check_for_a_subscribed_app_and_a_working_endpoint() {
    let app = crate::helpers::spawn_app(&[]).await;
    let callback = app.url("/webhook");
    let graph = FakeGraph::start(vec![token_info(true), subscribed(&[(APP_ID, "Shop")])]).await;
    let output = doctor(&graph, &callback, crate::helpers::VERIFY_TOKEN, false).await;
    eprintln!("doctor, passing:\n{}", stdout(&output));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(lines.iter().all(|line| line.starts_with('✓')), "{lines:#?}");
    assert!(
        lines[0].contains(&format!("valid, for app {APP_ID}")),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(&format!("app {APP_ID} (Shop) is subscribed")),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("the account has no override"),
        "{}",
        lines[2]
    );
    assert!(lines[3].contains("echoed the challenge"), "{}", lines[3]);
    let seen = graph.seen();
    assert_eq!(seen[0].path, "/v24.0/debug_token");
    assert_eq!(seen[1].path, format!("/v24.0/{WABA}/subscribed_apps"));
    assert_token_never_shown(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_when_only_another_app_is_subscribed() {
    let app = crate::helpers::spawn_app(&[]).await;
    let graph = FakeGraph::start(vec![
        token_info(true),
        subscribed(&[("999000111", "Another CRM")]),
    ])
    .await;
    let output = doctor(
        &graph,
        &app.url("/webhook"),
        crate::helpers::VERIFY_TOKEN,
        false,
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "✗ app subscribed: app {APP_ID} is not subscribed to WABA {WABA}; subscribed: 999000111 (Another CRM)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "fix: waba-gateway subscriptions add --waba-id {WABA}"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_the_handshake_with_a_wrong_verify_token() {
    let app = crate::helpers::spawn_app(&[]).await;
    let graph = FakeGraph::start(vec![token_info(true), subscribed(&[(APP_ID, "Shop")])]).await;
    let output = doctor(&graph, &app.url("/webhook"), "not-the-token", true).await;
    assert_eq!(output.status.code(), Some(1));
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    let handshake = &checks[3];
    assert_eq!(handshake["check"], "verification handshake");
    assert_eq!(handshake["ok"], false);
    assert!(
        handshake["detail"]
            .as_str()
            .expect("detail")
            .contains("refused apps.default's verify token (403)"),
        "{handshake}"
    );
    assert!(
        handshake["fix"]
            .as_str()
            .expect("fix")
            .contains("set apps.default.verify_token"),
        "{handshake}"
    );
    assert!(
        checks[..3].iter().all(|check| check["ok"] == true),
        "{checks:?}"
    );
    assert!(!stdout(&output).contains("not-the-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_at_once_on_an_expired_token() {
    let graph = FakeGraph::start(vec![graph_error(
        400,
        190,
        "Error validating access token: Session has expired",
    )])
    .await;
    let output = doctor(&graph, "http://127.0.0.1:9/webhook", "t", false).await;
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    eprintln!("doctor, expired token:\n{text}");
    assert_eq!(text.lines().count(), 2, "one check and its fix:\n{text}");
    assert!(
        text.starts_with(
            "✗ access token: does not work: Error validating access token: Session has expired"
        ),
        "{text}"
    );
    assert!(
        text.contains("fix: create a new system-user token"),
        "{text}"
    );
    assert_eq!(graph.seen().len(), 1, "nothing else is asked");
    assert_token_never_shown(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_url_that_would_send_the_token_in_clear_is_refused() {
    let output = crate::helpers::binary()
        .args(["subscriptions", "list", "--waba-id", WABA, "--token", TOKEN])
        .env("WABA_GATEWAY__GRAPH__BASE_URL", "http://graph.example.com")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(78));
    assert!(
        stderr(&output).contains("must be https://"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_graph_errors_and_server_errors_are_retried() {
    let graph = FakeGraph::start(vec![
        (
            500,
            vec![],
            r#"{"error":{"message":"An unexpected error has occurred. Please retry your request later.","type":"OAuthException","is_transient":true,"code":2,"fbtrace_id":"T1"}}"#.to_owned(),
        ),
        (502, vec![], "<html>Bad Gateway</html>".to_owned()),
        subscribed(&[(APP_ID, "Shop")]),
    ])
    .await;
    let output = graph
        .run(
            &format!("subscriptions list --waba-id {WABA} --token {TOKEN} --json"),
            &[],
        )
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(graph.seen().len(), 3);
    assert!(stdout(&output).contains(APP_ID));
}

/// A proxy on loopback that records the head of each request and refuses it.
async fn refusing_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = vec![0; 4096];
            let read = stream.read(&mut head).await.unwrap_or(0);
            seen.lock()
                .expect("lock")
                .push(String::from_utf8_lossy(&head[..read]).into_owned());
            let _ = stream
                .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    (addr, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_calls_go_through_the_https_proxy_of_the_environment() {
    let (proxy, heads) = refusing_proxy().await;
    let run = move |base_url: &str, no_proxy: &str| {
        crate::helpers::binary()
            .args(["subscriptions", "list", "--waba-id", WABA, "--token", TOKEN])
            .env("WABA_GATEWAY__GRAPH__BASE_URL", base_url)
            .env("WABA_GATEWAY__GRAPH__MAX_ATTEMPTS", "1")
            .env("HTTPS_PROXY", format!("http://{proxy}"))
            .env("NO_PROXY", no_proxy)
            .output()
            .expect("runs")
    };
    let output = tokio::task::spawn_blocking(move || {
        (
            run("https://graph.example.test", ""),
            run("https://127.0.0.2:9", "127.0.0.2"),
        )
    })
    .await
    .expect("joined");
    let (proxied, exempt) = output;
    assert_eq!(proxied.status.code(), Some(1), "{}", stderr(&proxied));
    assert!(
        stderr(&proxied).contains("cannot reach the Graph API"),
        "{}",
        stderr(&proxied)
    );
    assert_token_never_shown(&proxied);
    let heads = heads.lock().expect("lock").clone();
    assert_eq!(
        heads.len(),
        1,
        "only the proxied call reached the proxy: {heads:?}"
    );
    assert!(
        heads[0].starts_with("CONNECT graph.example.test:443 HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(
        !heads[0].contains(TOKEN),
        "the token only travels inside the tunnel"
    );
    assert_eq!(exempt.status.code(), Some(1));
    assert!(stderr(&exempt).contains("127.0.0.2"), "{}", stderr(&exempt));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_graph_or_a_proxy_echoes_is_never_printed() {
    let graph = FakeGraph::start(vec![
        graph_error(
            400,
            190,
            &format!("Invalid OAuth access token - Cannot parse access token {TOKEN}"),
        ),
        (
            403,
            vec![],
            format!("<html>denied by proxy: Authorization: Bearer {TOKEN}</html>"),
        ),
    ])
    .await;
    for expected in ["Graph API error: Invalid OAuth", "unexpected answer"] {
        let output = graph
            .run(
                &format!("subscriptions list --waba-id {WABA} --token {TOKEN}"),
                &[],
            )
            .await;
        let printed = format!("{}{}", stdout(&output), stderr(&output));
        assert_eq!(output.status.code(), Some(1), "{printed}");
        assert!(printed.contains(expected), "{printed}");
        assert!(printed.contains("***"), "the token is masked: {printed}");
        assert!(!printed.contains(TOKEN), "{printed}");
    }
}
