//! A tiny HTTP server whose answers a test scripts: the other end of a webhook.

use crate::{Error, Result};
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

/// One scripted answer.
///
/// # Example
/// ```
/// use neo_testkit::ScriptedResponse;
/// use std::time::Duration;
/// let busy = ScriptedResponse::status(503).retry_after(Duration::from_secs(2));
/// let slow = ScriptedResponse::ok().delay(Duration::from_millis(300)).body("done");
/// # let _ = (busy, slow);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedResponse {
    status: u16,
    delay: Duration,
    retry_after: Option<Duration>,
    body: String,
    headers: Vec<(String, String)>,
    drop_connection: bool,
}

impl ScriptedResponse {
    /// `200 OK` with an empty body.
    pub fn ok() -> Self {
        Self::status(200)
    }

    /// The given status code with an empty body.
    pub fn status(status: u16) -> Self {
        ScriptedResponse {
            status,
            delay: Duration::ZERO,
            retry_after: None,
            body: String::new(),
            headers: Vec::new(),
            drop_connection: false,
        }
    }

    /// Waits this long before answering (to trigger client timeouts).
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Adds a `Retry-After` header in whole seconds.
    #[must_use]
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Sets the response body.
    #[must_use]
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    /// Closes the connection instead of answering: the client sees a broken response (the
    /// request is recorded with `answered == 0`).
    pub fn drop_connection() -> Self {
        ScriptedResponse {
            drop_connection: true,
            ..Self::status(0)
        }
    }

    /// Adds a response header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// The HTTP method.
    pub method: Method,
    /// Path and query.
    pub uri: Uri,
    /// Request headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
    /// The status it is answered with (0: the connection is dropped); a delayed answer may
    /// never reach a client that gave up.
    pub answered: u16,
    /// When it arrived.
    pub at: Instant,
}

impl ReceivedRequest {
    /// A header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How the receiver answers once the script is empty: always the default, or failing some
/// requests.
#[derive(Debug, Clone)]
enum Failing {
    /// Every answer is the default.
    Never,
    /// Request `n` (counted from when this was set) gets `pattern[n % len]`'s answer:
    /// `true` the failure, `false` the default.
    Pattern {
        pattern: Vec<bool>,
        failure: ScriptedResponse,
        next: usize,
    },
    /// Each request fails with probability `fraction`, from a seeded generator (the same
    /// seed gives the same sequence).
    Random {
        fraction: f64,
        failure: ScriptedResponse,
        state: u64,
    },
}

impl Failing {
    /// Whether the next request fails, with the failure to answer.
    fn next(&mut self) -> Option<ScriptedResponse> {
        match self {
            Failing::Never => None,
            Failing::Pattern {
                pattern,
                failure,
                next,
            } => {
                let fails = pattern
                    .get(*next % pattern.len().max(1))
                    .copied()
                    .unwrap_or(false);
                *next += 1;
                fails.then(|| failure.clone())
            }
            Failing::Random {
                fraction,
                failure,
                state,
            } => {
                // splitmix64: small, seedable, good enough to draw fractions.
                *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = *state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let draw = (z >> 11) as f64 / (1u64 << 53) as f64;
                (draw < *fraction).then(|| failure.clone())
            }
        }
    }
}

/// A function answering from what a request carries (see [`HttpReceiver::respond_with`]).
type Responder = Arc<dyn Fn(&ReceivedRequest) -> Option<ScriptedResponse> + Send + Sync>;

struct State {
    script: VecDeque<ScriptedResponse>,
    default: Option<ScriptedResponse>,
    failing: Failing,
    responder: Option<Responder>,
    received: Vec<ReceivedRequest>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("script", &self.script)
            .field("default", &self.default)
            .field("failing", &self.failing)
            .field("responder", &self.responder.is_some())
            .field("received", &self.received)
            .finish()
    }
}

impl Default for State {
    fn default() -> Self {
        State {
            script: VecDeque::new(),
            default: None,
            failing: Failing::Never,
            responder: None,
            received: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    arrived: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        neo_core::sync::lock(&self.state)
    }
}

/// An HTTP server on a free loopback port that answers every request (any method, any path)
/// with the next scripted response, or when the script is empty the default one (`200 OK`)
/// unless a failing rule ([`fail_pattern`](Self::fail_pattern),
/// [`fail_fraction`](Self::fail_fraction)) picks the request, and records what it received.
///
/// # Example
/// ```no_run
/// # async fn demo() -> Result<(), neo_testkit::Error> {
/// use neo_testkit::{HttpReceiver, ScriptedResponse};
/// use std::time::Duration;
/// let receiver = HttpReceiver::start().await?;
/// receiver.push(ScriptedResponse::status(500));
/// // ... point the code under test at receiver.url("/hook") ...
/// let requests = receiver.wait_for(2, Duration::from_secs(5)).await;
/// assert_eq!(requests[0].answered, 500);
/// receiver.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HttpReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HttpReceiver {
    /// Binds 127.0.0.1 on a free port and starts serving.
    ///
    /// # Errors
    /// [`Error::Io`] when no port can be bound.
    pub async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(Error::io("binding the HTTP receiver"))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("reading the receiver address"))?;
        let shared = Arc::new(Shared::default());
        let handler_state = Arc::clone(&shared);
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let shared = Arc::clone(&handler_state);
                async move { answer(&shared, method, uri, headers, body).await }
            },
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(HttpReceiver {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a response for the next request that is not yet answered.
    pub fn push(&self, response: ScriptedResponse) {
        self.shared.lock().script.push_back(response);
    }

    /// Sets the answer used when the script is empty.
    pub fn set_default(&self, response: ScriptedResponse) {
        self.shared.lock().default = Some(response);
    }

    /// Once the script is empty, answers the requests `pattern` marks `true` with `failure`
    /// and the others with the default, cycling through it: `[true, true, false, false,
    /// false]` fails 2 of every 5 requests (a flaky receiver, not a down one). Replaces any
    /// earlier failing rule; an empty pattern fails nothing.
    pub fn fail_pattern(&self, pattern: Vec<bool>, failure: ScriptedResponse) {
        self.shared.lock().failing = Failing::Pattern {
            pattern,
            failure,
            next: 0,
        };
    }

    /// Once the script is empty, answers each request with `failure` with probability
    /// `fraction` (0–1) and with the default otherwise, drawing from a generator seeded with
    /// `seed` (the same seed fails the same requests). Replaces any earlier failing rule.
    pub fn fail_fraction(&self, fraction: f64, failure: ScriptedResponse, seed: u64) {
        self.shared.lock().failing = Failing::Random {
            fraction,
            failure,
            state: seed,
        };
    }

    /// Once the script is empty, answers each request with what `responder` returns for it
    /// (`None`: as if no responder were set): for answers that depend on the request, such
    /// as echoing a challenge it carries. Replaces any earlier responder.
    pub fn respond_with(
        &self,
        responder: impl Fn(&ReceivedRequest) -> Option<ScriptedResponse> + Send + Sync + 'static,
    ) {
        self.shared.lock().responder = Some(Arc::new(responder));
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.lock().received.clone()
    }

    /// Waits until at least `count` requests have arrived or `timeout` passes, and returns
    /// what arrived (possibly fewer than `count`).
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<ReceivedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            {
                let state = self.shared.lock();
                if state.received.len() >= count {
                    return state.received.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.requests();
            }
        }
    }

    /// Stops serving and waits for in-flight requests to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn answer(
    shared: &Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let mut request = ReceivedRequest {
        method,
        uri,
        headers,
        body,
        answered: 0,
        at,
    };
    let scripted = {
        let mut state = shared.lock();
        match state.script.pop_front() {
            Some(scripted) => scripted,
            None => state
                .responder
                .as_ref()
                .and_then(|responder| responder(&request))
                .or_else(|| state.failing.next())
                .or_else(|| state.default.clone())
                .unwrap_or_else(ScriptedResponse::ok),
        }
    };
    // Recorded on arrival: a client that gives up during the delay closes the connection,
    // and the server drops this handler without finishing it.
    request.answered = scripted.status;
    shared.lock().received.push(request);
    shared.arrived.notify_waiters();
    if !scripted.delay.is_zero() {
        tokio::time::sleep(scripted.delay).await;
    }
    if scripted.drop_connection {
        // Headers go out, then the body fails: the server aborts the connection mid-response.
        let broken = futures_util::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("scripted connection drop"))
        });
        return (StatusCode::OK, axum::body::Body::from_stream(broken)).into_response();
    }
    let status = StatusCode::from_u16(scripted.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, scripted.body).into_response();
    if let Some(after) = scripted.retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(after.as_secs()));
    }
    for (name, value) in scripted.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
