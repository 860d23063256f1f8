//! The `waba-gateway` binary as users run it: exit codes, output, and the README's
//! quickstart (serve on embedded Kafka, sign, POST, tail).

use std::io::Write;
use std::process::Stdio;

use crate::helpers::*;

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
    assert!(
        stderr.contains("kafka.broker (") && stderr.contains("gateway.toml line 2)"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean \"brokers\"?"), "{stderr}");
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
fn check_config_shows_the_telemetry_table_as_the_otel_variables_set_it() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[telemetry]\nendpoint = \"http://file-collector:4318\"\nsampler = \"always_on\"\n",
    )
    .expect("write");
    let output = binary()
        .args(["check-config", "--config"])
        .arg(&config)
        .env("WABA_GATEWAY__APPS__DEFAULT__SECRET", "s")
        .env("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", "t")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "api-key=collector-key-value")
        .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        .env("OTEL_TRACES_SAMPLER_ARG", "0.1")
        .env("OTEL_SERVICE_NAME", "wa-edge")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let table = &stdout[stdout.find("[telemetry]").expect("the table")..];
    for line in [
        "endpoint = \"http://collector:4318\"",
        "headers = \"[redacted]\"",
        "sampler = \"parentbased_traceidratio\"",
        "sampler_arg = 0.1",
        "service_name = \"wa-edge\"",
        "protocol = \"http/protobuf\"",
    ] {
        assert!(
            table.lines().any(|shown| shown == line),
            "{line} not in\n{table}"
        );
    }
    assert!(!stdout.contains("collector-key-value"));

    // A value no SDK would take is named with its variable, and nothing starts.
    let output = binary()
        .args(["check-config", "--config"])
        .arg(&config)
        .env("WABA_GATEWAY__APPS__DEFAULT__SECRET", "s")
        .env("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", "t")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_TRACES_SAMPLER_ARG", "2")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(
            "telemetry.protocol (OTEL_EXPORTER_OTLP_PROTOCOL) = \"grpc\" is not supported"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("telemetry.sampler_arg (OTEL_TRACES_SAMPLER_ARG) = 2 must be from 0 to 1"),
        "{stderr}"
    );
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
    let serve = GatewayProcess::start(dir.path(), &[]);
    serve.wait_ready().await;
    let public = serve.public.clone();

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
    // The 200 came once the body was spooled; the forwarder then produces it.
    let produced = r#"waba_gateway_kafka_records_total{outcome="ok",topic="whatsapp.messages"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while serve.metric(produced).await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "never produced");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

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

    assert_eq!(serve.signal("TERM").code(), Some(0), "SIGTERM exits 0");
}

/// Runs the binary with `args`, which must be a usage error (exit 2, nothing on standard
/// output); returns what it said on standard error.
/// What `command` prints on standard output; fails, showing its standard error, unless it
/// exits 0.
fn stdout_of_success(mut command: std::process::Command) -> String {
    let output = command.output().expect("runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

fn usage_error(args: &[&str]) -> String {
    let output = binary()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2), "{args:?}");
    assert!(
        output.stdout.is_empty(),
        "{args:?} printed on standard output"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn tail_refuses_a_field_it_does_not_know_and_lists_the_known_ones() {
    let stderr = usage_error(&["tail", "--field", "mesages", "--brokers", "127.0.0.1:9"]);
    assert!(stderr.contains("--field \"mesages\""), "{stderr}");
    for known in ["messages", "message_template_status_update", "deadletter"] {
        assert!(stderr.contains(known), "{known} missing from: {stderr}");
    }
}

#[test]
fn tail_with_max_records_0_is_a_usage_error() {
    let stderr = usage_error(&["tail", "--max-records", "0", "--brokers", "127.0.0.1:9"]);
    assert!(stderr.contains("--max-records"), "{stderr}");
}

#[test]
fn an_empty_secret_or_token_is_a_usage_error() {
    // usage_error also checks that no signature is printed.
    let sign = usage_error(&["sign", "--secret", "", "-"]);
    assert!(sign.contains("--secret is empty"), "{sign}");
    let list = usage_error(&["subscriptions", "list", "--waba-id", "1", "--token", ""]);
    assert!(list.contains("--token is empty"), "{list}");
}

/// Every command with examples in its `--help`.
const WITH_EXAMPLES: &[&[&str]] = &[
    &["serve"],
    &["check-config"],
    &["sign"],
    &["tail"],
    &["subscriptions"],
    &["subscriptions", "add"],
    &["subscriptions", "list"],
    &["subscriptions", "remove"],
    &["subscriptions", "doctor"],
    &["replay"],
    &["completions"],
    &["spool"],
    &["spool", "status"],
    &["spool", "drain"],
    &["topics", "apply"],
    &["topics", "check"],
    &["topics", "asyncapi"],
];

/// The example lines of `command --help`, continuation lines joined, comments dropped.
fn help_examples(command: &[&str]) -> Vec<String> {
    let output = binary().args(command).arg("--help").output().expect("runs");
    let help = String::from_utf8_lossy(&output.stdout);
    let Some((_, examples)) = help.split_once("\nExamples:\n") else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in examples.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            continue;
        }
        pending.push_str(line);
        let command = match pending.split_once("  #") {
            Some((command, _)) => command.trim().to_owned(),
            None => pending.trim().to_owned(),
        };
        lines.push(command);
        pending.clear();
    }
    lines
}

#[test]
fn every_commands_help_ends_with_examples() {
    for command in WITH_EXAMPLES.iter().copied() {
        let output = binary().args(command).arg("--help").output().expect("runs");
        assert_eq!(output.status.code(), Some(0), "{command:?}");
        let help = String::from_utf8_lossy(&output.stdout);
        let (_, examples) = help
            .split_once("\nExamples:\n")
            .unwrap_or_else(|| panic!("{command:?} --help has no examples:\n{help}"));
        let lines: Vec<&str> = examples.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "{command:?}");
        assert!(
            lines
                .iter()
                .any(|line| line.contains(&format!("waba-gateway {}", command.join(" ")))),
            "{command:?} examples do not show the command:\n{examples}"
        );
    }
}

/// A second `serve` that cannot bind its port exits without touching the address file
/// that points `tail` at the running gateway's embedded broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_leaves_the_embedded_address_file_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let running = GatewayProcess::start(dir.path(), &[]);
    running.wait_ready().await;
    let file = dir.path().join("data/embedded-kafka.addr");
    let before = std::fs::read_to_string(&file).expect("the running gateway wrote it");
    let failed = binary()
        .arg("serve")
        .current_dir(dir.path())
        .env("WABA_GATEWAY__SERVER__LISTEN", &running.public)
        .env("WABA_GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
        .env("WABA_GATEWAY__DELIVERY__SPOOL_DIR", "data/second-spool")
        .output()
        .expect("runs");
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("server.listen"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).expect("still there"), before);
    assert_eq!(running.signal("TERM").code(), Some(0));
}

/// Runs `command` with a configuration file holding `toml` (see [`run_bounded`]).
fn run_with_config(command: &str, toml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, toml).expect("write");
    run_bounded(
        &[command.as_ref(), "--config".as_ref(), file.as_os_str()],
        dir.path(),
        &[],
    )
}

/// An app and unreachable brokers, then the `[kafka.librdkafka]` table's header.
const LIBRDKAFKA_HEAD: &str = "[apps.default]\nsecret = \"s\"\nverify_token = \"t\"\n[kafka]\n\
                               brokers = \"127.0.0.1:9\"\n[kafka.librdkafka]\n";

#[test]
fn no_librdkafka_value_that_may_be_secret_is_ever_printed() {
    let config = format!(
        "{LIBRDKAFKA_HEAD}{}",
        r#""security.protocol" = "SASL_SSL"
"sasl.mechanisms" = "SCRAM-SHA-512"
"sasl.username" = "gateway"
"sasl.password" = "HUNTER1"
"sasl.jaas.config" = "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"gateway\" password=\"HUNTER2\";"
"sasl.pasword" = "HUNTER3"
"#
    );
    for command in ["check-config", "serve"] {
        let (code, printed) = run_with_config(command, &config);
        assert_eq!(code, Some(78), "{command}: {printed}");
        assert!(
            !printed.contains("HUNTER"),
            "{command} printed a secret:\n{printed}"
        );
        for key in ["\"sasl.jaas.config\"", "\"sasl.pasword\""] {
            assert!(
                printed.contains(key),
                "{command} does not name {key}:\n{printed}"
            );
        }
    }
    let valid = config
        .lines()
        .filter(|line| !line.starts_with("\"sasl.jaas") && !line.starts_with("\"sasl.paswo"))
        .collect::<Vec<_>>()
        .join("\n");
    let (code, printed) = run_with_config("check-config", &valid);
    assert_eq!(code, Some(0), "{printed}");
    assert!(!printed.contains("HUNTER"), "{printed}");
    assert!(
        printed.contains("\"sasl.password\" = \"[redacted]\""),
        "{printed}"
    );
    assert!(
        printed.contains("\"sasl.username\" = \"gateway\""),
        "{printed}"
    );
}

#[test]
fn an_invalid_librdkafka_value_is_a_configuration_error_quoting_only_safe_values() {
    let config = format!(
        "{LIBRDKAFKA_HEAD}{}",
        r#""linger.ms" = "soon"
"ssl.key.password" = ""
"security.protocol" = "carrier-pigeon"
"#
    );
    let (code, printed) = run_with_config("check-config", &config);
    assert_eq!(code, Some(78), "{printed}");
    assert!(
        printed.contains("kafka.librdkafka.\"linger.ms\" = \"soon\" is not a valid value"),
        "{printed}"
    );
    assert!(
        printed.contains("kafka.librdkafka.\"security.protocol\" = \"carrier-pigeon\""),
        "{printed}"
    );
}

/// Runs the binary with `args` in `dir` with `env` on top of loopback listeners, bounded
/// to 20 s (a `serve` that is not refused is stopped); returns the exit code and
/// everything printed.
pub(crate) fn run_bounded(
    args: &[&std::ffi::OsStr],
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let mut child = binary()
        .args(args)
        .current_dir(dir)
        .env("WABA_GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
        .env("WABA_GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("waits").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), printed)
}

#[test]
fn check_config_and_serve_refuse_what_serve_cannot_run_with_exit_78() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("a-file"), "").expect("write");
    let cases: [(&[(&str, &str)], &str); 7] = [
        (
            &[
                ("WABA_GATEWAY__SERVER__LISTEN", "0.0.0.0:18480"),
                ("WABA_GATEWAY__ADMIN__LISTEN", "127.0.0.1:18480"),
            ],
            "cannot both be bound",
        ),
        (
            &[("WABA_GATEWAY__DELIVERY__SPOOL_DIR", "a-file")],
            "delivery.spool_dir = \"a-file\" is a file",
        ),
        (
            &[("WABA_GATEWAY__DELIVERY__SPOOL_DIR", "a-file/spool")],
            "which is not a folder",
        ),
        (
            &[(
                "WABA_GATEWAY__DELIVERY__SPOOL_DIR",
                "/proc/waba-gateway-spool",
            )],
            "cannot be written",
        ),
        (
            &[("WABA_GATEWAY__DELIVERY__SPOOL_DIR", "")],
            "delivery.spool_dir = \"\" is empty",
        ),
        (
            &[("WABA_GATEWAY__GRAPH__BASE_URL", "graph.facebook.com")],
            "graph.base_url = \"graph.facebook.com\" must be https://",
        ),
        (
            &[("WABA_GATEWAY__LOG__LEVEL", "warning")],
            "log.level = \"warning\" is not a log filter",
        ),
    ];
    for (env, expected) in cases {
        for command in ["check-config", "serve"] {
            let (code, printed) = run_bounded(&[command.as_ref()], dir.path(), env);
            assert_eq!(code, Some(78), "{command} {env:?}: {printed}");
            assert!(printed.contains(expected), "{command} {env:?}: {printed}");
        }
    }
    assert!(
        !dir.path().join("data").exists(),
        "nothing was started or created"
    );
}

#[test]
fn a_variable_with_one_underscore_after_the_prefix_gets_a_warning() {
    let output = binary()
        .args(["check-config"])
        .env("WABA_GATEWAY_KAFKA__BROKERS", "kafka-1:9092")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: WABA_GATEWAY_KAFKA__BROKERS is not read"),
        "{stderr}"
    );
    assert!(
        stderr.contains("as in WABA_GATEWAY__KAFKA__BROKERS"),
        "{stderr}"
    );
}

/// With no broker reachable, the log says so once in the gateway's words instead of
/// librdkafka's errors many times a second, and SIGTERM ends the process at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_kafka_is_logged_once_and_does_not_hold_the_exit_back() {
    let dir = tempfile::tempdir().expect("dir");
    let mut serve = GatewayProcess::start(
        dir.path(),
        &[
            ("WABA_GATEWAY__KAFKA__BROKERS", "127.0.0.1:1"),
            ("WABA_GATEWAY__APPS__DEFAULT__SECRET", "s"),
            ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", "t"),
        ],
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let asked = std::time::Instant::now();
    assert_eq!(serve.signal_and_wait("TERM").code(), Some(0));
    let exit = asked.elapsed();
    let log = serve.log();
    let unreachable = one_line(&log, "Kafka is unreachable");
    assert!(unreachable.contains("kafka.brokers=127.0.0.1:1"), "{log}");
    assert!(
        unreachable.contains("Connection refused"),
        "what was tried: {log}"
    );
    let librdkafka = log
        .lines()
        .filter(|line| line.contains("librdkafka"))
        .count();
    assert!(
        librdkafka <= 1,
        "{librdkafka} librdkafka lines in 3 s:\n{log}"
    );
    // Not held back until shutdown.drain_timeout_ms (20 s) by records that cannot go;
    // bounded loosely, as a loaded machine is slow to stop a process.
    assert!(
        exit < std::time::Duration::from_secs(5),
        "exited {exit:?} after SIGTERM:\n{log}"
    );
}

#[test]
fn completions_are_written_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _waba__gateway"),
        ("zsh", "#compdef waba-gateway"),
        ("fish", "complete -c waba-gateway"),
    ] {
        let output = binary()
            .args(["completions", shell])
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(script.contains(marker), "{shell}: {marker} missing");
        for command in ["subscriptions", "replay", "doctor", "check-config"] {
            assert!(script.contains(command), "{shell}: {command} missing");
        }
    }
    let unknown = binary()
        .args(["completions", "powershell"])
        .output()
        .expect("runs");
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn librdkafka_properties_can_come_from_files_and_their_values_never_show() {
    let dir = tempfile::tempdir().expect("dir");
    let password = dir.path().join("password");
    let linger = dir.path().join("linger");
    std::fs::write(&password, "HUNTER-FILE\n").expect("write");
    std::fs::write(&linger, "soon").expect("write");
    let config = |files: &str| {
        format!(
            "[apps.default]\nsecret = \"s\"\nverify_token = \"t\"\n[kafka]\nbrokers = \
             \"127.0.0.1:9\"\n[kafka.librdkafka]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
             \"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"gateway\"\n\
             [kafka.librdkafka_files]\n{files}"
        )
    };
    let valid = config(&format!(
        "\"sasl.password\" = {:?}\n",
        password.display().to_string()
    ));
    let (code, printed) = run_with_config("check-config", &valid);
    assert_eq!(code, Some(0), "{printed}");
    assert!(!printed.contains("HUNTER"), "{printed}");
    assert!(
        printed.contains(&format!(
            "\"sasl.password\" = {:?}",
            password.display().to_string()
        )),
        "the file's path is shown: {printed}"
    );

    let missing = config("\"sasl.password\" = \"/nonexistent/kafka-password\"\n");
    for command in ["check-config", "serve"] {
        let (code, printed) = run_with_config(command, &missing);
        assert_eq!(code, Some(78), "{command}: {printed}");
        assert!(
            printed.contains(
                "kafka.librdkafka_files.\"sasl.password\" = /nonexistent/kafka-password: cannot be read"
            ),
            "{command}: {printed}"
        );
    }

    // Even a property whose value is usually shown is not, when it comes from a file.
    let invalid = config(&format!(
        "\"linger.ms\" = {:?}\n",
        linger.display().to_string()
    ));
    let (code, printed) = run_with_config("check-config", &invalid);
    assert_eq!(code, Some(78), "{printed}");
    assert!(
        printed.contains("kafka.librdkafka.\"linger.ms\""),
        "{printed}"
    );
    assert!(!printed.contains("soon"), "{printed}");
}

/// The bash script completes past the first word: a subcommand's subcommands, its options,
/// and an option's values, in a real bash.
#[test]
fn bash_completes_subcommands_options_and_values_past_the_first_word() {
    let script = binary()
        .args(["completions", "bash"])
        .output()
        .expect("runs");
    assert!(script.status.success());
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("waba-gateway.bash");
    std::fs::write(&path, &script.stdout).expect("written");
    let probe = format!(
        r#"source '{}'
function=$(complete -p waba-gateway | sed 's/.*-F \([^ ]*\).*/\1/')
words() {{
  COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMPREPLY=()
  "$function" waba-gateway "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD - 1]}}"
  echo "${{COMPREPLY[*]}}"
}}
words waba-gateway spool ''
words waba-gateway spool drain --
words waba-gateway tail --from ''
"#,
        path.display()
    );
    let output = std::process::Command::new("bash")
        .args(["-c", &probe])
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        lines[0].contains("drain") && lines[0].contains("status"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("--dir") && lines[1].contains("--timeout-seconds"),
        "{stdout}"
    );
    assert_eq!(lines[2], "beginning end", "{stdout}");
}

/// Output into a pipe whose reader is gone (`| head`) ends the command quietly, exit 0,
/// never with a panic.
#[test]
fn no_command_panics_on_a_closed_pipe() {
    for args in [
        vec!["completions", "fish"],
        vec!["completions", "bash"],
        vec!["sign", "--secret", "s", "-"],
    ] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = binary()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// The README's quickstart, as printed: `serve` with nothing configured, then the second
/// block pasted as one, back to back. `tail --exit` prints the notification just posted,
/// although in `spool` mode it reaches Kafka a moment after the 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quickstart_runs_as_printed() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let quickstart = readme
        .split_once("## Quickstart")
        .and_then(|(_, rest)| rest.split_once("\n## "))
        .map(|(section, _)| section)
        .expect("a Quickstart section");
    let blocks: Vec<&str> = quickstart
        .split("```sh\n")
        .skip(1)
        .map(|block| block.split_once("```").expect("a closed block").0)
        .collect();
    assert_eq!(blocks[0].trim(), "cargo run --release -- serve");
    let script = blocks[1];
    // The repository, as the block expects it: the binary and the fixture where it looks.
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("target/release")).expect("dir");
    std::os::unix::fs::symlink(
        binary_path(),
        dir.path().join("target/release/waba-gateway"),
    )
    .expect("link");
    std::fs::create_dir_all(dir.path().join("tests/fixtures")).expect("dir");
    std::fs::write(
        dir.path().join("tests/fixtures/messages_text.json"),
        fixture("messages_text.json"),
    )
    .expect("fixture");
    // `cargo run --release -- serve` is the binary with no arguments but `serve`; on
    // loopback only, at the ports the block uses.
    let gateway = GatewayProcess::spawn(
        {
            let mut command = binary();
            command.arg("serve");
            command
        },
        dir.path(),
        &[
            ("WABA_GATEWAY__SERVER__LISTEN", "127.0.0.1:8080"),
            ("WABA_GATEWAY__ADMIN__LISTEN", "127.0.0.1:9090"),
        ],
    );
    gateway.wait_ready().await;
    let output = without_settings(std::process::Command::new("bash"))
        .args(["-c", script])
        .current_dir(dir.path())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("quickstart printed:\n{stdout}{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|value: &serde_json::Value| value.get("topic").is_some())
        .collect();
    assert_eq!(records.len(), 1, "{stdout}");
    assert_eq!(records[0]["topic"], "whatsapp.messages");
    assert_eq!(
        records[0]["value"]["value"]["messages"][0]["id"],
        "wamid.GW1763770001AAA="
    );
}

/// `tail` prints one compact JSON line per record, even for a value written over many
/// lines (a pretty-printed body kept as a dead letter), and reads an item kind's override
/// topic by `--field messages.status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_one_line_per_record_and_reads_item_topics_by_kind() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[routing]\nsplit = \"item\"\n[kafka.topics]\n\"messages.status\" = \"wa.statuses\"\n",
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    let gateway = GatewayProcess::start(
        dir.path(),
        &[
            ("WABA_GATEWAY_CONFIG", config),
            ("WABA_GATEWAY__KAFKA__BROKERS", &brokers),
            ("WABA_GATEWAY__KAFKA__CREATE_TOPICS", "false"),
            ("WABA_GATEWAY__DELIVERY__ACK", "kafka"),
            ("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET),
            ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", VERIFY_TOKEN),
        ],
    );
    gateway.wait_ready().await;
    let pretty = b"{\n  \"object\": \"page\",\n  \"note\": \"two\\nlines\"\n}\n";
    assert_eq!(try_notify(&gateway.url(), pretty).await, Some(200));
    assert_eq!(
        try_notify(&gateway.url(), &fixture("messages_status_delivered.json")).await,
        Some(200)
    );
    let tail = |field: &str| {
        let mut command = binary();
        command
            .args(["tail", "--field", field, "--exit", "--brokers", &brokers])
            .args(["--config", config]);
        stdout_of_success(command)
    };
    let dead = tail("deadletter");
    let lines: Vec<&str> = dead.lines().collect();
    assert_eq!(lines.len(), 1, "one line for one record:\n{dead}");
    let record: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
    assert_eq!(
        record["value"],
        serde_json::json!({"object": "page", "note": "two\nlines"})
    );
    assert_eq!(record["headers"]["wa-error"], "missing_entry");
    let statuses = tail("messages.status");
    let lines: Vec<&str> = statuses.lines().collect();
    assert_eq!(lines.len(), 1, "{statuses}");
    let record: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
    assert_eq!(record["topic"], "wa.statuses");
    assert_eq!(record["headers"]["wa-item-kind"], "status");
}

/// Every example of every `--help` runs: in a folder laid out as the examples expect
/// (`gateway.toml`, also named by `WABA_GATEWAY_CONFIG`, and `body.json`), against a mock Kafka for `kafka:9092` and a Graph that
/// does not answer, with the destinations of redirections under the folder. None may be a
/// usage error (2), a bad configuration (78) or a command the shell cannot find (127); a
/// command that runs until stopped (`serve`, `tail`) is stopped after a few seconds.
#[test]
fn every_help_example_runs() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("dir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("dir");
    std::os::unix::fs::symlink(binary_path(), bin.join("waba-gateway")).expect("link");
    std::fs::write(
        dir.path().join("gateway.toml"),
        format!(
            "[apps.default]\nsecret = \"s\"\nverify_token = \"t\"\n[kafka]\nbrokers = \
             \"{brokers}\"\ncreate_topics = false\n[graph]\nbase_url = \"http://127.0.0.1:9\"\n\
             access_token = \"token\"\nmax_attempts = 1\n"
        ),
    )
    .expect("config");
    std::fs::write(dir.path().join("body.json"), fixture("messages_text.json")).expect("body");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    for command in WITH_EXAMPLES.iter().copied() {
        for example in help_examples(command) {
            let script = example
                .replace("kafka:9092", &brokers)
                .replace("/etc/bash_completion.d/", "./")
                .replace("\"${fpath[1]}/", "\"./")
                .replace("~/.config/fish/completions/", "./");
            assert!(!script.contains(" /etc/"), "{script}");
            let mut child = without_settings(std::process::Command::new("bash"))
                .args(["-c", &format!("set -o pipefail; {script}")])
                .current_dir(dir.path())
                .env("PATH", &path)
                // An operator's shell: the configuration found by its variable.
                .env("WABA_GATEWAY_CONFIG", "gateway.toml")
                .env("APP_SECRET", "app-secret")
                .env("TOKEN", "token")
                .env("WABA_GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
                .env("WABA_GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
                .env("WABA_GATEWAY__GRAPH__BASE_URL", "http://127.0.0.1:9")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("bash runs");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
            let code = loop {
                if let Some(status) = child.try_wait().expect("waits") {
                    break status.code();
                }
                if std::time::Instant::now() > deadline {
                    let _ = std::process::Command::new("pkill")
                        .args(["-KILL", "-P", &child.id().to_string()])
                        .status();
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            // `remove` without --yes asks; with no terminal to ask on, it says so.
            let asks = stderr.contains("without confirmation: pass --yes");
            assert!(
                !matches!(code, Some(2 | 78 | 127)) || (asks && code == Some(2)),
                "{command:?} example `{example}` exits {code:?}: {stderr}"
            );
            ran += 1;
        }
    }
    assert!(ran >= 40, "{ran} examples");
    eprintln!("{ran} help examples ran");
}

/// schemas/asyncapi.json is what `topics asyncapi` prints for the default configuration:
/// regenerate it with `waba-gateway topics asyncapi > schemas/asyncapi.json` when the
/// topics, headers or messages change.
#[test]
fn the_checked_in_asyncapi_document_is_the_commands_output() {
    let mut command = without_settings(binary());
    command.args(["topics", "asyncapi"]);
    let printed = stdout_of_success(command);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/asyncapi.json");
    let checked_in = std::fs::read_to_string(&path).expect("schemas/asyncapi.json");
    assert!(
        printed == checked_in,
        "schemas/asyncapi.json differs from `waba-gateway topics asyncapi`: regenerate it"
    );
    let document: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
    assert_eq!(document["asyncapi"], "3.0.0");
    assert_eq!(
        document["info"]["version"],
        env!("CARGO_PKG_VERSION"),
        "the document names the gateway's version"
    );
}

#[test]
fn replay_filters_that_can_match_nothing_are_usage_errors() {
    let stderr = usage_error(&["replay", "--from", "deadletter", "--reason", "bogus"]);
    assert!(
        stderr.contains("invalid value 'bogus' for '--reason")
            && stderr.contains("invalid_json")
            && stderr.contains("no_entries"),
        "{stderr}"
    );
    let stderr = usage_error(&[
        "replay",
        "--from",
        "deadletter",
        "--since",
        "2026-12-02T00:00:00Z",
        "--until",
        "2026-12-01T00:00:00Z",
    ]);
    assert!(
        stderr.contains("--since 2026-12-02T00:00:00Z is after --until 2026-12-01T00:00:00Z"),
        "{stderr}"
    );
}

/// `RUST_LOG=warning` is no log filter (`warning` reads as a target): every command says
/// so on standard error, and `log.level` applies, so `serve` still logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_rust_log_is_warned_of_and_log_level_applies() {
    let check = binary()
        .arg("check-config")
        .env("RUST_LOG", "warning")
        .output()
        .expect("runs");
    assert_eq!(check.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains(
            "waba-gateway: warning: RUST_LOG is ignored: RUST_LOG = \"warning\" is not a log filter"
        ),
        "{stderr}"
    );
    let dir = tempfile::tempdir().expect("dir");
    // It starts only once it has logged where it listens, at log.level = "info".
    let serve = GatewayProcess::start(dir.path(), &[("RUST_LOG", "warning")]);
    serve.wait_ready().await;
    assert!(
        serve.log().contains("RUST_LOG is ignored"),
        "{}",
        serve.log()
    );
    assert_eq!(serve.signal("TERM").code(), Some(0));
}
