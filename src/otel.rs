//! Request traces over OTLP/HTTP (`[tracing] otlp_endpoint`): one trace a request, its
//! steps as spans.
//!
//! Spans are ordinary `tracing` spans of target [`TARGET`], made with [`span!`], turned into
//! OpenTelemetry spans by `tracing-opentelemetry` and sent by `opentelemetry-otlp`'s batch
//! processor. Each instance with tracing on has a subscriber of its own ([`Tracing`]), which
//! its requests, fills and loops run under; so instances in one process (the tests) each
//! send to their own collector, and an instance with tracing off sends nowhere at all.
//!
//! Tracing off costs the request path next to nothing: no subscriber is interested in
//! [`TARGET`] (the binary's log filter turns it off), so each `span!` is one check of a
//! cached interest and yields a disabled span, and nothing here is computed for one.
//!
//! Export never waits on the request path: a finished span goes into a bounded queue that a
//! thread of its own sends in batches. A dead or slow collector fills that queue, and the
//! spans that do not fit are dropped: traces are lost, requests are not.

use crate::config::TracingConfig;
use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tracing::{Dispatch, Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

/// The target of every span of a request's trace. The binary's log filter turns it off, so
/// that logs never pay for, or show, these spans.
pub const TARGET: &str = "slate::otel";

/// One step of a request, as a span of its trace (disabled when tracing is off).
macro_rules! span {
    ($name:literal $(, $($fields:tt)*)?) => {
        tracing::info_span!(target: $crate::otel::TARGET, $name $(, $($fields)*)?)
    };
}
pub(crate) use span;

/// Finished spans held for export at most; past this, new ones are dropped.
const QUEUE: usize = 2048;

/// How long one export may take: a collector that does not answer holds up only the
/// exporting thread, and only this long a batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutting down waits for the last spans to go out.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the OTLP exporter: {0}")]
pub struct TracingError(String);

/// One instance's tracing: the exporter and the subscriber its work runs under.
pub struct Tracing {
    provider: SdkTracerProvider,
    dispatch: Dispatch,
}

impl Tracing {
    /// Starts exporting to `cfg.otlp_endpoint`; `None` when tracing is off. Connects to
    /// nothing yet: a collector that is not there is found out by the exporting thread.
    pub fn start(cfg: &TracingConfig) -> Result<Option<Tracing>, TracingError> {
        let Some(endpoint) = &cfg.otlp_endpoint else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TracingError(e.to_string()))?;
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .with_scheduled_delay(cfg.export_every)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batches)
            .build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("slate")
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let spans = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("slate"))
            // Attributes nobody reads on a proxy's trace, each a cost on every span.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // Nothing here reads OpenTelemetry's current context (parents come from the
            // span tree), so entering a span need not make its context current: that would
            // cost every poll of every traced future.
            .with_context_activation(false)
            // Our spans, and warnings and errors (a failed fill) as events on them.
            .with_filter(filter_fn(|m| {
                m.target() == TARGET || (m.is_event() && *m.level() <= Level::WARN)
            }));
        // Logs go on to the subscriber that was in force when the instance started (the
        // binary's log output), as they would without tracing.
        let logs = tracing::dispatcher::get_default(|d| d.clone());
        let keep = logs.clone();
        let logs = Forward(logs).with_filter(filter_fn(move |m| m.is_event() && keep.enabled(m)));
        let dispatch = Dispatch::new(Registry::default().with(spans).with(logs));
        tracing::info!(endpoint = %endpoint, "exporting request traces over OTLP/HTTP");
        Ok(Some(Tracing { provider, dispatch }))
    }

    /// Sends what is left, waiting a little for it; blocks, so called off the runtime.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
    }
}

/// `fut`, run under the subscriber of `tracing` when it is on, as is otherwise.
pub fn under<F: Future>(tracing: Option<&Tracing>, fut: F) -> Under<F> {
    Under {
        dispatch: tracing.map(|t| t.dispatch.clone()),
        inner: Some(fut),
    }
}

pin_project_lite::pin_project! {
    /// A future polled, and dropped, under a subscriber (see [`under`]).
    ///
    /// Dropped too: a span's last handle can go with the future (a fill's, when its task
    /// ends), and the registry closes the span's parent through the subscriber in force
    /// when the child closes. Outside this one, the parent (the request) would never close,
    /// and never be sent.
    pub struct Under<F> {
        dispatch: Option<Dispatch>,
        #[pin]
        inner: Option<F>,
    }

    impl<F> PinnedDrop for Under<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(d) = this.dispatch.as_ref() {
                let mut inner = this.inner;
                tracing::dispatcher::with_default(d, || inner.set(None));
            }
        }
    }
}

impl<F: Future> Future for Under<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let Some(d) = this.dispatch.as_ref() else {
            return match this.inner.as_pin_mut() {
                Some(f) => f.poll(cx),
                None => panic!("a future polled after it completed"),
            };
        };
        tracing::dispatcher::with_default(d, || {
            let polled = match this.inner.as_mut().as_pin_mut() {
                Some(f) => f.poll(cx),
                None => panic!("a future polled after it completed"),
            };
            if polled.is_ready() {
                this.inner.set(None);
            }
            polled
        })
    }
}

/// Events handed on to another subscriber.
struct Forward(Dispatch);

impl<S: tracing::Subscriber> Layer<S> for Forward {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        self.0.event(event);
    }
}

/// Makes `span` a child of the client's trace when the request carries a W3C
/// `traceparent`, so slate's steps show up under the client's own span.
pub fn continue_trace(span: &Span, headers: &HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Names `span` anew: its OpenTelemetry span, already started, takes no `otel.name`.
pub fn rename(span: &Span, name: String) {
    if !span.is_disabled() {
        span.context().span().update_name(name);
    }
}

/// Puts `span` in the `traceparent` (and `tracestate`) of a request going upstream, in place
/// of what the client sent, so the back end's trace continues from slate's span.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
    if headers.get("tracestate").is_some_and(|v| v.is_empty()) {
        headers.remove("tracestate");
    }
}
