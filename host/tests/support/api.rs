//! A client of the daemon's HTTP API for tests: every call returns the status and the body
//! as JSON (or the text, as a JSON string, when it is not JSON). Include it beside
//! `mod support;` with `#[path = "support/api.rs"] mod api;`.
#![allow(dead_code)] // Each test binary uses its own subset of these helpers.

use reqwest::StatusCode;
use serde_json::Value;

/// The API of one daemon, called with a token or none.
#[derive(Clone)]
pub struct ApiClient {
    pub base: String,
    client: reqwest::Client,
    token: Option<String>,
}

/// A response: its status, headers and body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The error code of an `{"error": {"code", "message"}}` body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

impl ApiClient {
    pub fn new(base: &str) -> Self {
        // reqwest is built without a TLS provider of its own (the daemon installs ring).
        eventhost_deliveries::install_crypto_provider();
        Self {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .build()
                .expect("build an HTTP client"),
            token: None,
        }
    }

    /// The same client, sending `token` as its bearer token.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    /// A POST without a body.
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(self.client.post(self.url(path))).await
    }

    /// A request with a raw body and content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let request = self
            .client
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.send(request).await
    }

    pub async fn request(&self, method: reqwest::Method, path: &str) -> Reply {
        self.send(self.client.request(method, self.url(path))).await
    }

    /// Opens a live feed (Server-Sent Events), resuming after `last_event_id` if given; fails
    /// the test unless it opens.
    pub async fn feed(&self, path: &str, last_event_id: Option<&str>) -> Feed {
        let mut request = self.client.get(self.url(path));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("open the feed");
        assert_eq!(response.status(), StatusCode::OK, "the feed did not open");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "a feed is an event stream"
        );
        Feed {
            response,
            buffer: String::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> Reply {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("the API at {} did not answer: {error}", self.base));
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("read the response body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// An open live feed.
pub struct Feed {
    response: reqwest::Response,
    buffer: String,
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub id: String,
    pub event: Option<String>,
    pub data: Value,
}

impl Feed {
    /// The next event, or `None` if none comes within `timeout` or the feed ends.
    pub async fn next(&mut self, timeout: std::time::Duration) -> Option<FeedEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(event) = self.parse_one() {
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None) | Err(_)) | Err(_) => return None,
            }
        }
    }

    /// `n` events, failing the test if they do not come within `timeout` each.
    pub async fn take(&mut self, n: usize, timeout: std::time::Duration) -> Vec<FeedEvent> {
        let mut events = Vec::with_capacity(n);
        for i in 0..n {
            let event = self
                .next(timeout)
                .await
                .unwrap_or_else(|| panic!("event {i} of {n} did not come within {timeout:?}"));
            events.push(event);
        }
        events
    }

    /// Whether the feed has ended (the server closed it) within `timeout`.
    pub async fn ended(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None) | Err(_)) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Takes the first complete event with data out of the buffer.
    fn parse_one(&mut self) -> Option<FeedEvent> {
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), None, String::new());
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = value.trim_start().to_owned();
                } else if let Some(value) = line.strip_prefix("event:") {
                    event = Some(value.trim_start().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                }
            }
            if !data.is_empty() {
                let data = serde_json::from_str(&data)
                    .unwrap_or_else(|error| panic!("feed data is not JSON ({error}): {data}"));
                return Some(FeedEvent { id, event, data });
            }
        }
        None
    }
}
