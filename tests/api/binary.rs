//! The `waba-gateway` binary as users run it: exit codes, output, and the README's
//! quickstart (serve on embedded Kafka, sign, POST, tail).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_waba-gateway"));
    command
        .env_remove("WABA_GATEWAY_CONFIG")
        .env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("WABA_GATEWAY__") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn check_config_exits_78_and_names_each_problem() {
    let output = binary()
        .args(["check-config"])
        .env("WABA_GATEWAY__KAFKA__BROKERS", "kafka-1:9092")
        .env("WABA_GATEWAY__APPS__SHOP__SECRET", "s")
        .env("WABA_GATEWAY__SERVER__MAX_BODY_BYTES", "12")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("apps.shop.verify_token is missing"),
        "{stderr}"
    );
    assert!(stderr.contains("server.max_body_bytes = 12"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn check_config_rejects_an_unknown_key_by_name() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, "[kafka]\nbroker = \"k:9092\"\n").expect("write");
    let output = binary()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `broker`"), "{stderr}");
}

#[test]
fn check_config_prints_the_effective_settings_with_secrets_redacted() {
    let output = binary()
        .args(["check-config"])
        .env("WABA_GATEWAY__KAFKA__BROKERS", "kafka-1:9092")
        .env("WABA_GATEWAY__APPS__DEFAULT__SECRET", "super-secret-value")
        .env("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", "token-value")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("brokers = \"kafka-1:9092\""), "{stdout}");
    assert!(stdout.contains("secret = \"[redacted]\""), "{stdout}");
    assert!(!stdout.contains("super-secret-value") && !stdout.contains("token-value"));
}

#[test]
fn sign_prints_the_signature_of_a_file_or_standard_input() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("body.json");
    let body = fixture("messages_text.json");
    std::fs::write(&file, &body).expect("write");
    let expected = "sha256=5a71f8c62be8ea6a57bd9261655dc708f313f289b2193834a1f524c188b03573\n";
    let output = binary()
        .args(["sign", "--secret", "fixture-app-secret"])
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
    let mut child = binary()
        .args(["sign", "--secret", "fixture-app-secret", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&body)
        .expect("write");
    let output = child.wait_with_output().expect("exits");
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
}

#[test]
fn a_usage_error_exits_2() {
    let output = binary().args(["serve", "--bogus"]).output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
}

/// The README's quickstart, as a user runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_on_embedded_kafka_and_tail_shows_the_record() {
    let dir = tempfile::tempdir().expect("dir");
    let mut serve = binary()
        .arg("serve")
        .current_dir(dir.path())
        .env("WABA_GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
        .env("WABA_GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let mut log = BufReader::new(serve.stderr.take().expect("stderr"));
    let (mut public, mut admin) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut line = String::new();
    while (public.is_none() || admin.is_none()) && Instant::now() < deadline {
        line.clear();
        if log.read_line(&mut line).expect("log") == 0 {
            break;
        }
        assert!(!line.contains("demo-app-secret") || line.contains("WARN"));
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(name))
                .map(str::to_owned)
        };
        public = public.or(field("public="));
        admin = admin.or(field("admin="));
    }
    let (public, admin) = (
        public.expect("public address logged"),
        admin.expect("admin address logged"),
    );
    std::thread::spawn(move || for _ in log.lines() {});

    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&format!("http://{admin}/readyz")).await.status != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let body = fixture("messages_text.json");
    let file = dir.path().join("sample.json");
    std::fs::write(&file, &body).expect("write");
    let signed = binary()
        .args(["sign", "--secret", "demo-app-secret"])
        .arg(&file)
        .output()
        .expect("sign");
    let signature = String::from_utf8(signed.stdout).expect("utf-8");
    let answer = post(
        &format!("http://{public}/webhook"),
        &body,
        &[
            ("x-hub-signature-256", signature.trim()),
            ("content-type", "application/json"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    let tail = binary()
        .args(["tail", "--field", "messages", "--exit"])
        .current_dir(dir.path())
        .output()
        .expect("tail");
    assert!(
        tail.status.success(),
        "{}",
        String::from_utf8_lossy(&tail.stderr)
    );
    let stdout = String::from_utf8(tail.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let record: serde_json::Value = serde_json::from_str(lines[0]).expect("one JSON line");
    assert_eq!(record["topic"], "whatsapp.messages");
    assert_eq!(record["key"], "420123456789002:4915112345678");
    assert_eq!(record["headers"]["wa-field"], "messages");
    let envelope = &record["value"];
    assert_eq!(envelope["app"], "default");
    assert_eq!(envelope["field"], "messages");
    assert_eq!(envelope["entry_id"], "310987654321001");
    assert_eq!(envelope["event_id"], record["headers"]["wa-event-id"]);
    let sent: serde_json::Value = serde_json::from_slice(&body).expect("fixture");
    assert_eq!(envelope["value"], sent["entry"][0]["changes"][0]["value"]);

    let status = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(25);
    let exit = loop {
        if let Some(exit) = serve.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0), "SIGTERM exits 0");
}
