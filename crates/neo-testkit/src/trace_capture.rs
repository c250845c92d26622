//! A capturing tracing layer for trace-context tests: [`TraceCapture::install`] sets a
//! process-wide subscriber that gives spans W3C trace contexts and records which context each
//! span links to, and installs it as neo-core's
//! [`TracePropagation`](neo_core::trace::TracePropagation).
//!
//! A span created with a `traceparent` field, and optionally `tracestate` (as an HTTP
//! server's request span would be, from the incoming headers), starts from that context; a span inside it gets the same trace
//! id and a span id of its own; a span outside any is untraced.

use neo_core::TraceContext;
use neo_core::sync::lock;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Subscriber, dispatcher};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

/// What the capture saw of one span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedSpan {
    /// Its name (`neo_queue.job`, ...).
    pub name: String,
    /// Its own trace context, when it is traced.
    pub context: Option<TraceContext>,
    /// The contexts it was linked to ([`neo_core::trace::link_current`]).
    pub links: Vec<TraceContext>,
    /// Its fields as text, in the order recorded (a field recorded twice appears twice).
    pub fields: Vec<(String, String)>,
}

impl CapturedSpan {
    /// The last value recorded for `field`.
    pub fn field(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(name, _)| name == field)
            .map(|(_, value)| value.as_str())
    }
}

/// The process-wide capture (one per test process: nextest runs each test in its own).
#[derive(Debug, Default)]
pub struct TraceCapture {
    spans: Mutex<Vec<CapturedSpan>>,
    next_span_id: AtomicU64,
}

/// A span's place in the capture and its context, kept in its extensions.
struct Slot {
    index: usize,
    context: Option<TraceContext>,
}

static CAPTURE: OnceLock<Arc<TraceCapture>> = OnceLock::new();

impl TraceCapture {
    /// Installs the capture as the global tracing subscriber and neo-core's trace
    /// propagation, once per process; later calls return the same capture.
    ///
    /// # Panics
    /// When another global subscriber or propagation was installed first (a test setup bug).
    pub fn install() -> Arc<TraceCapture> {
        Arc::clone(CAPTURE.get_or_init(|| {
            let capture = Arc::new(TraceCapture {
                next_span_id: AtomicU64::new(1),
                ..TraceCapture::default()
            });
            let subscriber = Registry::default().with(CaptureLayer(Arc::clone(&capture)));
            if tracing::subscriber::set_global_default(subscriber).is_err() {
                panic!("TraceCapture::install: another global tracing subscriber is set");
            }
            if let Err(error) = neo_core::trace::install(Propagation) {
                panic!("TraceCapture::install: {error}");
            }
            capture
        }))
    }

    /// Every span named `name` seen so far.
    pub fn spans_named(&self, name: &str) -> Vec<CapturedSpan> {
        lock(&self.spans)
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    /// Every span named `name` linked to a context of `trace_id`.
    pub fn linked_to(&self, name: &str, trace_id: [u8; 16]) -> Vec<CapturedSpan> {
        self.spans_named(name)
            .into_iter()
            .filter(|s| s.links.iter().any(|l| l.trace_id() == trace_id))
            .collect()
    }

    /// A span id no other captured span has.
    fn fresh_span_id(&self) -> [u8; 8] {
        self.next_span_id
            .fetch_add(1, Ordering::Relaxed)
            .to_be_bytes()
    }
}

struct CaptureLayer(Arc<TraceCapture>);

#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let field = |wanted: &str| {
            fields
                .0
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| value.as_str())
        };
        let own = field("traceparent")
            .and_then(|parent| TraceContext::from_headers(parent, field("tracestate")).ok());
        let inherited = || {
            let parent = span.parent()?;
            let extensions = parent.extensions();
            let context = extensions.get::<Slot>()?.context.as_ref()?;
            let child = TraceContext::new(
                context.trace_id(),
                self.0.fresh_span_id(),
                context.sampled(),
            )
            .ok()?;
            match context.tracestate() {
                Some(state) => child.with_tracestate(state).ok(),
                None => Some(child),
            }
        };
        let context = own.or_else(inherited);
        let index = {
            let mut spans = lock(&self.0.spans);
            spans.push(CapturedSpan {
                name: attrs.metadata().name().to_owned(),
                context: context.clone(),
                links: Vec::new(),
                fields: fields.0,
            });
            spans.len() - 1
        };
        span.extensions_mut().insert(Slot { index, context });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(index) = span.extensions().get::<Slot>().map(|s| s.index) else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        lock(&self.0.spans)[index].fields.extend(fields.0);
    }
}

/// neo-core's propagation over the capture: the current span's context, and links recorded
/// on the current span.
struct Propagation;

impl Propagation {
    fn with_current<T>(f: impl FnOnce(&TraceCapture, &Slot) -> Option<T>) -> Option<T> {
        let capture = CAPTURE.get()?;
        let mut f = Some(f);
        dispatcher::get_default(|dispatch| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let id = tracing::Span::current().id()?;
            let span = registry.span(&id)?;
            let extensions = span.extensions();
            f.take()?(capture, extensions.get::<Slot>()?)
        })
    }
}

impl neo_core::trace::TracePropagation for Propagation {
    fn current(&self) -> Option<TraceContext> {
        Self::with_current(|_, slot| slot.context.clone())
    }

    fn link_current(&self, to: &TraceContext) {
        Self::with_current(|capture, slot| {
            lock(&capture.spans)[slot.index].links.push(to.clone());
            Some(())
        });
    }
}
