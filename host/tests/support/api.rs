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
