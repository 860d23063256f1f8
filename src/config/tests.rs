//! Loading, validation and redaction, through `Settings::load` as `serve` calls it.

use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn file(toml: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(toml.as_bytes()).expect("write");
    file
}

/// The problems of loading with no file and these variables.
fn env_problems(pairs: &[(&str, &str)]) -> String {
    problems(Settings::load(None, env(pairs)))
}

fn problems(result: Result<Settings, ConfigError>) -> String {
    match result {
        Ok(_) => panic!("expected a configuration error"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn defaults_run_a_demo_app_on_embedded_kafka() {
    let settings = Settings::load(None, env(&[])).expect("defaults are valid");
    assert!(settings.kafka.is_embedded());
    assert_eq!(settings.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(settings.admin.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(settings.server.max_body_bytes, 4_194_304);
    assert_eq!(settings.kafka.topic_template, "whatsapp.{field}");
    assert_eq!(settings.delivery.ack, AckMode::Spool);
    let demo = &settings.apps["default"];
    assert!(demo.demo);
    assert_eq!(Settings::app_path("default", demo), "/webhook");
    assert_eq!(
        demo.secrets()
            .map(|s| s.expose_secret().as_bytes())
            .collect::<Vec<_>>(),
        vec![DEMO_SECRET.as_bytes()]
    );
}

#[test]
fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
    let file = file(
        r#"
        [server]
        listen = "127.0.0.1:18080"
        max_body_bytes = 2048
        [apps.default]
        secret = "from-file"
        verify_token = "token"
        [kafka]
        brokers = "k1:9092,k2:9092"
        [kafka.topics]
        messages = "wa.inbound"
        [kafka.librdkafka]
        "security.protocol" = "SASL_SSL"
        "#,
    );
    let settings = Settings::load(
        Some(file.path()),
        env(&[
            ("WABA_GATEWAY__APPS__DEFAULT__SECRET", "from-env"),
            ("WABA_GATEWAY__SERVER__MAX_BODY_BYTES", "4096"),
            (
                "WABA_GATEWAY__KAFKA__LIBRDKAFKA__SASL_MECHANISM",
                "SCRAM-SHA-512",
            ),
            ("WABA_GATEWAY__KAFKA__LIBRDKAFKA__SASL_USERNAME", "gateway"),
            ("WABA_GATEWAY__KAFKA__LIBRDKAFKA__SASL_PASSWORD", "password"),
            ("UNRELATED", "ignored"),
        ]),
    )
    .expect("valid");
    assert_eq!(settings.server.listen.to_string(), "127.0.0.1:18080");
    assert_eq!(settings.server.max_body_bytes, 4096);
    assert_eq!(
        settings.apps["default"]
            .secrets()
            .map(|s| s.expose_secret().as_bytes())
            .collect::<Vec<_>>(),
        vec![&b"from-env"[..]]
    );
    assert!(!settings.apps["default"].demo);
    assert_eq!(settings.kafka.brokers, "k1:9092,k2:9092");
    assert_eq!(settings.kafka.topics["messages"], "wa.inbound");
    assert_eq!(settings.kafka.librdkafka.0["security.protocol"], "SASL_SSL");
    assert_eq!(
        settings.kafka.librdkafka.0["sasl.mechanism"],
        "SCRAM-SHA-512"
    );
}

#[test]
fn an_unknown_key_is_an_error_that_names_it() {
    let file = file("[server]\nlisten_addr = \"0.0.0.0:1\"\n");
    let message = problems(Settings::load(Some(file.path()), env(&[])));
    assert!(message.contains("listen_addr"), "{message}");
    let message = env_problems(&[("WABA_GATEWAY__KAFKA__BROKER", "x:9092")]);
    assert!(message.contains("broker"), "{message}");
}

#[test]
fn real_brokers_without_an_app_secret_is_a_problem_naming_the_key() {
    let message = env_problems(&[
        ("WABA_GATEWAY__KAFKA__BROKERS", "k1:9092"),
        ("WABA_GATEWAY__APPS__SHOP__VERIFY_TOKEN", "t"),
    ]);
    assert!(message.contains("apps.shop.secret is missing"), "{message}");
    let message = env_problems(&[("WABA_GATEWAY__KAFKA__BROKERS", "k1:9092")]);
    assert!(message.contains("no app is configured"), "{message}");
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let file = file(
        r#"
        [server]
        max_body_bytes = 10
        request_timeout_ms = 1000
        [delivery]
        kafka_ack_timeout_ms = 5000
        [apps.a]
        path = "/hook"
        secret = "s"
        verify_token = "t"
        [apps.b]
        path = "/hook"
        secret = "s"
        [kafka]
        topic_template = "wa:{field}"
        "#,
    );
    let message = problems(Settings::load(Some(file.path()), env(&[])));
    for expected in [
        "server.max_body_bytes",
        "delivery.kafka_ack_timeout_ms",
        "apps.b.path",
        "apps.b.verify_token is missing",
        "kafka.topic_template",
    ] {
        assert!(message.contains(expected), "{expected} in:\n{message}");
    }
}

#[test]
fn secrets_can_come_from_files() {
    let dir = tempfile::tempdir().expect("dir");
    let secret = dir.path().join("secret");
    let token = dir.path().join("token");
    let previous = dir.path().join("previous");
    std::fs::write(&secret, "s3cret\n").expect("write");
    std::fs::write(&token, "t0ken").expect("write");
    std::fs::write(&previous, "old1\n\nold2\n").expect("write");
    let settings = Settings::load(
        None,
        env(&[
            (
                "WABA_GATEWAY__APPS__DEFAULT__SECRET_FILE",
                secret.to_str().expect("utf-8"),
            ),
            (
                "WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN_FILE",
                token.to_str().expect("utf-8"),
            ),
            (
                "WABA_GATEWAY__APPS__DEFAULT__PREVIOUS_SECRETS_FILE",
                previous.to_str().expect("utf-8"),
            ),
            ("WABA_GATEWAY__KAFKA__BROKERS", "k:9092"),
        ]),
    )
    .expect("valid");
    let app = &settings.apps["default"];
    assert_eq!(
        app.secrets()
            .map(|s| s.expose_secret().as_bytes())
            .collect::<Vec<_>>(),
        vec![&b"s3cret"[..], b"old1", b"old2"]
    );
    assert_eq!(
        app.verify_token.as_ref().map(|t| t.expose_secret()),
        Some("t0ken")
    );
    let message = env_problems(&[
        (
            "WABA_GATEWAY__APPS__DEFAULT__SECRET_FILE",
            "/nonexistent/secret",
        ),
        ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", "t"),
    ]);
    assert!(
        message.contains("apps.default.secret_file = /nonexistent/secret: cannot be read"),
        "{message}"
    );
}

#[test]
fn previous_secrets_accept_a_comma_separated_variable() {
    let settings = Settings::load(
        None,
        env(&[
            ("WABA_GATEWAY__APPS__DEFAULT__SECRET", "new"),
            ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", "t"),
            (
                "WABA_GATEWAY__APPS__DEFAULT__PREVIOUS_SECRETS",
                "old1, old2",
            ),
        ]),
    )
    .expect("valid");
    assert_eq!(
        settings.apps["default"]
            .secrets()
            .map(|s| s.expose_secret().as_bytes())
            .collect::<Vec<_>>(),
        vec![&b"new"[..], b"old1", b"old2"]
    );
}

#[test]
fn printed_settings_never_show_a_secret() {
    let settings = Settings::load(
        None,
        env(&[
            ("WABA_GATEWAY__APPS__DEFAULT__SECRET", "app-secret-value"),
            (
                "WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN",
                "verify-token-value",
            ),
            (
                "WABA_GATEWAY__APPS__DEFAULT__PREVIOUS_SECRETS",
                "old-secret-value",
            ),
            ("WABA_GATEWAY__GRAPH__ACCESS_TOKEN", "graph-token-value"),
            (
                "WABA_GATEWAY__KAFKA__LIBRDKAFKA__SASL_PASSWORD",
                "sasl-password-value",
            ),
            ("WABA_GATEWAY__KAFKA__LIBRDKAFKA__SASL_USERNAME", "gateway"),
        ]),
    )
    .expect("valid");
    let printed = settings.to_redacted_toml();
    let debug = format!("{settings:?}");
    for secret in [
        "app-secret-value",
        "verify-token-value",
        "old-secret-value",
        "graph-token-value",
        "sasl-password-value",
    ] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
        assert!(!debug.contains(secret), "{secret} in Debug");
    }
    assert!(
        printed.contains("\"sasl.username\" = \"gateway\""),
        "{printed}"
    );
    assert!(printed.contains("secret = \"[redacted]\""), "{printed}");
    assert!(printed.contains("path = \"/webhook\""), "{printed}");
}

#[test]
fn the_properties_whose_values_show_are_sorted_for_lookup() {
    let shown = redact::SHOWN_PROPERTIES;
    assert!(shown.windows(2).all(|pair| pair[0] < pair[1]), "{shown:?}");
    for (key, shown) in [
        ("security.protocol", true),
        ("sasl.username", true),
        ("sasl.password", false),
        ("sasl.pasword", false),
        ("sasl.jaas.config", false),
        ("ssl.key.password", false),
        ("ssl.key.pem", false),
    ] {
        assert_eq!(is_shown_property(key), shown, "{key}");
    }
}

#[test]
fn every_unknown_key_is_named_in_one_run_with_where_it_was_written() {
    let file = file(
        "[server]\nlisten_addr = \"0.0.0.0:1\"\nmax_body_byte = 5\n\n[apps.shop]\nsecert = \"x\"\n\
         [kafka]\nbroker = \"k:9092\"\n[kafka.librdkafka]\n\"any.property\" = \"1\"\n\
         [kafka.topics]\nany_field = \"t\"\n",
    );
    let message = problems(crate::app::load_settings(
        Some(file.path()),
        env(&[
            ("WABA_GATEWAY__GRAPH__ACCES_TOKEN", "t"),
            ("WABA_GATEWAY__DELIVERY__ACK", "bogus"),
        ]),
    ));
    let name = file.path().display();
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(
        lines,
        [
            format!("apps.shop.secert ({name} line 6) is not a setting: did you mean \"secret\"?"),
            "graph.acces_token (environment variable WABA_GATEWAY__GRAPH__ACCES_TOKEN) is not a \
             setting: did you mean \"access_token\"?"
                .to_owned(),
            format!("kafka.broker ({name} line 8) is not a setting: did you mean \"brokers\"?"),
            format!(
                "server.listen_addr ({name} line 2) is not a setting: the keys here are \
                 allowed_source_cidrs, header_read_timeout_ms, listen, max_body_bytes, \
                 max_connections, max_in_flight_requests, receive_budget_bytes, \
                 request_timeout_ms, tls, trusted_proxies"
            ),
            format!(
                "server.max_body_byte ({name} line 3) is not a setting: did you mean \
                 \"max_body_bytes\"?"
            ),
            "delivery.ack (environment variable WABA_GATEWAY__DELIVERY__ACK) is \"bogus\", not \
             one of \"spool\", \"kafka\", \"none\": write one of those"
                .to_owned(),
            // Not staged: what the settings say once read, and what librdkafka says of its
            // properties, in the same run.
            "apps.shop.secret is missing: set secret or secret_file to the Meta app secret (App \
             Dashboard > App settings > Basic)"
                .to_owned(),
            "apps.shop.verify_token is missing: set verify_token or verify_token_file to the \
             token entered in the app's Webhooks settings"
                .to_owned(),
            "kafka.librdkafka.\"any.property\" is not a librdkafka property (see librdkafka's \
             CONFIGURATION.md for the names; Java client properties such as sasl.jaas.config do \
             not apply)"
                .to_owned(),
        ]
    );
}

#[test]
fn a_value_of_the_wrong_kind_says_what_to_write() {
    let message = env_problems(&[("WABA_GATEWAY__SERVER__MAX_BODY_BYTES", "4MB")]);
    assert_eq!(
        message,
        "server.max_body_bytes (environment variable WABA_GATEWAY__SERVER__MAX_BODY_BYTES) is \
         \"4MB\": write a whole number"
    );
    let message = env_problems(&[("WABA_GATEWAY__LOG__FORMAT", "yaml")]);
    assert_eq!(
        message,
        "log.format (environment variable WABA_GATEWAY__LOG__FORMAT) is \"yaml\", not one of \
         \"text\", \"json\": write one of those"
    );
    let message = env_problems(&[("WABA_GATEWAY__ROUTING__SPLIT", "items")]);
    assert_eq!(
        message,
        "routing.split (environment variable WABA_GATEWAY__ROUTING__SPLIT) is \"items\", not one \
         of \"change\", \"item\": write one of those"
    );
}

#[test]
fn lax_types_are_refused_all_at_once_in_the_order_of_the_keys() {
    let file = file(
        "[server]\nmax_connections = 6.5\n[kafka]\nbrokers = 9092\ncloudevents = \"off\"\n\
         [kafka.librdkafka]\n\"linger.ms\" = 5\n[apps.default]\nsecret = 12345\n\
         verify_token = \"t\"\n",
    );
    let name = file.path().display();
    let message = problems(Settings::load(
        Some(file.path()),
        env(&[
            ("WABA_GATEWAY__SHUTDOWN__DRAIN_TIMEOUT_MS", "off"),
            ("WABA_GATEWAY__DELIVERY__ACK", "Spool"),
        ]),
    ));
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(
        lines,
        [
            // A secret of the wrong type is named, never quoted.
            format!("apps.default.secret ({name} line 9) is a number: write text in quotes"),
            "delivery.ack (environment variable WABA_GATEWAY__DELIVERY__ACK) is \"Spool\", not \
             one of \"spool\", \"kafka\", \"none\": write one of those"
                .to_owned(),
            format!("kafka.brokers ({name} line 4) is a number: write text in quotes"),
            format!(
                "kafka.cloudevents ({name} line 5) is \"off\": write true or false (without \
                 quotes)"
            ),
            format!("server.max_connections ({name} line 2) is 6.5: write a whole number"),
            "shutdown.drain_timeout_ms (environment variable \
             WABA_GATEWAY__SHUTDOWN__DRAIN_TIMEOUT_MS) is \"off\": write a whole number"
                .to_owned(),
        ]
    );
    // A whole number with a zero fraction, as Helm's toToml writes numbers, is that number.
    let helm =
        self::file("[server]\nmax_connections = 4096.0\n[shutdown]\nlame_duck_ms = 5000.0\n");
    let settings = Settings::load(Some(helm.path()), env(&[])).expect("valid");
    assert_eq!(settings.server.max_connections, 4096);
    assert_eq!(settings.shutdown.lame_duck_ms, 5000);
    // The same run, twice: the same lines.
    let again = problems(Settings::load(
        Some(file.path()),
        env(&[
            ("WABA_GATEWAY__SHUTDOWN__DRAIN_TIMEOUT_MS", "off"),
            ("WABA_GATEWAY__DELIVERY__ACK", "Spool"),
        ]),
    ));
    assert_eq!(again, message);
}

#[test]
fn a_syntax_error_names_file_line_column_and_key_but_never_the_line() {
    let file = file("[apps.default]\nverify_token = \"t\"\nsecret = \"MARKED-SECRET\n");
    let message = problems(Settings::load(Some(file.path()), env(&[])));
    assert!(!message.contains("MARKED"), "{message}");
    assert!(
        message.starts_with(&format!(
            "{} line 3, column 24, in apps.default.secret is not valid TOML (",
            file.path().display()
        )),
        "{message}"
    );
}

#[test]
fn variables_with_one_underscore_after_the_prefix_are_warned_of() {
    let warnings = misnamed_variables(env(&[
        ("WABA_GATEWAY_KAFKA__BROKERS", "k:9092"),
        ("WABA_GATEWAY_SERVER__LISTEN", "0.0.0.0:1"),
        ("WABA_GATEWAY__KAFKA__BROKERS", "k:9092"),
        ("WABA_GATEWAY_CONFIG", "gateway.toml"),
        ("WABA_GATEWAY_BINARY", "target/release/waba-gateway"),
    ]));
    assert_eq!(
        warnings,
        [
            "WABA_GATEWAY_KAFKA__BROKERS is not read: settings variables start with \
             WABA_GATEWAY__ (two underscores), as in WABA_GATEWAY__KAFKA__BROKERS",
            "WABA_GATEWAY_SERVER__LISTEN is not read: settings variables start with \
             WABA_GATEWAY__ (two underscores), as in WABA_GATEWAY__SERVER__LISTEN",
        ]
    );
}

#[test]
fn source_networks_must_be_networks_and_proxies_need_an_allowlist() {
    let allowed = "WABA_GATEWAY__SERVER__ALLOWED_SOURCE_CIDRS";
    let trusted = "WABA_GATEWAY__SERVER__TRUSTED_PROXIES";
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[(allowed, "173.252.64.0/18, meta")],
            "server.allowed_source_cidrs: \"meta\" is not a network",
        ),
        (
            &[(allowed, "10.0.0.0/8"), (trusted, "10.0.0.0/33")],
            "server.trusted_proxies: \"10.0.0.0/33\" is not a network",
        ),
        (
            &[(trusted, "10.0.0.0/8")],
            "server.trusted_proxies is set without server.allowed_source_cidrs",
        ),
        (
            &[
                (allowed, "173.252.64.0/18"),
                (trusted, "10.0.0.0/8, 0.0.0.0/0"),
            ],
            "server.trusted_proxies: \"0.0.0.0/0\" covers every address, so any client could \
             name its own source in X-Forwarded-For",
        ),
        (
            &[(allowed, "173.252.64.0/18"), (trusted, "::/0")],
            "server.trusted_proxies: \"::/0\" covers every address",
        ),
    ];
    for (pairs, expected) in cases {
        let message = env_problems(pairs);
        assert!(message.contains(expected), "{expected} in:\n{message}");
    }
}

#[test]
fn a_memory_budget_too_small_for_the_largest_body_is_refused_with_the_fix() {
    let problems = env_problems(&[
        ("WABA_GATEWAY__SERVER__MAX_BODY_BYTES", "4194304"),
        ("WABA_GATEWAY__DELIVERY__MEMORY_BUDGET_BYTES", "1048576"),
        ("WABA_GATEWAY__SERVER__RECEIVE_BUDGET_BYTES", "8388608"),
    ]);
    for expected in [
        "delivery.memory_budget_bytes = 1048576 must be at least 4 × server.max_body_bytes = 16777216",
        "server.receive_budget_bytes = 8388608 must be at least 4 × server.max_body_bytes = 16777216",
    ] {
        assert!(problems.contains(expected), "{expected} in:\n{problems}");
    }
    assert!(
        problems.contains("raise it or lower max_body_bytes"),
        "{problems}"
    );
}

#[test]
fn values_the_types_let_through_but_the_settings_cannot_read_are_all_named() {
    let file = file("[server]\nmax_connections = -5\nlisten = \"not an address\"\n");
    let name = file.path().display();
    let message = problems(Settings::load(Some(file.path()), env(&[])));
    assert_eq!(
        message.lines().collect::<Vec<_>>(),
        [
            format!("server.listen ({name} line 3): invalid socket address syntax"),
            format!(
                "server.max_connections ({name} line 2): invalid value, expected a whole \
                 number, 0 or more"
            ),
        ]
    );
}
