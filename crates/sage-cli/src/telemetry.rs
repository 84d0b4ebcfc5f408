//! Spans to an OTLP collector (`--otlp-endpoint`, `[telemetry]
//! otlp_endpoint`): the `tracing-opentelemetry` layer sits in the
//! subscriber from the start as an empty reload slot, since `serve` knows
//! its endpoint and its name only once its config is read, and is filled
//! by [`start`]. Without an endpoint the slot stays empty: no span is
//! built for OpenTelemetry and nothing is sent.

use std::sync::{Mutex, OnceLock};

use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::layer::Layered;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::failure::Failure;

/// The subscriber beneath the slot: the filter over the registry, so that
/// what is not logged is not exported either.
pub type Base = Layered<EnvFilter, Registry>;

type Slot = Option<OpenTelemetryLayer<Base, SdkTracer>>;

static HANDLE: OnceLock<reload::Handle<Slot, Base>> = OnceLock::new();
static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

/// The empty slot, for `init_logging`.
pub fn slot() -> reload::Layer<Slot, Base> {
    let (layer, handle) = reload::Layer::new(None);
    let _ = HANDLE.set(handle);
    layer
}

/// Starts exporting spans to `endpoint`, with `platform` as the resource's
/// platform name. A second call does nothing.
pub fn start(endpoint: &str, platform: &str) -> Result<(), Failure> {
    let mut provider_slot = PROVIDER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if provider_slot.is_some() {
        return Ok(());
    }
    let Some(handle) = HANDLE.get() else {
        return Ok(());
    };
    let (provider, tracer) = sage_service::telemetry::tracer_provider(endpoint, platform)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    handle
        .reload(Some(tracing_opentelemetry::layer().with_tracer(tracer)))
        .map_err(|e| Failure::Failed(format!("cannot start exporting spans: {e}")))?;
    sage_service::telemetry::enable();
    *provider_slot = Some(provider);
    Ok(())
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
