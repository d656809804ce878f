//! Real peers on loopback for the HTTP-based sinks: no mocked HTTP, the sink's own client talks to
//! a real server over real sockets.
//!
//! - [`TestReceiver`]: an axum server on `127.0.0.1:0` that records every request (whatever its method
//!   or path) and answers a programmed sequence of [`Reply`]s, then `204` once the script is used up;
//! - [`resetting_peer`]: accepts connections and resets them at once;
//! - [`refused_addr`]: an address where nothing listens.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client's address: the same port on two requests means the connection was reused.
    pub peer: SocketAddr,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One programmed answer.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: Vec::new(), delay: Duration::ZERO }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    /// Answers only after `delay` (to outlast a client's deadline).
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    recorded: Vec<Recorded>,
}

pub struct TestReceiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl TestReceiver {
    pub async fn start() -> TestReceiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(record).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        tokio::spawn(
            async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await },
        );
        TestReceiver { addr, inner }
    }

    /// A URL on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers these replies to the next requests, in order (after any still queued).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().expect("receiver lock").script.extend(replies);
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.inner.lock().expect("receiver lock").recorded.clone()
    }

    /// The only request received; fails the test if there were none or several.
    pub fn single(&self) -> Recorded {
        let recorded = self.recorded();
        assert_eq!(recorded.len(), 1, "expected exactly one request, got {recorded:#?}");
        recorded.into_iter().next().expect("one request")
    }
}

async fn record(
    State(inner): State<Arc<Mutex<Inner>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut inner = inner.lock().expect("receiver lock");
        inner.recorded.push(Recorded { method, path: uri.path().to_string(), headers, body, peer });
        inner.script.pop_front().unwrap_or_else(|| Reply::status(204))
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).expect("a scripted status is valid");
    let mut response = (status, reply.body).into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).expect("a scripted header value is valid"),
        );
    }
    response
}

/// An address that accepts TCP connections and resets each one at once (SO_LINGER 0, so the close
/// is an RST, not an orderly FIN), before any HTTP answer.
pub async fn resetting_peer() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Give the client a moment to send its request, so the reset hits a request in flight.
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_millis(50), stream.readable()).await;
            let _ = stream.try_read(&mut buf);
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    });
    addr
}

/// A loopback address nothing listens on: bound, then released.
pub fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("a bound address")
}
