//! A local HTTP endpoint standing in for a service's `health_url` and for a Slack webhook: it
//! answers every request with a settable status (after a settable delay) and keeps what it
//! received, and how many requests it was serving at once at most.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One request the endpoint received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub body: String,
}

struct State {
    status: AtomicU16,
    received: Mutex<Vec<Received>>,
    /// The requests answered (after the delay), in the order answered.
    answered: Mutex<Vec<Received>>,
    /// How long each answer waits, in milliseconds.
    delay_ms: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// A `Location` header on every answer (a redirect, with a 3xx status).
    location: Mutex<Option<String>>,
}

pub struct LocalHttp {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl LocalHttp {
    pub async fn start(status: u16) -> LocalHttp {
        let state = Arc::new(State {
            status: AtomicU16::new(status),
            received: Mutex::default(),
            answered: Mutex::default(),
            delay_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            location: Mutex::default(),
        });
        let served = state.clone();
        let addr = serve(move |request| answer(served.clone(), request)).await;
        LocalHttp { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Answers `status` with `Location: location` from now on (a redirect).
    pub fn redirect_to(&self, status: u16, location: &str) {
        *self.state.location.lock().unwrap() = Some(location.to_owned());
        self.set_status(status);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The requests answered, in the order answered (after their delay): while its delay runs, a
    /// request is in [`LocalHttp::received`] only. With a delay far longer than a client's timeout
    /// (a hung Slack webhook), what the client gave up on is never here: what was delivered.
    pub fn answered(&self) -> Vec<Received> {
        self.state.answered.lock().unwrap().clone()
    }

    /// Makes every answer from now on wait `delay` (a slow endpoint).
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// The most requests the endpoint was serving at the same time (overlap, not elapsed time,
    /// tells whether a caller checks several endpoints concurrently).
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

/// Counts a request in flight for as long as it lives.
struct InFlight(Arc<State>);

impl InFlight {
    fn enter(state: Arc<State>) -> InFlight {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves HTTP/1.1 on a free loopback port with `handler`; returns the address.
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(handler);
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

async fn answer(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let _in_flight = InFlight::enter(state.clone());
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let received = Received { method, path, body: String::from_utf8_lossy(&body).into_owned() };
    state.received.lock().unwrap().push(received.clone());
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    state.answered.lock().unwrap().push(received);
    let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    *response.status_mut() = status;
    if let Some(location) = state.location.lock().unwrap().as_deref().and_then(|l| l.parse().ok()) {
        response.headers_mut().insert(hyper::header::LOCATION, location);
    }
    Ok(response)
}
