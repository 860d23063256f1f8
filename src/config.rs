//! The one typed settings tree (DESIGN §3): built-in defaults, then the TOML file, then
//! `WABA_GATEWAY__SECTION__KEY` environment variables. Unknown keys are errors.
//!
//! Secrets are [`SecretString`]s: redacted in `Debug`, in `check-config` output and in
//! logs. Each may be given inline, by environment, or as a `*_file` path (a Kubernetes
//! Secret mount) whose content, less a trailing newline, is the secret.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The path every secret shows in printed configuration.
const REDACTED: &str = "[redacted]";

/// Secret and verify token of the demo app that `serve` runs on embedded Kafka when no app
/// is configured. Public on purpose: the README's quickstart signs with them.
pub const DEMO_SECRET: &str = "demo-app-secret";
/// See [`DEMO_SECRET`].
pub const DEMO_VERIFY_TOKEN: &str = "demo-verify-token";

/// Why settings could not be loaded. `main` exits with 78 (`EX_CONFIG`) on any of them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a key is unknown or of the wrong type.
    #[error("{0}")]
    Load(#[from] config::ConfigError),
    /// The settings parsed but are not usable; one sentence per problem.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Everything the gateway can be configured with.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The public listener: webhooks, `/healthz`, `/readyz`.
    pub server: ServerSettings,
    /// The private listener: `/metrics`, `/healthz`, `/readyz`.
    pub admin: AdminSettings,
    /// One table per Meta app, by name.
    pub apps: BTreeMap<String, AppSettings>,
    /// Brokers, topics and producer properties.
    pub kafka: KafkaSettings,
    /// When a notification is acknowledged to Meta.
    pub delivery: DeliverySettings,
    /// The bounded drain on SIGTERM/SIGINT.
    pub shutdown: ShutdownSettings,
    /// The Graph API, for `waba-gateway subscriptions`.
    pub graph: GraphSettings,
    /// Log level and format.
    pub log: LogSettings,
}

/// `[server]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address of the webhook listener.
    pub listen: SocketAddr,
    /// Largest body accepted; larger ones get 413. Meta sends up to about 3 MB.
    pub max_body_bytes: u64,
    /// A connection must send a request's headers within this time, else it is closed.
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive within this time, else 408.
    pub request_timeout_ms: u64,
    /// Open connections on the webhook listener; a connection over the cap gets 503 and
    /// is closed.
    pub max_connections: usize,
    /// Notifications being read, verified and accepted at once; one more gets 503. Bounds
    /// memory: at most `max_in_flight_requests` × `max_body_bytes` of bodies.
    pub max_in_flight_requests: usize,
    /// HTTPS served by the gateway itself, optionally with Meta's mTLS client certificate.
    pub tls: Option<TlsSettings>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            header_read_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
            max_connections: 4096,
            max_in_flight_requests: 256,
            tls: None,
        }
    }
}

/// `[server.tls]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that a client certificate must chain to (mTLS): Meta's
    /// outbound API CA. None means no client certificate is asked for.
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: the names a client certificate's CN or a SAN DNS name must
    /// be one of.
    #[serde(default = "default_client_names")]
    pub client_names: Vec<String>,
    /// How often the files are checked for changes (a certificate rotated by
    /// cert-manager); SIGHUP reloads them at once.
    #[serde(default = "default_tls_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

/// The name on Meta's webhook client certificate.
pub const META_CLIENT_NAME: &str = "client.webhooks.fbclientcerts.com";

fn default_client_names() -> Vec<String> {
    vec![META_CLIENT_NAME.to_owned()]
}

fn default_tls_reload_interval_ms() -> u64 {
    10_000
}

/// `[admin]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Address of the admin listener.
    pub listen: SocketAddr,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
        }
    }
}

/// `[apps.<name>]`: one Meta app.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppSettings {
    /// URL path Meta calls; default `/webhook` for the app named `default`, else
    /// `/webhook/<name>`.
    pub path: Option<String>,
    /// The app secret that signs notifications.
    #[serde(serialize_with = "redact_option")]
    pub secret: Option<SecretString>,
    /// File holding the app secret.
    pub secret_file: Option<PathBuf>,
    /// Secrets still accepted during a rotation (a comma-separated string by environment).
    #[serde(deserialize_with = "secret_list", serialize_with = "redact_list")]
    pub previous_secrets: Vec<SecretString>,
    /// File holding previous secrets, one per line.
    pub previous_secrets_file: Option<PathBuf>,
    /// The token Meta echoes in the verification request.
    #[serde(serialize_with = "redact_option")]
    pub verify_token: Option<SecretString>,
    /// File holding the verify token.
    pub verify_token_file: Option<PathBuf>,
    /// True for the demo app added on embedded Kafka when none is configured.
    #[serde(skip)]
    pub demo: bool,
}

impl AppSettings {
    /// The secrets a signature may match: the current one first.
    pub fn secrets(&self) -> impl Iterator<Item = &[u8]> {
        self.secret
            .iter()
            .chain(&self.previous_secrets)
            .map(|secret| secret.expose_secret().as_bytes())
    }
}

/// `[kafka]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `host:port,host:port`, or `embedded` for an in-memory broker inside the process.
    pub brokers: String,
    /// Topic of a field: `{field}` and optionally `{object}` are filled in.
    pub topic_template: String,
    /// Topic for entries without changes and changes without a routable field.
    pub unrouted_topic: String,
    /// Topic for authentic bodies that are not notifications and records the broker refused.
    pub deadletter_topic: String,
    /// Per-field topic overrides, e.g. `messages = "wa.inbound"`.
    pub topics: BTreeMap<String, String>,
    /// librdkafka properties passed to the producer as they are (`security.protocol`,
    /// `sasl.*`, ...). By environment, `_` in a key stands for `.`.
    pub librdkafka: LibrdkafkaProperties,
    /// Create missing topics before the first record is produced to them.
    pub create_topics: bool,
    /// Partitions of topics the gateway creates.
    pub topic_partitions: i32,
    /// Replication factor of topics the gateway creates; -1 takes the broker's default.
    pub topic_replication_factor: i32,
    /// Where `serve` writes the embedded broker's address, so that `tail` finds it.
    pub embedded_address_file: PathBuf,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "embedded".to_owned(),
            topic_template: "whatsapp.{field}".to_owned(),
            unrouted_topic: "whatsapp.unrouted".to_owned(),
            deadletter_topic: "whatsapp.deadletter".to_owned(),
            topics: BTreeMap::new(),
            librdkafka: LibrdkafkaProperties::default(),
            create_topics: true,
            topic_partitions: 6,
            topic_replication_factor: -1,
            embedded_address_file: PathBuf::from("data/embedded-kafka.addr"),
        }
    }
}

impl KafkaSettings {
    /// True when the gateway runs its own in-memory broker.
    pub fn is_embedded(&self) -> bool {
        self.brokers == "embedded"
    }

    /// The topic layout these settings describe.
    pub fn routing(&self) -> crate::routing::Routing {
        crate::routing::Routing::new(
            self.topic_template.clone(),
            self.topics.clone(),
            self.unrouted_topic.clone(),
            self.deadletter_topic.clone(),
        )
    }
}

/// When Meta gets its 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Once the body is durably on the local spool; forwarded to Kafka behind it.
    Spool,
    /// Once Kafka has acknowledged every record of the request.
    Kafka,
    /// Once the records are queued in memory; a crash loses what is queued.
    None,
}

/// `[delivery]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// When Meta gets its 200.
    pub ack: AckMode,
    /// Directory of the durable spool (ack = "spool").
    pub spool_dir: PathBuf,
    /// Spool size at which new notifications get 503.
    pub spool_max_bytes: u64,
    /// In `kafka` mode, how long a request waits for Kafka before it gets 503.
    pub kafka_ack_timeout_ms: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            ack: AckMode::Spool,
            spool_dir: PathBuf::from("data/spool"),
            spool_max_bytes: 1024 * 1024 * 1024,
            kafka_ack_timeout_ms: 5_000,
        }
    }
}

/// `[shutdown]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSettings {
    /// Upper bound on finishing in-flight requests and flushing the producer.
    pub drain_timeout_ms: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            drain_timeout_ms: 20_000,
        }
    }
}

/// `[graph]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphSettings {
    /// Graph API origin.
    pub base_url: String,
    /// Graph API version path segment.
    pub api_version: String,
    /// System-user access token with `whatsapp_business_management`.
    #[serde(serialize_with = "redact_option")]
    pub access_token: Option<SecretString>,
    /// File holding the access token.
    pub access_token_file: Option<PathBuf>,
    /// Time allowed for one call and its answer.
    pub timeout_ms: u64,
    /// Attempts per call when Graph throttles, the first included.
    pub max_attempts: u32,
    /// First backoff after a throttled call; it doubles each time, with jitter.
    pub retry_base_delay_ms: u64,
    /// Most time spent waiting for throttling to pass, per command.
    pub max_wait_ms: u64,
}

impl Default for GraphSettings {
    fn default() -> Self {
        Self {
            base_url: "https://graph.facebook.com".to_owned(),
            api_version: "v24.0".to_owned(),
            access_token: None,
            access_token_file: None,
            timeout_ms: 30_000,
            max_attempts: 5,
            retry_base_delay_ms: 1_000,
            max_wait_ms: 120_000,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A tracing filter such as `info` or `waba_gateway=debug,info`; `RUST_LOG` wins.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl Settings {
    /// Loads defaults, then `file`, then the `WABA_GATEWAY__*` variables of `env`, reads
    /// `*_file` secrets, adds the demo app where it applies, and validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (mut settings, mut problems) = Self::load_layers(file, env)?;
        if settings.apps.is_empty() && settings.kafka.is_embedded() {
            settings.apps.insert("default".to_owned(), demo_app());
        }
        problems.extend(settings.problems());
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Loads the layers and reads `*_file` secrets, without checking that the settings can
    /// run a gateway: for commands that need only a part of them (`subscriptions`). Returns
    /// the problems met reading secret files.
    pub fn load_layers(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(key, _)| key.starts_with("WABA_GATEWAY__"))
            .collect();
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let layered = builder
            .add_source(
                config::Environment::with_prefix("WABA_GATEWAY")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(env)),
            )
            .build()?;
        let mut settings: Settings = layered.try_deserialize()?;
        settings.kafka.librdkafka.0 = std::mem::take(&mut settings.kafka.librdkafka.0)
            .into_iter()
            .map(|(key, value)| (key.replace('_', "."), value))
            .collect();
        let problems = settings.read_secret_files();
        Ok((settings, problems))
    }

    /// The app whose path is `path`.
    pub fn app_path(name: &str, app: &AppSettings) -> String {
        match &app.path {
            Some(path) => path.clone(),
            None if name == "default" => "/webhook".to_owned(),
            None => format!("/webhook/{name}"),
        }
    }

    /// The effective settings as TOML, every secret shown as `[redacted]`.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = toml::Table::try_from(self).expect("settings serialize to a table");
        if let Some(toml::Value::Table(apps)) = shown.get_mut("apps") {
            for (name, app) in apps.iter_mut() {
                if let (toml::Value::Table(table), Some(settings)) = (app, self.apps.get(name)) {
                    table.insert(
                        "path".to_owned(),
                        toml::Value::String(Self::app_path(name, settings)),
                    );
                }
            }
        }
        toml::to_string_pretty(&shown).expect("a TOML table prints")
    }

    fn read_secret_files(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, app) in &mut self.apps {
            let key = format!("apps.{name}");
            read_secret(
                &mut app.secret,
                &app.secret_file,
                &key,
                "secret",
                &mut problems,
            );
            read_secret(
                &mut app.verify_token,
                &app.verify_token_file,
                &key,
                "verify_token",
                &mut problems,
            );
            if let Some(path) = &app.previous_secrets_file {
                match std::fs::read_to_string(path) {
                    Ok(text) => app.previous_secrets.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|line| !line.is_empty())
                            .map(|line| SecretString::from(line.to_owned())),
                    ),
                    Err(error) => problems.push(format!(
                        "{key}.previous_secrets_file = {}: cannot be read ({error})",
                        path.display()
                    )),
                }
            }
        }
        read_secret(
            &mut self.graph.access_token,
            &self.graph.access_token_file,
            "graph",
            "access_token",
            &mut problems,
        );
        problems
    }

    /// Every problem that makes these settings unusable, one sentence each, naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let server = &self.server;
        if let Some(tls) = &server.tls {
            if let Err(error) = crate::tls::load(tls) {
                problems.push(format!("server.tls: {error}"));
            }
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
        if server.request_timeout_ms > self.shutdown.drain_timeout_ms {
            problems.push(format!(
                "server.request_timeout_ms = {} must not exceed shutdown.drain_timeout_ms = {}, \
                 so that requests in flight at shutdown can finish",
                server.request_timeout_ms, self.shutdown.drain_timeout_ms
            ));
        }
        if server.listen == self.admin.listen && server.listen.port() != 0 {
            problems.push(format!(
                "admin.listen = {} is the same address as server.listen; give them different \
                 ports",
                self.admin.listen
            ));
        }
        let smallest_spool = 2 * (server.max_body_bytes + 1024);
        if self.delivery.ack == AckMode::Spool && self.delivery.spool_max_bytes < smallest_spool {
            problems.push(format!(
                "delivery.spool_max_bytes = {} must hold at least two of the largest bodies: \
                 {smallest_spool} or more (or lower server.max_body_bytes)",
                self.delivery.spool_max_bytes
            ));
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

fn demo_app() -> AppSettings {
    AppSettings {
        path: Some("/webhook".to_owned()),
        secret: Some(SecretString::from(DEMO_SECRET)),
        verify_token: Some(SecretString::from(DEMO_VERIFY_TOKEN)),
        demo: true,
        ..AppSettings::default()
    }
}

fn read_secret(
    secret: &mut Option<SecretString>,
    file: &Option<PathBuf>,
    section: &str,
    name: &str,
    problems: &mut Vec<String>,
) {
    let Some(path) = file else { return };
    if secret.is_some() {
        problems.push(format!(
            "{section}.{name} and {section}.{name}_file are both set; keep one"
        ));
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            *secret = Some(SecretString::from(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            ))
        }
        Err(error) => problems.push(format!(
            "{section}.{name}_file = {}: cannot be read ({error})",
            path.display()
        )),
    }
}

fn secret_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Joined(String),
        List(Vec<String>),
    }
    let secrets = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Joined(joined) => joined
            .split(',')
            .map(str::trim)
            .filter(|secret| !secret.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::List(list) => list,
    };
    Ok(secrets.into_iter().map(SecretString::from).collect())
}

fn redact_option<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
    }
}

fn redact_list<S: Serializer>(secrets: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(secrets.iter().map(|_| REDACTED))
}

/// librdkafka properties whose values are credentials.
fn is_sensitive_property(key: &str) -> bool {
    [
        "password",
        "secret",
        "sasl.jaas",
        "key.pem",
        "oauthbearer.config",
        "token",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// `[kafka.librdkafka]`: property names and values, credentials redacted in `Debug` and in
/// printed settings.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct LibrdkafkaProperties(pub BTreeMap<String, String>);

impl LibrdkafkaProperties {
    fn shown(&self) -> impl Iterator<Item = (&String, &str)> {
        self.0.iter().map(|(key, value)| {
            let shown = if is_sensitive_property(key) {
                REDACTED
            } else {
                value.as_str()
            };
            (key, shown)
        })
    }
}

impl std::fmt::Debug for LibrdkafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

impl Serialize for LibrdkafkaProperties {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.shown())
    }
}

#[cfg(test)]
mod tests {
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
            demo.secrets().collect::<Vec<_>>(),
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
                ("UNRELATED", "ignored"),
            ]),
        )
        .expect("valid");
        assert_eq!(settings.server.listen.to_string(), "127.0.0.1:18080");
        assert_eq!(settings.server.max_body_bytes, 4096);
        assert_eq!(
            settings.apps["default"].secrets().collect::<Vec<_>>(),
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
        let message = problems(Settings::load(
            None,
            env(&[("WABA_GATEWAY__KAFKA__BROKER", "x:9092")]),
        ));
        assert!(message.contains("broker"), "{message}");
    }

    #[test]
    fn real_brokers_without_an_app_secret_is_a_problem_naming_the_key() {
        let message = problems(Settings::load(
            None,
            env(&[
                ("WABA_GATEWAY__KAFKA__BROKERS", "k1:9092"),
                ("WABA_GATEWAY__APPS__SHOP__VERIFY_TOKEN", "t"),
            ]),
        ));
        assert!(message.contains("apps.shop.secret is missing"), "{message}");
        let message = problems(Settings::load(
            None,
            env(&[("WABA_GATEWAY__KAFKA__BROKERS", "k1:9092")]),
        ));
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
            app.secrets().collect::<Vec<_>>(),
            vec![&b"s3cret"[..], b"old1", b"old2"]
        );
        assert_eq!(
            app.verify_token.as_ref().map(|t| t.expose_secret()),
            Some("t0ken")
        );
        let message = problems(Settings::load(
            None,
            env(&[
                (
                    "WABA_GATEWAY__APPS__DEFAULT__SECRET_FILE",
                    "/nonexistent/secret",
                ),
                ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", "t"),
            ]),
        ));
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
            settings.apps["default"].secrets().collect::<Vec<_>>(),
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
}
