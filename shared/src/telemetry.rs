//! Tracing setup: one subscriber per process, compact or JSON, filtered by `JET_LOG`; spans
//! exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; and the W3C
//! `traceparent` bridge that lets an instance carry the trace that started it.

use crate::config::{Config, LogFormat};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, fmt};

/// Whether this process exports spans; read by [`instance_traceparent`] so that a process
/// that exports nothing never creates anchor spans for nothing.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The running telemetry; dropping it flushes the spans not yet exported (the batch
/// exporter's shutdown), so keep it alive for the whole of `main`.
#[must_use = "dropping the guard shuts the span exporter down"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            // The subscriber may already be gone: say it on stderr.
            eprintln!("span exporter shutdown: {err}");
        }
    }
}

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored
/// and exports nothing), which lets `jet dev` and tests share code paths with the binaries.
/// `service` names the process in exported spans unless `OTEL_SERVICE_NAME` is set.
pub fn init(config: &Config, service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match config.log_format {
        LogFormat::Compact => fmt::layer().with_target(true).compact().boxed(),
        // `spans` lists the line's context; the current span alone would repeat its last entry.
        LogFormat::Json => fmt::layer()
            .with_target(true)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    };
    let (provider, otel) = match exporter(config, service) {
        Ok(Some(provider)) => {
            let tracer = provider.tracer("jet");
            // Our own spans only, whatever `JET_LOG` says: turning logs down must not cut
            // traces apart, and library spans (queries, HTTP/2 frames) would drown them.
            let ours = Targets::new()
                .with_target("jet_api", LevelFilter::INFO)
                .with_target("jet_worker", LevelFilter::INFO)
                .with_target("jet_shared", LevelFilter::INFO);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(ours);
            (Some(provider), Some(layer))
        }
        Ok(None) => (None, None),
        Err(err) => {
            eprintln!("OTLP span exporter not started: {err}");
            (None, None)
        }
    };
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(otel)
        .try_init()
        .is_ok();
    let provider = provider.filter(|_| installed);
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    Telemetry { provider }
}

/// The OTLP/HTTP (protobuf) span exporter behind a batch processor, when an endpoint is
/// configured. The SDK reads the standard variables itself (`OTEL_EXPORTER_OTLP_*`,
/// `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`).
fn exporter(
    config: &Config,
    service: &'static str,
) -> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    if !config.otel_exporting {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !config.otel_service_named {
        resource = resource.with_service_name(service);
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// Whether this process exports spans (so a lookup made only for a trace is worth its cost).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The W3C `traceparent` of `span`, when spans are exported and it belongs to a trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// The trace context a new instance stores: the creating span's (a request, a sub-workflow
/// node), or, where nothing traced created it (a cron fire, a listener event), a fresh root
/// span's, so that all of that instance's node executions still join one trace. `None` when
/// this process exports nothing.
pub fn instance_traceparent() -> Option<String> {
    if !exporting() {
        return None;
    }
    traceparent_of(&tracing::Span::current()).or_else(|| {
        let anchor = tracing::info_span!(parent: None, "instance_created");
        traceparent_of(&anchor)
    })
}

/// Makes `span` (not yet entered) a child of the remote span that `traceparent` names. An
/// absent, malformed or foreign value leaves the span where it was: a bad header from a
/// caller must never fail its request.
pub fn set_remote_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(value) = traceparent.filter(|v| v.len() <= 128) else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), value.trim().to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}
