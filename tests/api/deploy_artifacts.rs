//! The deployment artifacts speak of metrics the gateway really exports, and the chart's
//! alert rules are the same as deploy/'s.

use std::collections::BTreeSet;
use std::path::Path;

use waba_gateway::metrics::Metrics;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `waba_gateway_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.match_indices("waba_gateway_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

/// The series names the gateway exports, histogram series included.
fn exported() -> BTreeSet<String> {
    let metrics = Metrics::new(Vec::new());
    metrics.http_requests.with_label_values(&["r", "200"]).inc();
    metrics
        .http_request_duration
        .with_label_values(&["r"])
        .observe(0.1);
    metrics
        .signature_failures
        .with_label_values(&["a", "mismatch"])
        .inc();
    metrics
        .signature_matches
        .with_label_values(&["a", "current"])
        .inc();
    metrics.changes.with_label_values(&["a", "messages"]).inc();
    metrics
        .deadletters
        .with_label_values(&["a", "invalid_json"])
        .inc();
    metrics.kafka_records.with_label_values(&["t", "ok"]).inc();
    metrics
        .overload_refusals
        .with_label_values(&["in_flight"])
        .inc();
    metrics
        .tls_handshake_failures
        .with_label_values(&["client_name"])
        .inc();
    metrics.tls_reloads.with_label_values(&["ok"]).inc();
    metrics.kafka_broker_up.with_label_values(&["b"]).set(1);
    metrics
        .kafka_broker_rtt
        .with_label_values(&["b", "0.5"])
        .set(0.001);
    metrics.kafka_errors.with_label_values(&["k"]).inc();
    let text = String::from_utf8(metrics.render()).expect("utf-8");
    let mut names = BTreeSet::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut words = line.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        names.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

#[test]
fn the_dashboard_and_the_alerts_use_only_exported_metrics() {
    let exported = exported();
    for path in [
        "deploy/grafana/dashboards/waba-gateway.json",
        "deploy/prometheus/rules.yml",
    ] {
        let used = metric_names(&read(path));
        assert!(!used.is_empty(), "{path} uses no gateway metric");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{path} uses metrics the gateway does not export: {unknown:?}"
        );
    }
}

#[test]
fn the_charts_alert_rules_are_deploys() {
    assert_eq!(
        read("helm/waba-gateway/files/rules.yml"),
        read("deploy/prometheus/rules.yml"),
        "copy deploy/prometheus/rules.yml to helm/waba-gateway/files/rules.yml"
    );
}

#[test]
fn every_alert_has_a_runbook_section() {
    let rules = read("deploy/prometheus/rules.yml");
    let runbook = read("docs/RUNBOOK.md");
    let alerts = rules.matches("- alert: ").count();
    let urls: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("runbook_url: \"docs/RUNBOOK.md#"))
        .map(|rest| rest.trim_end_matches('"'))
        .collect();
    assert_eq!(urls.len(), alerts, "one runbook_url per alert");
    for anchor in urls {
        assert!(
            runbook.contains(&format!("\n## {anchor}\n")),
            "docs/RUNBOOK.md has no section {anchor}"
        );
    }
}

#[test]
fn the_strimzi_topics_example_is_what_topics_apply_generates() {
    let output = crate::helpers::binary()
        .args([
            "topics",
            "apply",
            "--dry-run",
            "--output",
            "strimzi",
            "--strimzi-cluster",
            "kafka",
            "--replication-factor",
            "3",
            "--partitions",
            "6",
        ])
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let generated = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(
        read("deploy/strimzi/kafka-topics.yaml"),
        generated,
        "regenerate it: waba-gateway topics apply --dry-run --output strimzi \
         --strimzi-cluster kafka --replication-factor 3 --partitions 6 \
         > deploy/strimzi/kafka-topics.yaml"
    );
    assert!(generated.contains("topicName: whatsapp.messages\n"));
    assert!(generated.contains("topicName: whatsapp.deadletter\n"));
}
