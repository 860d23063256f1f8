//! The one typed settings tree (DESIGN §3): built-in defaults, then the TOML file, then
//! `WABA_GATEWAY__SECTION__KEY` environment variables. Unknown keys are errors.
//!
//! Secrets are [`SecretString`]s: redacted in `Debug`, in `check-config` output and in
//! logs. Each may be given inline, by environment, or as a `*_file` path (a Kubernetes
//! Secret mount) whose content, less a trailing newline, is the secret.

mod load;
mod redact;
mod telemetry;
mod types;
mod unknown;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use crate::tls::{META_CLIENT_NAME, TlsSettings};
use load::{secret_list, string_list};
pub use redact::{LibrdkafkaProperties, is_shown_property};
use redact::{redact_list, redact_option};
pub use telemetry::{Exporter as TraceExporter, SAMPLERS, TelemetrySettings};
pub use unknown::misnamed_variables;
pub use validate::log_filter_problem;

/// Secret and verify token of the demo app that `serve` runs on embedded Kafka when no app
/// is configured. Public on purpose: the README's quickstart signs with them.
pub const DEMO_SECRET: &str = "demo-app-secret";
/// See [`DEMO_SECRET`].
pub const DEMO_VERIFY_TOKEN: &str = "demo-verify-token";

/// Why settings could not be loaded. `main` exits with 78 (`EX_CONFIG`) on any of them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The settings cannot be read or are not usable; one sentence per problem, each
    /// naming the key and what to write.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Everything the gateway can be configured with.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    /// The public listener: webhooks, `/healthz`, `/readyz`.
    pub server: ServerSettings,
    /// The private listener: `/metrics`, `/healthz`, `/readyz`.
    pub admin: AdminSettings,
    /// One table per Meta app, by name.
    pub apps: BTreeMap<String, AppSettings>,
    /// Brokers, topics and producer properties.
    pub kafka: KafkaSettings,
    /// What one record holds.
    pub routing: RoutingSettings,
    /// When a notification is acknowledged to Meta.
    pub delivery: DeliverySettings,
    /// The bounded drain on SIGTERM/SIGINT.
    pub shutdown: ShutdownSettings,
    /// The Graph API, for `waba-gateway subscriptions`.
    pub graph: GraphSettings,
    /// Log level and format.
    pub log: LogSettings,
    /// OpenTelemetry traces; the `OTEL_*` variables win.
    pub telemetry: TelemetrySettings,
}

/// `[server]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default)]
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
    /// Notifications being verified and accepted at once (their bodies complete); one
    /// more gets 503.
    pub max_in_flight_requests: usize,
    /// Memory for request bodies, counted from their first byte until the notification is
    /// accepted: bodies still arriving (signed or not, authentic or not) and bodies being
    /// verified and accepted. A body that would go past it gets 503 with `Retry-After`,
    /// and the rest of it is not read. At least 4 × `max_body_bytes`.
    pub receive_budget_bytes: u64,
    /// Source networks allowed to call the webhook listener, such as `"173.252.64.0/18"` or
    /// a single address (a comma-separated string by environment). Empty, the default,
    /// allows every source. A connection from outside these networks and
    /// `trusted_proxies` is closed as soon as it is accepted; probes use the admin
    /// listener, which is never filtered.
    #[serde(deserialize_with = "string_list")]
    pub allowed_source_cidrs: Vec<String>,
    /// Networks of the load balancers in front of the gateway: for a connection from one
    /// of them, the client is the last address of `X-Forwarded-For` that is not itself a
    /// trusted proxy. Only used with `allowed_source_cidrs`.
    #[serde(deserialize_with = "string_list")]
    pub trusted_proxies: Vec<String>,
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
            receive_budget_bytes: 64 * 1024 * 1024,
            allowed_source_cidrs: Vec::new(),
            trusted_proxies: Vec::new(),
            tls: None,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default)]
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
#[serde(default)]
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
    pub fn secrets(&self) -> impl Iterator<Item = &SecretString> {
        self.secret.iter().chain(&self.previous_secrets)
    }
}

/// `[kafka]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default)]
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
    /// librdkafka properties read from files (Kubernetes Secret mounts), e.g.
    /// `"sasl.password" = "/etc/kafka/password"`; the file's content, less a trailing
    /// newline, is the value, which is never printed. By environment, `_` stands for `.`.
    pub librdkafka_files: BTreeMap<String, PathBuf>,
    /// The values read from `librdkafka_files`.
    #[serde(skip)]
    pub librdkafka_secrets: BTreeMap<String, SecretString>,
    /// Create missing topics before the first record is produced to them.
    pub create_topics: bool,
    /// Partitions of topics the gateway creates.
    pub topic_partitions: i32,
    /// Replication factor of topics the gateway creates; -1 takes the broker's default.
    pub topic_replication_factor: i32,
    /// CloudEvents binary-mode headers (`ce_*`) on every routed record.
    pub cloudevents: bool,
    /// How often librdkafka's statistics (queue, broker RTT and state) are read into
    /// `/metrics`; 0 turns them off.
    pub statistics_interval_ms: u64,
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
            librdkafka_files: BTreeMap::new(),
            librdkafka_secrets: BTreeMap::new(),
            create_topics: true,
            topic_partitions: 6,
            topic_replication_factor: -1,
            cloudevents: false,
            statistics_interval_ms: 15_000,
            embedded_address_file: PathBuf::from("data/embedded-kafka.addr"),
        }
    }
}

impl KafkaSettings {
    /// True when the gateway runs its own in-memory broker.
    pub fn is_embedded(&self) -> bool {
        self.brokers == "embedded"
    }

    /// Every librdkafka property to pass to the clients: `[kafka.librdkafka]` and the
    /// values read from `[kafka.librdkafka_files]`.
    pub fn librdkafka_properties(&self) -> BTreeMap<String, String> {
        let mut properties = self.librdkafka.0.clone();
        for (key, value) in &self.librdkafka_secrets {
            properties.insert(key.clone(), value.expose_secret().to_owned());
        }
        properties
    }

    /// The properties whose values are never to be shown: those read from files.
    pub fn hidden_properties(&self) -> std::collections::BTreeSet<String> {
        self.librdkafka_secrets.keys().cloned().collect()
    }

    /// The topic layout these settings describe, splitting by change: what reads the
    /// topics (`tail`, checks) needs. What publishes takes [`Settings::routing`], which
    /// adds `routing.split`.
    pub fn routing(&self) -> crate::routing::Routing {
        crate::routing::Routing::new(
            self.topic_template.clone(),
            self.topics.clone(),
            self.unrouted_topic.clone(),
            self.deadletter_topic.clone(),
        )
        .with_cloudevents(self.cloudevents)
    }
}

/// `[routing]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RoutingSettings {
    /// `change`: one record per change; `item`: one per message, status and value-level
    /// error of a `messages` change (DESIGN §6).
    pub split: crate::routing::SplitBy,
}

impl Settings {
    /// The topic layout and record shape the gateway publishes with: `[kafka]`'s topics
    /// and `cloudevents`, and `[routing]`'s split.
    pub fn routing(&self) -> crate::routing::Routing {
        self.kafka.routing().with_split(self.routing.split)
    }

    /// The most memory `serve` takes with these settings, whatever clients send
    /// (SECURITY.md, "Bounded whatever clients send"): what every process needs, each open
    /// connection's buffers, request bodies (`server.receive_budget_bytes`) and the records
    /// split from them, and what is on its way to Kafka (`delivery.memory_budget_bytes`).
    pub fn memory_bound_bytes(&self) -> u64 {
        MEMORY_BASE_BYTES
            + self.server.max_connections as u64 * MEMORY_PER_CONNECTION_BYTES
            + 2 * self.server.receive_budget_bytes
            + self.delivery.memory_budget_bytes
    }
}

/// What a gateway takes before any request: the program, its runtime, the Kafka client's
/// own buffers beside its queue, metrics and the spool's index (12 MB measured idle; the
/// rest is room for librdkafka's per-broker buffers and one body being reassembled).
pub const MEMORY_BASE_BYTES: u64 = 48 * 1024 * 1024;

/// What one open connection may hold at most: its request head buffer (16 KiB), the HTTP
/// state and its task (4,090 connections each holding a head of 16 KiB measured 28 KiB
/// each).
pub const MEMORY_PER_CONNECTION_BYTES: u64 = 32 * 1024;

/// When Meta gets its 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Once the body is durably on the local spool; forwarded to Kafka behind it.
    Spool,
    /// Once Kafka has acknowledged every record of the request.
    Kafka,
    /// `none`: once the records are queued in memory; a crash loses what is queued.
    #[serde(rename = "none")]
    Queued,
}

/// `[delivery]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct DeliverySettings {
    /// When Meta gets its 200.
    pub ack: AckMode,
    /// Directory of the durable spool (ack = "spool").
    pub spool_dir: PathBuf,
    /// Spool size at which new notifications get 503.
    pub spool_max_bytes: u64,
    /// In `kafka` mode, how long a request waits for Kafka before it gets 503.
    pub kafka_ack_timeout_ms: u64,
    /// In `spool` mode, the producer's `linger.ms`: nobody waits for the forwarder's
    /// batches, so they can be large.
    pub forward_linger_ms: u64,
    /// In `spool` mode, the producer's `batch.size`.
    pub forward_batch_bytes: u64,
    /// Memory for notifications on their way to Kafka: half for the producer's queue
    /// (`queue.buffering.max.kbytes`), a quarter for the spool entries kept in memory for
    /// the forwarder, a quarter for the entries it is publishing. At least 4 ×
    /// `server.max_body_bytes`.
    pub memory_budget_bytes: u64,
}

impl DeliverySettings {
    /// The producer's queue: half the memory budget.
    pub fn producer_queue_bytes(&self) -> u64 {
        self.memory_budget_bytes / 2
    }

    /// The spool entries kept in memory for the forwarder, and those it is publishing: a
    /// quarter of the memory budget each.
    pub fn forward_read_ahead_bytes(&self) -> u64 {
        self.memory_budget_bytes / 4
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            ack: AckMode::Spool,
            spool_dir: PathBuf::from("data/spool"),
            spool_max_bytes: 1024 * 1024 * 1024,
            kafka_ack_timeout_ms: 5_000,
            forward_linger_ms: 20,
            forward_batch_bytes: 1024 * 1024,
            memory_budget_bytes: 128 * 1024 * 1024,
        }
    }
}

/// `[shutdown]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ShutdownSettings {
    /// After SIGTERM, how long the gateway keeps accepting and answering as before while
    /// `/readyz` says 503, so that load balancers and Kubernetes endpoints stop sending
    /// before the listener closes. The drain follows.
    pub lame_duck_ms: u64,
    /// Upper bound on finishing in-flight requests and flushing the producer, after the
    /// lame-duck period.
    pub drain_timeout_ms: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            lame_duck_ms: 5_000,
            drain_timeout_ms: 20_000,
        }
    }
}

/// `[graph]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct GraphSettings {
    /// Graph API origin.
    pub base_url: String,
    /// Graph API version path segment.
    pub api_version: String,
    /// This app's id, for `subscriptions doctor`; empty: the access token's own app.
    pub app_id: String,
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
            app_id: String::new(),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default)]
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
    /// The app whose path is `path`.
    pub fn app_path(name: &str, app: &AppSettings) -> String {
        match &app.path {
            Some(path) => path.clone(),
            None if name == "default" => "/webhook".to_owned(),
            None => format!("/webhook/{name}"),
        }
    }
}

/// A network written as a CIDR (`"173.252.64.0/18"`) or a single address (`"10.0.0.7"`).
pub fn network(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}
