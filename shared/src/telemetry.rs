//! Logging setup: pretty for humans, JSON for machines (`LOG_FORMAT`), filtered by `RUST_LOG`;
//! and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans exported over OTLP.
//!
//! Export is off unless an OTLP endpoint is named (`OTEL_EXPORTER_OTLP_ENDPOINT`, or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), and off means absent: no OpenTelemetry layer in the
//! subscriber and [`crate::trace::exporting`] false, so the transport adds no span. On, spans
//! go out as OTLP over HTTP/protobuf (`http://host:4318`, to which `/v1/traces` is appended)
//! in batches from a thread of their own, and the standard variables are read by the
//! OpenTelemetry SDK itself: `OTEL_SERVICE_NAME` (default: the service's name),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_TRACES_SAMPLER` (+ `_ARG`), `OTEL_BSP_SCHEDULE_DELAY` and the other `OTEL_BSP_*`.
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn export off. Spans are always
//! taken at `info` and above, whatever `RUST_LOG` says about log lines.
//!
//! [`Telemetry::shutdown`] exports what is still buffered; `startup::main` calls it after the
//! service stopped.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer as _, filter::LevelFilter, fmt, prelude::*};

use crate::trace;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "pretty" | "text" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("LOG_FORMAT must be `pretty` or `json`, not `{other}`")),
        }
    }
}

/// The span exporter, if one runs. Shut it down when the service has stopped.
#[derive(Debug, Default)]
#[must_use = "spans still buffered are lost unless `shutdown` is called"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered (within `OTEL_BSP_EXPORT_TIMEOUT`) and stops the
    /// exporter. Blocks: call it outside the async runtime. A no-op when not exporting.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            trace::set_exporting(false);
            if let Err(error) = provider.shutdown() {
                tracing::warn!(error = %error, "exporting the last spans failed");
            }
        }
    }
}

/// Installs the global subscriber (once; later calls are no-ops and export nothing) with
/// `filter` in `EnvFilter` syntax; an unreadable filter falls back to `info` with a warning.
/// Spans are exported as `service` (see the module docs) when an OTLP endpoint is set.
///
/// Call it outside the async runtime: the exporter's HTTP client runs one of its own.
pub fn init(format: LogFormat, filter: &str, service: &str) -> Telemetry {
    let (filter, bad_filter) = match EnvFilter::try_new(filter) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
    };
    let export = export_settings(&|name| std::env::var(name).ok());
    let (provider, export_error) = match export.as_ref().map(|settings| tracer_provider(settings, service)) {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    let installed = match provider.as_ref() {
        // The log filter goes on the log layer alone, so that `RUST_LOG=warn` keeps the spans.
        Some(provider) => {
            let spans = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
                .with_filter(LevelFilter::INFO);
            let registry = tracing_subscriber::registry().with(spans);
            match format {
                LogFormat::Pretty => registry.with(pretty_layer().with_filter(filter)).try_init(),
                LogFormat::Json => registry.with(json_layer().with_filter(filter)).try_init(),
            }
        }
        // Without export, exactly the subscriber of old: one filter, one log layer.
        None => {
            let registry = tracing_subscriber::registry().with(filter);
            match format {
                LogFormat::Pretty => registry.with(pretty_layer()).try_init(),
                LogFormat::Json => registry.with(json_layer()).try_init(),
            }
        }
    };
    if let Some(error) = bad_filter {
        tracing::warn!(error = %error, "RUST_LOG is not a valid filter; logging at info");
    }
    if let Some(error) = export_error {
        tracing::warn!(error = %error, "cannot export spans over OTLP; continuing without");
    }
    let provider = provider.filter(|_| installed.is_ok());
    if let (Some(settings), Some(_)) = (&export, &provider) {
        trace::set_exporting(true);
        tracing::info!(endpoint = %settings.endpoint, "exporting spans over OTLP (http/protobuf)");
        if let Some(protocol) = &settings.other_protocol {
            tracing::warn!(%protocol, "only http/protobuf is built in; OTEL_EXPORTER_OTLP_PROTOCOL is ignored");
        }
    }
    Telemetry { provider }
}

/// Human-readable lines, coloured only on a terminal: a service's output piped to a file, a
/// container log or a collector gets no escape codes, and no span pays for colouring its fields
/// (the fmt layer formats a span's fields when the span is created, once per message).
/// `NO_COLOR` (any non-empty value) turns colours off on a terminal too.
fn pretty_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use std::io::IsTerminal as _;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    fmt::layer().with_ansi(colours(std::io::stdout().is_terminal(), no_color))
}

/// Whether log lines are coloured: on a terminal, unless `NO_COLOR` asks otherwise.
fn colours(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

fn json_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(true)
}

/// What the `OTEL_*` variables ask for, when they ask for an export.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExportSettings {
    /// The endpoint as set (for the log line; the SDK resolves it itself).
    endpoint: String,
    /// Whether the service name comes from `service` (no `OTEL_SERVICE_NAME`, no
    /// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`).
    default_service_name: bool,
    /// A protocol other than http/protobuf that was asked for.
    other_protocol: Option<String>,
}

/// Reads the settings through `lookup`; `None` when nothing is to be exported. A variable set
/// but blank counts as unset (compose's `${VAR:-}`), as everywhere in the configuration.
fn export_settings(lookup: &dyn Fn(&str) -> Option<String>) -> Option<ExportSettings> {
    let var = |name: &str| lookup(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return None;
    }
    if var("OTEL_TRACES_EXPORTER").is_some_and(|value| !value.eq_ignore_ascii_case("otlp")) {
        return None;
    }
    let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))?;
    let default_service_name = var("OTEL_SERVICE_NAME").is_none()
        && !var("OTEL_RESOURCE_ATTRIBUTES")
            .is_some_and(|attributes| attributes.split(',').any(|pair| pair.trim().starts_with("service.name=")));
    let other_protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .filter(|protocol| protocol != "http/protobuf");
    Some(ExportSettings { endpoint, default_service_name, other_protocol })
}

fn tracer_provider(
    settings: &ExportSettings,
    service: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig as _;

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()?;
    // The SDK's detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    let mut resource = Resource::builder();
    if settings.default_service_name {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colours(true, false));
        assert!(!colours(false, false), "piped output must carry no escape codes");
        assert!(!colours(true, true), "NO_COLOR turns colours off on a terminal");
        assert!(!colours(false, true));
    }

    fn settings(vars: &[(&str, &str)]) -> Option<ExportSettings> {
        export_settings(&|name| vars.iter().find(|(var, _)| *var == name).map(|(_, value)| (*value).to_owned()))
    }

    #[test]
    fn export_is_on_only_with_an_endpoint_and_not_disabled() {
        assert_eq!(settings(&[]), None);
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), None, "blank is unset");
        let on = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318")]).unwrap();
        assert_eq!(on.endpoint, "http://jaeger:4318");
        assert!(on.default_service_name);
        assert_eq!(on.other_protocol, None);
        let traces_only = settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")]).unwrap();
        assert_eq!(traces_only.endpoint, "http://c:4318/v1/traces");
        for off in [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")] {
            assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318"), off]), None, "{off:?}");
        }
    }

    #[test]
    fn the_service_name_is_the_operators_when_given() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318");
        assert!(!settings(&[endpoint, ("OTEL_SERVICE_NAME", "signup")]).unwrap().default_service_name);
        let attributes = ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=dev, service.name=signup");
        assert!(!settings(&[endpoint, attributes]).unwrap().default_service_name);
        let grpc = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap();
        assert_eq!(grpc.other_protocol.as_deref(), Some("grpc"));
    }
}
