//! Logging (flat JSON lines, or pretty on a terminal), optional OpenTelemetry trace export,
//! and the process-wide metrics registry.
//!
//! JSON lines carry the fields of every span in scope at the top level (`service`,
//! `request_id`, `trace_id`, `user_id`, …), so Loki/promtail can index them without digging
//! into nested objects.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes it.
#[must_use = "dropping the guard does not flush traces; call shutdown() on exit"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes spans not yet exported (no-op without an OTLP exporter).
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(Err(e)) = self.provider.map(|p| p.shutdown()) {
            tracing::warn!(error = %e, "trace exporter shutdown failed");
        }
    }
}

/// Installs logging for the process; `format` is `auto` (pretty on a terminal, JSON
/// otherwise), `json` or `pretty`. With the `otlp` feature and `OTEL_EXPORTER_OTLP_ENDPOINT`
/// set, spans are exported over OTLP/HTTP with `service_name` as the resource's service.
pub fn init(service_name: &str, format: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,tower_http=warn"));
    let json = match format {
        "json" => true,
        "pretty" => false,
        _ => !std::io::stdout().is_terminal(),
    };
    let mut layers: Vec<BoxedLayer> = Vec::new();
    if json {
        layers.push(tracing_flat_json::FlatJsonLayer::new(std::io::stdout).boxed());
    } else {
        layers.push(tracing_subscriber::fmt::layer().boxed());
    }
    #[cfg(feature = "otlp")]
    let provider = otlp::layer(service_name).map(|(layer, provider)| {
        layers.push(layer);
        provider
    });
    #[cfg(not(feature = "otlp"))]
    let _ = service_name;
    // Install the metrics recorder first: anything recorded before it exists (e.g. series
    // created at 0 while services start) would go to the no-op recorder and be lost.
    metrics_handle();
    // A second init (tests start many apps in one process) is harmless.
    let _ = tracing_subscriber::registry()
        .with(layers.with_filter(filter))
        .try_init();
    Telemetry {
        #[cfg(feature = "otlp")]
        provider,
    }
}

/// Logging only, with the binary's default service name.
pub fn init_logging(format: &str) {
    init("intellicolab", format).shutdown();
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer;

    use super::BoxedLayer;

    /// The OTLP export layer, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific
    /// variable) is set; the exporter reads the standard `OTEL_*` variables itself.
    pub fn layer(service_name: &str) -> Option<(BoxedLayer, SdkTracerProvider)> {
        let configured = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        if !configured {
            return None;
        }
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                eprintln!("OTLP trace exporter not started: {e}");
                return None;
            }
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name.to_owned())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("intellicolab");
        let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
        Some((layer, provider))
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus registry, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Histograms buffer samples until upkeep drains them into their buckets; without a
        // scrape they would grow forever, so drain them every few seconds regardless.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
        // Fails only if another recorder was installed first; the handle still renders.
        let _ = metrics::set_global_recorder(recorder);
        process_collector().describe();
        handle
    })
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Renders the registry in the Prometheus text format, with fresh process metrics
/// (`process_cpu_seconds_total`, `process_resident_memory_bytes`, …).
pub fn render_metrics() -> String {
    let handle = metrics_handle();
    process_collector().collect();
    handle.render()
}
