//! `[telemetry]`: OpenTelemetry traces (DESIGN §7b), and the standard `OTEL_*` variables
//! that set the same things and win over the file, as every OpenTelemetry SDK reads them.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::redact::redact_option;

/// The sampler names of `telemetry.sampler` / `OTEL_TRACES_SAMPLER`.
pub const SAMPLERS: [&str; 6] = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// The one OTLP protocol the exporter speaks.
pub const PROTOCOL: &str = "http/protobuf";

/// `[telemetry]`. Off unless `endpoint` or `traces_endpoint` is set.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's OTLP/HTTP base URL
    /// (`http://otel-collector:4318`); spans go to its `/v1/traces`.
    pub endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the full URL spans are posted to; wins over
    /// `endpoint`.
    pub traces_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (or `_TRACES_PROTOCOL`): `http/protobuf`.
    pub protocol: String,
    /// `OTEL_EXPORTER_OTLP_HEADERS` (or `_TRACES_HEADERS`): `key=value,key2=value2` sent
    /// with every export, such as a collector's API key. Never printed.
    #[serde(serialize_with = "redact_option")]
    pub headers: Option<SecretString>,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (or `_TRACES_TIMEOUT`): how long one export may take.
    pub timeout_ms: u64,
    /// `OTEL_SERVICE_NAME`: the `service.name` of every span.
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`: `key=value,...` added to the resource
    /// (`deployment.environment.name=prod`); values may be percent-encoded.
    pub resource_attributes: String,
    /// `OTEL_TRACES_SAMPLER`: one of `always_on`, `always_off`, `traceidratio`,
    /// `parentbased_always_on`, `parentbased_always_off`, `parentbased_traceidratio`.
    pub sampler: String,
    /// `OTEL_TRACES_SAMPLER_ARG`: the share of traces the ratio samplers keep, 0 to 1.
    pub sampler_arg: f64,
    /// `OTEL_SDK_DISABLED`: `true` turns tracing off whatever else is set.
    pub disabled: bool,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: ended spans waiting for export; more are dropped and
    /// counted.
    pub max_queue_size: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: spans per export, at most.
    pub max_export_batch_size: usize,
    /// `OTEL_BSP_SCHEDULE_DELAY`: the longest a span waits for its batch, in ms.
    pub schedule_delay_ms: u64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            traces_endpoint: None,
            protocol: PROTOCOL.to_owned(),
            headers: None,
            timeout_ms: 10_000,
            service_name: "waba-gateway".to_owned(),
            resource_attributes: String::new(),
            sampler: "parentbased_always_on".to_owned(),
            sampler_arg: 1.0,
            disabled: false,
            max_queue_size: 2048,
            max_export_batch_size: 512,
            schedule_delay_ms: 5000,
        }
    }
}

/// What the exporter needs, from valid settings.
#[derive(Debug)]
pub struct Exporter {
    /// The URL spans are posted to.
    pub url: http::Uri,
    /// Extra request headers.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// One export's time limit.
    pub timeout: Duration,
    /// The resource: `service.name`, then the configured attributes.
    pub resource: Vec<(String, String)>,
    /// Queue bound.
    pub max_queue_size: usize,
    /// Batch bound.
    pub max_batch: usize,
    /// Batch delay.
    pub delay: Duration,
}

impl TelemetrySettings {
    /// Sets what the `OTEL_*` variables of `env` say; returns the problems of values that
    /// cannot be read. An empty variable is unset, as the specification says.
    pub(super) fn apply_env<'a>(
        &mut self,
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<String> {
        let vars: std::collections::HashMap<&str, &str> = env
            .into_iter()
            .filter(|(key, value)| key.starts_with("OTEL_") && !value.trim().is_empty())
            .map(|(key, value)| (key, value.trim()))
            .collect();
        let first = |names: &[&'static str]| {
            names
                .iter()
                .find_map(|name| vars.get(name).map(|value| (*name, *value)))
        };
        let mut problems = Vec::new();
        if let Some((_, value)) = first(&["OTEL_EXPORTER_OTLP_ENDPOINT"]) {
            self.endpoint = Some(value.to_owned());
        }
        if let Some((_, value)) = first(&["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]) {
            self.traces_endpoint = Some(value.to_owned());
        }
        if let Some((_, value)) = first(&[
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]) {
            value.clone_into(&mut self.protocol);
        }
        if let Some((_, value)) = first(&[
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ]) {
            self.headers = Some(SecretString::from(value.to_owned()));
        }
        if let Some((_, value)) = first(&["OTEL_SERVICE_NAME"]) {
            value.clone_into(&mut self.service_name);
        }
        if let Some((_, value)) = first(&["OTEL_RESOURCE_ATTRIBUTES"]) {
            value.clone_into(&mut self.resource_attributes);
        }
        if let Some((_, value)) = first(&["OTEL_TRACES_SAMPLER"]) {
            value.clone_into(&mut self.sampler);
        }
        let mut number = |names: &[&'static str], what: &str| -> Option<f64> {
            let (name, value) = first(names)?;
            match value.parse::<f64>() {
                Ok(number) if number.is_finite() && number >= 0.0 => Some(number),
                _ => {
                    problems.push(format!(
                        "environment variable {name} = {value:?} is not {what}"
                    ));
                    None
                }
            }
        };
        if let Some(arg) = number(&["OTEL_TRACES_SAMPLER_ARG"], "a number from 0 to 1") {
            self.sampler_arg = arg;
        }
        let whole = "a whole number";
        if let Some(ms) = number(
            &[
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ],
            "a number of milliseconds",
        ) {
            self.timeout_ms = ms as u64;
        }
        if let Some(size) = number(&["OTEL_BSP_MAX_QUEUE_SIZE"], whole) {
            self.max_queue_size = size as usize;
        }
        if let Some(size) = number(&["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"], whole) {
            self.max_export_batch_size = size as usize;
        }
        if let Some(ms) = number(&["OTEL_BSP_SCHEDULE_DELAY"], "a number of milliseconds") {
            self.schedule_delay_ms = ms as u64;
        }
        if let Some((name, value)) = first(&["OTEL_SDK_DISABLED"]) {
            // The specification: only a case-insensitive "true" disables.
            match value.to_ascii_lowercase().as_str() {
                "true" => self.disabled = true,
                "false" => self.disabled = false,
                _ => problems.push(format!(
                    "environment variable {name} = {value:?} is not true or false"
                )),
            }
        }
        problems
    }

    /// Whether spans are made and exported.
    pub fn enabled(&self) -> bool {
        !self.disabled && (self.endpoint.is_some() || self.traces_endpoint.is_some())
    }

    /// The URL spans are posted to: `traces_endpoint` as written, else `endpoint` with
    /// `/v1/traces` appended.
    pub fn traces_url(&self) -> Option<String> {
        self.traces_endpoint.clone().or_else(|| {
            self.endpoint
                .as_ref()
                .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        })
    }

    /// What is wrong with the settings, each problem naming its key and variable.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !SAMPLERS.contains(&self.sampler.as_str()) {
            problems.push(format!(
                "telemetry.sampler (OTEL_TRACES_SAMPLER) = {:?} is not a sampler this gateway \
                 knows: use one of {}",
                self.sampler,
                SAMPLERS.join(", ")
            ));
        }
        if !(0.0..=1.0).contains(&self.sampler_arg) {
            problems.push(format!(
                "telemetry.sampler_arg (OTEL_TRACES_SAMPLER_ARG) = {} must be from 0 to 1 (the \
                 share of traces kept)",
                self.sampler_arg
            ));
        }
        if self.protocol != PROTOCOL {
            problems.push(format!(
                "telemetry.protocol (OTEL_EXPORTER_OTLP_PROTOCOL) = {:?} is not supported: \
                 the gateway exports OTLP over HTTP as protobuf; set \"{PROTOCOL}\" and point \
                 the endpoint at the collector's OTLP/HTTP port (4318)",
                self.protocol
            ));
        }
        for (key, value) in [
            (
                "telemetry.endpoint (OTEL_EXPORTER_OTLP_ENDPOINT)",
                &self.endpoint,
            ),
            (
                "telemetry.traces_endpoint (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)",
                &self.traces_endpoint,
            ),
        ] {
            if let Some(url) = value
                && let Err(why) = http_url(url)
            {
                problems.push(format!("{key} = {url:?} {why}"));
            }
        }
        if let Err(why) = pairs(&self.resource_attributes) {
            problems.push(format!(
                "telemetry.resource_attributes (OTEL_RESOURCE_ATTRIBUTES): {why}"
            ));
        }
        if let Some(headers) = &self.headers
            && let Err(why) = header_pairs(headers.expose_secret())
        {
            problems.push(format!(
                "telemetry.headers (OTEL_EXPORTER_OTLP_HEADERS): {why} (values not shown)"
            ));
        }
        for (key, value) in [
            (
                "telemetry.max_queue_size (OTEL_BSP_MAX_QUEUE_SIZE)",
                self.max_queue_size as u64,
            ),
            (
                "telemetry.max_export_batch_size (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)",
                self.max_export_batch_size as u64,
            ),
            (
                "telemetry.timeout_ms (OTEL_EXPORTER_OTLP_TIMEOUT)",
                self.timeout_ms,
            ),
            (
                "telemetry.schedule_delay_ms (OTEL_BSP_SCHEDULE_DELAY)",
                self.schedule_delay_ms,
            ),
        ] {
            if value == 0 {
                problems.push(format!("{key} must be greater than 0"));
            }
        }
        problems
    }

    /// What the exporter needs; `None` when tracing is off. The settings are valid.
    pub fn exporter(&self) -> Option<Exporter> {
        if !self.enabled() {
            return None;
        }
        let url = self.traces_url()?.parse().ok()?;
        let headers = self
            .headers
            .as_ref()
            .and_then(|headers| header_pairs(headers.expose_secret()).ok())
            .unwrap_or_default();
        let mut resource = vec![("service.name".to_owned(), self.service_name.clone())];
        for (key, value) in pairs(&self.resource_attributes).unwrap_or_default() {
            // OTEL_SERVICE_NAME wins over a service.name among the attributes.
            if key != "service.name" {
                resource.push((key, value));
            }
        }
        Some(Exporter {
            url,
            headers,
            timeout: Duration::from_millis(self.timeout_ms),
            resource,
            max_queue_size: self.max_queue_size.max(1),
            max_batch: self
                .max_export_batch_size
                .clamp(1, self.max_queue_size.max(1)),
            delay: Duration::from_millis(self.schedule_delay_ms.max(1)),
        })
    }
}

/// Whether `url` is an `http` or `https` URL with a host.
fn http_url(url: &str) -> Result<(), &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL")?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(()),
        _ => Err(
            "must be an http:// or https:// URL with a host, such as http://otel-collector:4318",
        ),
    }
}

/// `key=value,key2=value2` with percent-encoded values, as the OpenTelemetry variables
/// write lists.
fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not key=value"))?;
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .map_err(|_| format!("the value of {:?} is not UTF-8 once decoded", key.trim()))?;
            Ok((key.trim().to_owned(), value.into_owned()))
        })
        .collect()
}

/// [`pairs`], each a valid HTTP header.
fn header_pairs(text: &str) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, String> {
    pairs(text)?
        .into_iter()
        .map(|(key, value)| {
            let name = http::HeaderName::try_from(key.as_str())
                .map_err(|_| format!("{key:?} is not a header name"))?;
            let mut value = http::HeaderValue::try_from(value)
                .map_err(|_| format!("the value of {key:?} is not a header value"))?;
            value.set_sensitive(true);
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_env(vars: &[(&str, &str)]) -> (TelemetrySettings, Vec<String>) {
        let mut settings = TelemetrySettings::default();
        let problems = settings.apply_env(vars.iter().copied());
        (settings, problems)
    }

    #[test]
    fn nothing_set_is_off() {
        let settings = TelemetrySettings::default();
        assert!(!settings.enabled());
        assert!(settings.exporter().is_none());
        assert!(settings.problems().is_empty());
    }

    #[test]
    fn the_standard_variables_set_the_exporter_and_the_signal_specific_ones_win() {
        let (settings, problems) = from_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_SERVICE_NAME", "wa-edge"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=prod,service.name=ignored,team=a%20b",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_BSP_SCHEDULE_DELAY", ""),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(settings.problems().is_empty(), "{:?}", settings.problems());
        let exporter = settings.exporter().expect("on");
        assert_eq!(exporter.url, "http://collector:4318/v1/traces");
        assert_eq!(exporter.timeout, Duration::from_millis(2500));
        assert_eq!(
            exporter.delay,
            Duration::from_millis(5000),
            "empty is unset"
        );
        assert_eq!(
            exporter.resource,
            [
                ("service.name".to_owned(), "wa-edge".to_owned()),
                ("deployment.environment.name".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "a b".to_owned()),
            ]
        );
        assert_eq!(exporter.headers[0].0, "api-key");
        assert_eq!(settings.sampler, "parentbased_traceidratio");
        assert!((settings.sampler_arg - 0.25).abs() < f64::EPSILON);

        let (settings, _) = from_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://otel.example/api/traces",
            ),
        ]);
        assert_eq!(
            settings.exporter().expect("on").url,
            "https://otel.example/api/traces"
        );
        let (settings, _) = from_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert!(settings.exporter().is_none());
    }

    #[test]
    fn wrong_values_are_named_with_their_variable() {
        let (settings, problems) = from_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ("OTEL_TRACES_SAMPLER_ARG", "lots"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SDK_DISABLED", "yes"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "bad header=x"),
        ]);
        assert_eq!(
            problems,
            [
                "environment variable OTEL_TRACES_SAMPLER_ARG = \"lots\" is not a number from 0 to 1",
                "environment variable OTEL_SDK_DISABLED = \"yes\" is not true or false",
            ]
        );
        let problems = settings.problems().join("\n");
        for expected in [
            "OTEL_TRACES_SAMPLER) = \"jaeger_remote\" is not a sampler",
            "OTEL_EXPORTER_OTLP_PROTOCOL) = \"grpc\" is not supported",
            "OTEL_EXPORTER_OTLP_ENDPOINT) = \"collector:4318\" must be an http:// or https:// URL",
            "OTEL_RESOURCE_ATTRIBUTES): \"novalue\" is not key=value",
            "OTEL_EXPORTER_OTLP_HEADERS): \"bad header\" is not a header name (values not shown)",
        ] {
            assert!(
                problems.contains(expected),
                "{expected}\nnot in\n{problems}"
            );
        }
        assert!(!problems.contains("s3cret"));
    }
}
