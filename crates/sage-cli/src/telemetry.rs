//! Spans to an OTLP collector (`--otlp-endpoint`, `[telemetry]
//! otlp_endpoint`): the `tracing-opentelemetry` layer, in the subscriber
//! from its start or not at all. Without an endpoint no span is built for
//! OpenTelemetry and nothing is sent.
//!
//! The layer is not added later through `tracing_subscriber::reload`: a
//! reloaded layer hides its type from `downcast_ref`, which is how
//! `tracing-opentelemetry` finds the span context of a span, so parents
//! could be neither set nor read. `serve` starts logging once it has read
//! its config instead.

use std::sync::Mutex;

use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

use crate::failure::Failure;

static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

/// The layer that exports spans to `endpoint`, with `platform` as the
/// resource's platform name.
pub fn layer<S>(
    endpoint: &str,
    platform: Option<&str>,
) -> Result<OpenTelemetryLayer<S, SdkTracer>, Failure>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let (provider, tracer) = sage_service::telemetry::tracer_provider(endpoint, platform)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    *PROVIDER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(provider);
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Sends the spans not yet sent and stops the exporter: before exiting.
pub fn shutdown() {
    let provider = PROVIDER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(provider) = provider {
        if let Err(error) = provider.shutdown() {
            tracing::warn!(%error, "cannot send the last spans to the OTLP collector");
        }
    }
}
