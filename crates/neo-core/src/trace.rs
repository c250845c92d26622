//! W3C trace context across async hops: [`TraceContext`] (a validated `traceparent` and its
//! optional `tracestate`) and the [`TracePropagation`] hook that reads it from, and links it
//! to, the host's spans.
//!
//! A value that crosses a hop (an outbox event, a queue job, a webhook delivery) keeps the
//! trace context of the span that made it; the span that later handles it (the dispatch
//! round, the job's run, the delivery) **links** to that context. A link rather than a
//! parent: a dispatch round handles events of many traces at once, and a job runs long after
//! the request that enqueued it ended, which is what OpenTelemetry's span links are for
//! (`OpenTelemetrySpanExt::add_link` in tracing-opentelemetry).
//!
//! neo-commons does not depend on OpenTelemetry. Where the context comes from:
//! - **explicitly**: `DomainEvent::with_trace_context`, `NewJob::trace_context` take a
//!   [`TraceContext`] you parsed from an incoming `traceparent` header
//!   ([`TraceContext::from_headers`]);
//! - **from the current span**, once a [`TracePropagation`] is [`install`]ed: events and jobs
//!   created inside a span carry [`current`], and the spans that handle them call
//!   [`link_current`]. Over tracing-opentelemetry that is a few lines:
//!
//! ```ignore
//! use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
//! use tracing_opentelemetry::OpenTelemetrySpanExt;
//!
//! struct Otel;
//! impl neo_core::trace::TracePropagation for Otel {
//!     fn current(&self) -> Option<neo_core::TraceContext> {
//!         let cx = tracing::Span::current().context();
//!         let span = cx.span();
//!         let sc = span.span_context();
//!         let tc = neo_core::TraceContext::new(
//!             sc.trace_id().to_bytes(), sc.span_id().to_bytes(), sc.is_sampled()).ok()?;
//!         Some(match sc.trace_state().header() {
//!             state if state.is_empty() => tc,
//!             state => tc.with_tracestate(&state).ok()?,
//!         })
//!     }
//!     fn link_current(&self, to: &neo_core::TraceContext) {
//!         let state = to.tracestate().and_then(|s| s.parse::<TraceState>().ok()).unwrap_or_default();
//!         tracing::Span::current().add_link(SpanContext::new(
//!             TraceId::from_bytes(to.trace_id()), SpanId::from_bytes(to.span_id()),
//!             TraceFlags::new(to.flags()), true, state));
//!     }
//! }
//! neo_core::trace::install(Otel)?;
//! ```
//!
//! Without an installed propagation, [`current`] is `None` (nothing is captured) and
//! [`link_current`] does nothing; the handling spans still record the linked context's
//! `traceparent` as a field (`link.traceparent`).

use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::OnceLock;

/// Longest `tracestate` kept, in bytes: W3C Trace Context asks to propagate at least 512.
pub const MAX_TRACESTATE_LEN: usize = 512;
/// Most `tracestate` list members (W3C Trace Context: 32).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A W3C trace context: the `traceparent` (version 00: trace id, parent span id, flags) and
/// the optional `tracestate` that travels with it.
///
/// Serialized as `{"traceparent": "00-…-…-01", "tracestate": "…"}` (`tracestate` left out when
/// absent); deserializing validates both.
///
/// # Example
/// ```
/// use neo_core::TraceContext;
/// let tc = TraceContext::from_headers(
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
///     Some("congo=t61rcWkgMzE"),
/// )?;
/// assert_eq!(tc.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(tc.sampled());
/// assert_eq!(tc.traceparent(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// assert!(TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_err());
/// # Ok::<(), neo_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
    state: Option<Box<str>>,
}

impl TraceContext {
    /// A context from its parts; `sampled` sets the flags' sampled bit.
    ///
    /// # Errors
    /// [`Error::Invalid`] when either id is all zeros (W3C: invalid).
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], sampled: bool) -> Result<Self> {
        if trace_id == [0; 16] {
            return Err(invalid("the trace id is all zeros"));
        }
        if span_id == [0; 8] {
            return Err(invalid("the parent id is all zeros"));
        }
        Ok(TraceContext {
            trace_id,
            span_id,
            flags: u8::from(sampled),
            state: None,
        })
    }

    /// Parses a `traceparent` header value. Version `00` must be exactly
    /// `00-<32 hex>-<16 hex>-<2 hex>` in lowercase; a later version may add fields after a
    /// `-`, which are ignored (as W3C Trace Context asks); version `ff` is refused.
    ///
    /// # Errors
    /// [`Error::Invalid`] saying what is wrong.
    pub fn parse(traceparent: &str) -> Result<Self> {
        let b = traceparent.as_bytes();
        if b.len() < 55 {
            return Err(invalid(format!(
                "{} bytes, expected 55 (00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>)",
                b.len()
            )));
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(invalid(
                "fields must be separated by '-' (00-<32 hex>-<16 hex>-<2 hex>)",
            ));
        }
        let [version] = hex::<1>(&b[0..2], "version")?;
        if version == 0xff {
            return Err(invalid("version ff is not allowed"));
        }
        if b.len() > 55 && (version == 0 || b[55] != b'-') {
            return Err(invalid(format!(
                "{} bytes: version 00 has exactly 55",
                b.len()
            )));
        }
        let trace_id = hex::<16>(&b[3..35], "trace id")?;
        let span_id = hex::<8>(&b[36..52], "parent id")?;
        let [flags] = hex::<1>(&b[53..55], "flags")?;
        let mut tc = TraceContext::new(trace_id, span_id, false)?;
        // Version 00 defines only the sampled bit; the others are kept for propagation.
        tc.flags = flags;
        Ok(tc)
    }

    /// Parses the `traceparent` and, when given and not blank, the `tracestate` header.
    ///
    /// # Errors
    /// [`Error::Invalid`] for either value.
    pub fn from_headers(traceparent: &str, tracestate: Option<&str>) -> Result<Self> {
        let tc = Self::parse(traceparent)?;
        match tracestate {
            Some(state) if !state.trim().is_empty() => tc.with_tracestate(state),
            _ => Ok(tc),
        }
    }

    /// The same context with `tracestate` (a comma-separated list of `key=value` members,
    /// at most [`MAX_TRACESTATE_MEMBERS`] and [`MAX_TRACESTATE_LEN`] bytes of printable
    /// ASCII).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a value that breaks those rules.
    pub fn with_tracestate(mut self, tracestate: &str) -> Result<Self> {
        validate_tracestate(tracestate)?;
        self.state = Some(tracestate.into());
        Ok(self)
    }

    /// The 16-byte trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The 8-byte id of the span that made the context (`parent-id` in the header).
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// The trace flags byte.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the sampled flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span_id)
    }

    /// The `traceparent` header value (version 00).
    pub fn traceparent(&self) -> String {
        self.to_string()
    }

    /// The `tracestate` header value, when there is one.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }
}

/// The `traceparent` header value.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.span_id_hex(),
            self.flags
        )
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("traceparent", &self.to_string())
            .field("tracestate", &self.state)
            .finish()
    }
}

impl std::str::FromStr for TraceContext {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[derive(Serialize)]
struct WireOut<'a> {
    traceparent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracestate: Option<&'a str>,
}

#[derive(Deserialize)]
struct WireIn {
    traceparent: String,
    #[serde(default)]
    tracestate: Option<String>,
}

impl Serialize for TraceContext {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        WireOut {
            traceparent: self.to_string(),
            tracestate: self.state.as_deref(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TraceContext {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let wire = WireIn::deserialize(deserializer)?;
        TraceContext::from_headers(&wire.traceparent, wire.tracestate.as_deref())
            .map_err(serde::de::Error::custom)
    }
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::invalid("traceparent", reason)
}

fn hex<const N: usize>(digits: &[u8], what: &str) -> Result<[u8; N]> {
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0_u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => out[i] = (hi << 4) | lo,
            _ => {
                return Err(invalid(format!("the {what} must be lowercase hex digits")));
            }
        }
    }
    Ok(out)
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn validate_tracestate(state: &str) -> Result<()> {
    let bad = |reason: String| Err(Error::invalid("tracestate", reason));
    if state.len() > MAX_TRACESTATE_LEN {
        return bad(format!(
            "{} bytes, at most {MAX_TRACESTATE_LEN}",
            state.len()
        ));
    }
    if !state.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return bad("only printable ASCII is allowed".to_owned());
    }
    let members: Vec<&str> = state
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
        .collect();
    if members.is_empty() {
        return bad("no list member".to_owned());
    }
    if members.len() > MAX_TRACESTATE_MEMBERS {
        return bad(format!(
            "{} list members, at most {MAX_TRACESTATE_MEMBERS}",
            members.len()
        ));
    }
    for member in members {
        let ok = member.split_once('=').is_some_and(|(key, value)| {
            let key_ok = !key.is_empty()
                && key.len() <= 256
                && key.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
                });
            let value_ok = !value.is_empty()
                && value.len() <= 256
                && !value.ends_with(' ')
                && !value.contains(['=', ',']);
            key_ok && value_ok
        });
        if !ok {
            return bad(format!(
                "{:?} is not a key=value member",
                member.chars().take(64).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// Reads trace context from, and links it to, the host's spans: implement it over your tracer
/// (see the [module docs](self) for tracing-opentelemetry) and [`install`] it once.
pub trait TracePropagation: Send + Sync + 'static {
    /// The context of the current span, to carry across an async hop; `None` outside a
    /// traced span.
    fn current(&self) -> Option<TraceContext>;

    /// Links the current span to `to`, the context a hop carried (a span link in
    /// OpenTelemetry). Called with the handling span entered.
    fn link_current(&self, to: &TraceContext);
}

static PROPAGATION: OnceLock<Box<dyn TracePropagation>> = OnceLock::new();

/// Installs the process's [`TracePropagation`] (once; usually at start-up, beside the tracing
/// subscriber).
///
/// # Errors
/// [`Error::Config`] when one is installed already.
pub fn install(propagation: impl TracePropagation) -> Result<()> {
    PROPAGATION
        .set(Box::new(propagation))
        .map_err(|_| Error::Config("a trace propagation is installed already".to_owned()))
}

/// The current span's trace context, from the installed [`TracePropagation`]; `None` when
/// none is installed or the current span has none.
pub fn current() -> Option<TraceContext> {
    PROPAGATION.get().and_then(|p| p.current())
}

/// Links the current span to `to` through the installed [`TracePropagation`]; does nothing
/// when none is installed.
pub fn link_current(to: &TraceContext) {
    if let Some(p) = PROPAGATION.get() {
        p.link_current(to);
    }
}
