//! A real HTTP receiver for delivery tests: a server on a loopback port that records every
//! request and answers as the test scripts it (success, 5xx, 429 with `Retry-After`, 400 for
//! bodies holding a word, a hang past the sender's time-out), and that can go away and come
//! back on the same port. Include it with `#[path = "support/receiver.rs"] mod receiver;`.
#![allow(dead_code)] // Each test binary uses its own subset of these helpers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

/// How the receiver answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Status(u16),
    /// 429 Too Many Requests with `Retry-After: <seconds>`.
    RetryAfter(u64),
    /// Success, after this long (a slow receiver).
    Slow(Duration),
    /// No answer for this long, meant to be past the sender's time-out: not counted as
    /// accepted.
    Hang(Duration),
    /// 307 Temporary Redirect to another path, which a sender must not follow.
    Redirect,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub reply: Reply,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Answered with success (at once, or after a hang).
    pub fn accepted(&self) -> bool {
        matches!(self.reply, Reply::Ok | Reply::Slow(_))
    }
}

#[derive(Default)]
struct Script {
    received: Vec<Received>,
    next: VecDeque<Reply>,
    /// Bodies holding this text get this answer.
    rule: Option<(String, Reply)>,
    default: Option<Reply>,
}

pub struct Receiver {
    pub url: String,
    address: SocketAddr,
    script: Arc<Mutex<Script>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Receiver {
    /// Starts a receiver on a free loopback port that accepts everything.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("the receiver's address");
        let mut receiver = Self {
            url: format!("http://{address}"),
            address,
            script: Arc::default(),
            stop: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&self.script));
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        self.stop = Some(stop);
    }

    /// The next requests get these answers, in order; then the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().next.extend(replies);
    }

    /// Bodies holding `text` get `reply` (until [`clear_rule`](Self::clear_rule)).
    pub fn rule(&self, text: &str, reply: Reply) {
        self.lock().rule = Some((text.to_owned(), reply));
    }

    pub fn clear_rule(&self) {
        self.lock().rule = None;
    }

    /// Every request not otherwise scripted gets `reply` (`Reply::Ok` unless set).
    pub fn default_reply(&self, reply: Reply) {
        self.lock().default = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(Received::accepted)
            .collect()
    }

    /// Stops listening: connections are refused until [`restart`](Self::restart).
    pub fn go_away(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot bind {} again: {error}",
                        self.address
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.serve(listener);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().expect("the receiver's script")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.go_away();
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut script = script.lock().expect("the receiver's script");
        let text = String::from_utf8_lossy(&body);
        let reply = match &script.rule {
            Some((needle, reply)) if text.contains(needle.as_str()) => reply.clone(),
            _ => script
                .next
                .pop_front()
                .or_else(|| script.default.clone())
                .unwrap_or(Reply::Ok),
        };
        script.received.push(Received {
            path: uri.path().to_owned(),
            headers,
            body: body.to_vec(),
            reply: reply.clone(),
            at: Instant::now(),
        });
        reply
    };
    match reply {
        Reply::Ok => StatusCode::NO_CONTENT.into_response(),
        Reply::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, format!("scripted {code}")).into_response()
        }
        Reply::RetryAfter(seconds) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", seconds.to_string())],
            "slow down",
        )
            .into_response(),
        Reply::Slow(pause) | Reply::Hang(pause) => {
            tokio::time::sleep(pause).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Reply::Redirect => (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", "/elsewhere")],
            "moved",
        )
            .into_response(),
    }
}
