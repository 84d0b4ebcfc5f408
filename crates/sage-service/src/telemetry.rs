//! Spans sent to an OTLP/HTTP collector, when one is configured; off by
//! default, and then nothing here runs on a request's path but a read of
//! [`enabled`].
//!
//! The process that installs the `tracing-opentelemetry` layer (the CLI)
//! builds its tracer provider with [`tracer_provider`] and then calls
//! [`enable`]; from then on the node's request spans take the incoming
//! `traceparent` as their remote parent ([`continue_trace`]) and the
//! delegator's requests carry the id of a span of their own
//! ([`outgoing`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceState, TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::trace::{TraceId, TraceParent};

/// The resource's `service.name`.
pub const SERVICE_NAME: &str = "sage";

/// The resource attribute that names the platform (the node's name).
pub const PLATFORM_ATTRIBUTE: &str = "sage.platform";

/// The path that OTLP/HTTP receivers take traces on, appended to the
/// configured endpoint as `OTEL_EXPORTER_OTLP_ENDPOINT` is.
pub const TRACES_PATH: &str = "/v1/traces";

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: set once the layer is installed.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Says that the `tracing-opentelemetry` layer is installed, so that spans
/// take their parents from and give their ids to `traceparent` headers.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Why no tracer could be built.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The endpoint is not an `http://` or `https://` URL.
    #[error("the OTLP endpoint {endpoint:?} is not an http:// or https:// URL")]
    BadEndpoint {
        /// As given.
        endpoint: String,
    },
    /// The exporter refused its settings.
    #[error("cannot set up the OTLP exporter to {endpoint}: {detail}")]
    Exporter {
        /// As given.
        endpoint: String,
        /// The exporter's words.
        detail: String,
    },
}

/// Checks an endpoint as [`tracer_provider`] would take it: an `http://` or
/// `https://` URL with a host.
///
/// # Errors
/// [`TelemetryError::BadEndpoint`].
pub fn check_endpoint(endpoint: &str) -> Result<(), TelemetryError> {
    let bad = || TelemetryError::BadEndpoint {
        endpoint: endpoint.to_owned(),
    };
    let url = reqwest::Url::parse(endpoint).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad());
    }
    Ok(())
}

/// The traces URL of an endpoint: [`TRACES_PATH`] after its path.
fn traces_url(endpoint: &str) -> String {
    format!("{}{TRACES_PATH}", endpoint.trim_end_matches('/'))
}

/// A tracer provider that batches spans to `endpoint` (OTLP over HTTP,
/// protobuf), its resource `service.name` [`SERVICE_NAME`] with the
/// platform's name where known, and the tracer the layer records with.
///
/// The batch runs on a thread of its own; `shutdown` on the provider sends
/// what is left, so a short command calls it before exiting.
///
/// # Errors
/// [`TelemetryError`] for an endpoint that is not a URL.
pub fn tracer_provider(
    endpoint: &str,
    platform: Option<&str>,
) -> Result<(SdkTracerProvider, SdkTracer), TelemetryError> {
    check_endpoint(endpoint)?;
    let client = ExportClient::new().map_err(|detail| TelemetryError::Exporter {
        endpoint: endpoint.to_owned(),
        detail,
    })?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(traces_url(endpoint))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            detail: e.to_string(),
        })?;
    let mut resource = Resource::builder_empty().with_service_name(SERVICE_NAME);
    if let Some(platform) = platform {
        resource = resource.with_attribute(KeyValue::new(PLATFORM_ATTRIBUTE, platform.to_owned()));
    }
    let resource = resource.build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer(SERVICE_NAME);
    Ok((provider, tracer))
}

/// Makes `span` continue the trace of an incoming `traceparent`. Does
/// nothing unless [`enabled`].
pub(crate) fn continue_trace(span: &tracing::Span, parent: &TraceParent) {
    if !enabled() {
        return;
    }
    let context = SpanContext::new(
        opentelemetry::trace::TraceId::from_bytes(parent.trace_id.0),
        SpanId::from_bytes(parent.parent_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    );
    let remote = opentelemetry::Context::new().with_remote_span_context(context);
    // A span already started keeps its parent; the request span is new.
    let _ = span.set_parent(remote);
}

/// The trace id that exported spans give `span` (a new root span gets a
/// new one), or `None` unless [`enabled`].
pub fn trace_id_of(span: &tracing::Span) -> Option<TraceId> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    let span_ref = context.span();
    let own = span_ref.span_context();
    own.is_valid().then(|| TraceId(own.trace_id().to_bytes()))
}

/// The `traceparent` of one outgoing request, and the span to send it in.
///
/// With spans exported, a new span (a child of the current one) is the
/// request's, and the header names it. Otherwise the header is a new span
/// id in `trace`, and the span is none: nothing is recorded.
pub(crate) fn outgoing(trace: Option<TraceId>, addr: &str) -> (Option<TraceParent>, tracing::Span) {
    if enabled() {
        let span = tracing::info_span!("send", to = addr);
        let context = span.context();
        let span_ref = context.span();
        let own = span_ref.span_context();
        if own.is_valid() {
            let header = TraceParent {
                trace_id: TraceId(own.trace_id().to_bytes()),
                parent_id: own.span_id().to_bytes(),
                flags: own.trace_flags().to_u8(),
            };
            return (Some(header), span);
        }
    }
    (trace.map(TraceParent::child_of), tracing::Span::none())
}

/// The exporter's HTTP client: reqwest, the one the delegator uses, on a
/// runtime of its own, since the batch processor's thread has none.
#[derive(Debug)]
struct ExportClient {
    http: reqwest::Client,
    // `Option` so that dropping it can be a background shutdown, which is
    // allowed even where blocking is not.
    runtime: Option<tokio::runtime::Runtime>,
}

impl ExportClient {
    fn new() -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sage-otlp")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start its runtime: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build its HTTP client: {e}"))?;
        Ok(ExportClient {
            http,
            runtime: Some(runtime),
        })
    }
}

impl Drop for ExportClient {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        let exchange = async move {
            let response = http.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        };
        let runtime = self.runtime.as_ref().ok_or("the exporter is shut down")?;
        let (status, headers, body) = runtime.spawn(exchange).await??;
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}
