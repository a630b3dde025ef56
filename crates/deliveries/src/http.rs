//! Sending a message to an HTTP sink: one request with the body, the message's and the
//! sink's headers, `Idempotency-Key`, and a Standard Webhooks signature when the sink has a
//! secret.
//!
//! 2xx is success. 408 and 429 are worth retrying (after `Retry-After` when the receiver gives
//! one), as are 5xx, time-outs and connection errors; any other answer (4xx, a redirect, which
//! is never followed) is permanent: the message is dead at once. Connections are kept alive
//! between requests; TLS goes through rustls.

use std::time::Duration;

use chrono::Utc;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Client, StatusCode};

use super::config::{DeliveryPolicy, HttpTarget};
use super::send::Failure;
use eventhost_domain::Message;

/// The longest `Retry-After` honoured; a receiver cannot park a sink for longer.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The most bytes of a refusal's body quoted in the message's last error.
const QUOTED_BODY: usize = 200;

pub(crate) struct HttpSender {
    client: Client,
    target: HttpTarget,
    signer: Option<standardwebhooks::Webhook>,
}

impl HttpSender {
    pub(crate) fn new(target: HttpTarget, policy: &DeliveryPolicy) -> Result<Self, String> {
        install_crypto_provider();
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("eventhost/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
        let signer = target
            .signing_secret
            .as_ref()
            .map(|secret| standardwebhooks::Webhook::new(secret.expose()))
            .transpose()
            .map_err(|_| "the signing secret is not a Standard Webhooks secret".to_owned())?;
        Ok(Self {
            client,
            target,
            signer,
        })
    }

    pub(crate) async fn send(&self, message: &Message) -> Result<(), Failure> {
        let url = self
            .target
            .url
            .render(message, |value| {
                percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .map_err(Failure::permanent)?;
        let headers = self.headers(message)?;
        let response = self
            .client
            .request(self.target.method.clone(), url)
            .headers(headers)
            .body(message.body.clone())
            .send()
            .await
            .map_err(|error| Failure::retry(describe(&error)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        let reason = refusal(status, &body);
        if status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error()
        {
            Err(Failure::retry(reason).after(retry_after))
        } else {
            Err(Failure::permanent(reason))
        }
    }

    /// The message's headers, then the sink's (which replace a message's of the same name),
    /// then the host's (which a message cannot set).
    fn headers(&self, message: &Message) -> Result<HeaderMap, Failure> {
        let mut headers = HeaderMap::new();
        for (name, value) in &message.headers {
            let (name, value) = header(name, value)?;
            headers.append(name, value);
        }
        for (name, value) in &self.target.headers {
            let (name, value) = header(name, value.expose())?;
            headers.insert(name, value);
        }
        let id = header_value(&message.id)?;
        headers.insert("idempotency-key", id.clone());
        if let Some(signer) = &self.signer {
            let timestamp = Utc::now().timestamp();
            let signature = signer
                .sign(&message.id, timestamp, &message.body)
                .map_err(|error| Failure::permanent(format!("cannot sign: {error}")))?;
            headers.insert("webhook-id", id);
            headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
            headers.insert("webhook-signature", header_value(&signature)?);
        }
        Ok(headers)
    }
}

/// Makes rustls with ring the process's TLS provider, which reqwest (built without one of
/// its own) needs before any client is built. Ring builds with no C toolchain beyond
/// wasmtime's; rustls deprecates it for lacking post-quantum key exchange, which webhook
/// receivers do not offer yet. Installing it twice is harmless: the first one stays.
pub fn install_crypto_provider() {
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), Failure> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Failure::permanent(format!("header name {name:?} is invalid")))?;
    let value = HeaderValue::from_str(value)
        .map_err(|_| Failure::permanent(format!("the value of header {name} is invalid")))?;
    Ok((name, value))
}

fn header_value(text: &str) -> Result<HeaderValue, Failure> {
    HeaderValue::from_str(text).map_err(|_| Failure::permanent("a host header is invalid"))
}

/// `Retry-After` in seconds (an HTTP date is read as no hint), at most [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// What a refusal says: its status and the start of its body, on one line.
fn refusal(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTED_BODY)]);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    if text.is_empty() {
        format!("the receiver answered {status}")
    } else {
        format!("the receiver answered {status}: {text}")
    }
}

/// A transport error with its causes, on one line (reqwest's top message alone says little).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("999999"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn a_refusal_is_one_short_line() {
        let body = format!("line one\nline two{}", "x".repeat(500));
        let reason = refusal(StatusCode::BAD_REQUEST, body.as_bytes());
        assert!(reason.starts_with("the receiver answered 400 Bad Request: line one line two"));
        assert!(!reason.contains('\n'));
        assert!(reason.len() < 300, "{}", reason.len());
    }
}
