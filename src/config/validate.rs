//! Validation: every problem that makes settings unusable, one sentence each, naming
//! the key and what to write instead.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use secrecy::ExposeSecret;

use super::{META_CLIENT_NAME, Settings};

impl Settings {
    /// Every problem that makes these settings unusable, one sentence each, naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.telemetry.problems();
        let server = &self.server;
        if let Some(tls) = &server.tls {
            if tls.client_ca_file.is_some() && tls.client_names.is_empty() {
                problems.push(format!(
                    "server.tls.client_names is empty, so no client certificate could pass; \
                     leave it out for Meta's \"{META_CLIENT_NAME}\""
                ));
            }
            if tls.reload_interval_ms == 0 {
                problems.push("server.tls.reload_interval_ms must be greater than 0".to_owned());
            }
        }
        for (key, value) in [
            ("server.max_connections", server.max_connections),
            (
                "server.max_in_flight_requests",
                server.max_in_flight_requests,
            ),
        ] {
            if value == 0 {
                problems.push(format!("{key} must be greater than 0"));
            }
        }
        if !(1024..=64 * 1024 * 1024).contains(&server.max_body_bytes) {
            problems.push(format!(
                "server.max_body_bytes = {} must be between 1024 and 67108864 (Meta sends up \
                 to about 3 MB)",
                server.max_body_bytes
            ));
        }
        for (key, value) in [
            (
                "server.header_read_timeout_ms",
                server.header_read_timeout_ms,
            ),
            ("server.request_timeout_ms", server.request_timeout_ms),
            (
                "delivery.kafka_ack_timeout_ms",
                self.delivery.kafka_ack_timeout_ms,
            ),
            ("shutdown.drain_timeout_ms", self.shutdown.drain_timeout_ms),
        ] {
            if value == 0 {
                problems.push(format!("{key} must be greater than 0"));
            }
        }
        if self.delivery.kafka_ack_timeout_ms >= server.request_timeout_ms {
            problems.push(format!(
                "delivery.kafka_ack_timeout_ms = {} must be below server.request_timeout_ms = \
                 {}, so that Meta gets 503 rather than a dropped request",
                self.delivery.kafka_ack_timeout_ms, server.request_timeout_ms
            ));
        }
        for (key, budget) in [
            ("server.receive_budget_bytes", server.receive_budget_bytes),
            (
                "delivery.memory_budget_bytes",
                self.delivery.memory_budget_bytes,
            ),
        ] {
            if budget < 4 * server.max_body_bytes {
                problems.push(format!(
                    "{key} = {budget} must be at least 4 × server.max_body_bytes = {}, so that \
                     several of the largest notifications fit at once; raise it or lower \
                     max_body_bytes",
                    4 * server.max_body_bytes
                ));
            }
        }
        if self.delivery.forward_batch_bytes == 0 {
            problems.push("delivery.forward_batch_bytes must be greater than 0".to_owned());
        }
        if server.request_timeout_ms > self.shutdown.drain_timeout_ms {
            problems.push(format!(
                "server.request_timeout_ms = {} must not exceed shutdown.drain_timeout_ms = {}, \
                 so that requests in flight at shutdown can finish",
                server.request_timeout_ms, self.shutdown.drain_timeout_ms
            ));
        }
        if listeners_collide(server.listen, self.admin.listen) {
            problems.push(format!(
                "admin.listen = {} and server.listen = {} cannot both be bound (same port on \
                 overlapping addresses); give them different ports",
                self.admin.listen, server.listen
            ));
        }
        for (key, networks) in [
            ("server.allowed_source_cidrs", &server.allowed_source_cidrs),
            ("server.trusted_proxies", &server.trusted_proxies),
        ] {
            for text in networks
                .iter()
                .filter(|text| super::network(text).is_none())
            {
                problems.push(format!(
                    "{key}: {text:?} is not a network: write a CIDR such as \
                     \"173.252.64.0/18\" or an address such as \"10.0.0.7\""
                ));
            }
        }
        for text in server
            .trusted_proxies
            .iter()
            .filter(|text| super::network(text).is_some_and(|network| network.prefix_len() == 0))
        {
            problems.push(format!(
                "server.trusted_proxies: {text:?} covers every address, so any client could \
                 name its own source in X-Forwarded-For and pass the allowlist; list only the \
                 networks of your load balancers"
            ));
        }
        if server.allowed_source_cidrs.is_empty() && !server.trusted_proxies.is_empty() {
            problems.push(
                "server.trusted_proxies is set without server.allowed_source_cidrs, where it \
                 has no effect: set both, or leave both out"
                    .to_owned(),
            );
        }
        if let Some(problem) = log_filter_problem(&self.log.level) {
            problems.push(problem);
        }
        if let Err(problem) = crate::graph::check_base_url(&self.graph.base_url) {
            problems.push(problem);
        }
        self.app_problems(&mut problems);
        let kafka = &self.kafka;
        if kafka.brokers.trim().is_empty() {
            problems.push(
                "kafka.brokers is empty: set \"host:9092,host2:9092\", or \"embedded\" to try \
                 the gateway out"
                    .to_owned(),
            );
        }
        if kafka.topic_partitions < 1 {
            problems.push(format!(
                "kafka.topic_partitions = {} must be at least 1",
                kafka.topic_partitions
            ));
        }
        if kafka.topic_replication_factor == 0 || kafka.topic_replication_factor < -1 {
            problems.push(format!(
                "kafka.topic_replication_factor = {} must be -1 (the broker's default) or at \
                 least 1",
                kafka.topic_replication_factor
            ));
        }
        for key in kafka.librdkafka.0.keys() {
            if key == "bootstrap.servers" {
                problems.push(format!(
                    "kafka.librdkafka.\"{key}\" is set by the gateway itself; use the \
                     [kafka] settings instead"
                ));
            }
        }
        problems.extend(kafka.routing().problems());
        problems
    }

    fn app_problems(&self, problems: &mut Vec<String>) {
        if self.apps.is_empty() {
            problems.push(
                "no app is configured: add [apps.default] with secret and verify_token (or \
                 WABA_GATEWAY__APPS__DEFAULT__SECRET and ..._VERIFY_TOKEN)"
                    .to_owned(),
            );
        }
        let mut paths = BTreeSet::new();
        for (name, app) in &self.apps {
            let key = format!("apps.{name}");
            if !(1..=64).contains(&name.len())
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                problems.push(format!(
                    "{key}: app names may use only a-z, 0-9, '_' and '-' (at most 64)"
                ));
            }
            let path = Self::app_path(name, app);
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                problems.push(format!(
                    "{key}.path = {path:?} must be a URL path starting with '/'"
                ));
            }
            if ["/healthz", "/readyz", "/metrics"].contains(&path.as_str()) {
                problems.push(format!(
                    "{key}.path = {path:?} is reserved for health and metrics"
                ));
            }
            if !paths.insert(path.clone()) {
                problems.push(format!(
                    "{key}.path = {path:?} is used by another app; each app needs its own path"
                ));
            }
            if app.secret.is_none() {
                problems.push(format!(
                    "{key}.secret is missing: set secret or secret_file to the Meta app secret \
                     (App Dashboard > App settings > Basic)"
                ));
            }
            if app.verify_token.is_none() {
                problems.push(format!(
                    "{key}.verify_token is missing: set verify_token or verify_token_file to \
                     the token entered in the app's Webhooks settings"
                ));
            }
            for (field, secret) in [("secret", &app.secret), ("verify_token", &app.verify_token)] {
                if secret
                    .as_ref()
                    .is_some_and(|secret| secret.expose_secret().is_empty())
                {
                    problems.push(format!("{key}.{field} is empty"));
                }
            }
        }
    }
}

/// Whether two listeners would fight over one port: the same port (not 0, which picks a
/// free one) on the same address, or on an address that covers the other (`0.0.0.0`,
/// `[::]`).
fn listeners_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The levels a log filter may name.
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// Why `level` is not a log filter: each comma-separated part must be a level, or
/// `target=level`. (The tracing filter would read `warning` as a target and log nothing.)
pub fn log_filter_problem(level: &str) -> Option<String> {
    let valid = !level.trim().is_empty()
        && level.split(',').all(|directive| {
            let level = directive
                .rsplit_once('=')
                .map_or(directive, |(_, level)| level);
            LOG_LEVELS.contains(&level.trim().to_ascii_lowercase().as_str())
        });
    (!valid).then(|| {
        format!(
            "log.level = {level:?} is not a log filter: use one of {}, or directives such as \
             \"waba_gateway=debug,info\"",
            LOG_LEVELS.join(", ")
        )
    })
}
