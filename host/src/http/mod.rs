//! The daemon's HTTP API, served by `eventhost run` (axum on the daemon's runtime): append and
//! read events, health checks. JSON in and out under versioned paths (`/v1/...`); every error
//! is `{"error": {"code", "message"}}` with the status that fits (see `error`); tokens with
//! scopes guard every route but the health checks (see `auth`).
//!
//! The routes call the same library functions as the command line (`crate::operate` and the
//! store), so the two faces apply the same rules and caps.

mod auth;
mod error;
mod events;
mod feed;
mod metrics;
mod operate;
mod page;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use eventhost_store::Store;

pub use auth::{MIN_TOKEN_CHARS, Scope, Tokens};
pub use error::ApiError;

/// Where `eventhost run` serves the API when nothing else is configured.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:7070";

/// The largest request body by default: a full append (10,000 events) of small events, or
/// a handful of the largest (1 MiB) payloads.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Live feeds open at once by default.
pub const DEFAULT_MAX_FEEDS: usize = 256;

/// How long a readiness check waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a stopping server waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether and where to serve the API, as `--http`, `EVENTHOST_HTTP` or the configuration
/// file's `[http] address` say it: `ADDRESS:PORT` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    At(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "off" {
            return Ok(Self::Off);
        }
        text.parse().map(Self::At).map_err(|_| {
            format!(
                "expected an IP address and port like {DEFAULT_ADDRESS}, or `off`; got {text:?}"
            )
        })
    }
}

/// How the API is served.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub address: SocketAddr,
    pub tokens: Tokens,
    pub max_body_bytes: usize,
    /// Live feeds (`/v1/feed`) open at once; more are refused with 503.
    pub max_feeds: usize,
}

/// Why the API cannot be served; the daemon does not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "refusing to serve the HTTP API on {0} without a token: set EVENTHOST_API_TOKEN or [http.tokens] in the configuration file, or listen on a loopback address (--http 127.0.0.1:PORT)"
    )]
    OpenToTheNetwork(SocketAddr),
    #[error("cannot listen on {address} for the HTTP API (--http or EVENTHOST_HTTP)")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What every handler gets.
#[derive(Clone)]
pub struct Api {
    store: Store,
    tokens: Arc<Tokens>,
    plugins_loaded: Arc<AtomicBool>,
    /// Changes whenever new events may be readable: what live feeds wait on.
    changes: watch::Receiver<u64>,
    /// Cancelled when the server stops: live feeds end.
    stopping: CancellationToken,
    /// One permit per live feed.
    feeds: Arc<Semaphore>,
}

/// The running server; [`HttpServer::stop`] ends it.
pub struct HttpServer {
    address: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    plugins_loaded: Arc<AtomicBool>,
}

impl HttpServer {
    /// Listens on the settings' address and serves the API on `store` from now on; live
    /// feeds look for new events when `changes` changes.
    pub async fn start(
        settings: &HttpSettings,
        store: Store,
        changes: watch::Receiver<u64>,
    ) -> Result<Self, HttpError> {
        if settings.tokens.is_empty() && !settings.address.ip().is_loopback() {
            return Err(HttpError::OpenToTheNetwork(settings.address));
        }
        let bind_error = |source| HttpError::Bind {
            address: settings.address,
            source,
        };
        metrics::handle();
        let listener = TcpListener::bind(settings.address)
            .await
            .map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        let plugins_loaded = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let api = Api {
            store,
            tokens: Arc::new(settings.tokens.clone()),
            plugins_loaded: plugins_loaded.clone(),
            changes,
            stopping: stop.clone(),
            feeds: Arc::new(Semaphore::new(settings.max_feeds)),
        };
        let serve = axum::serve(listener, router(api, settings.max_body_bytes))
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future();
        let task = tokio::spawn(async move {
            if let Err(error) = serve.await {
                warn!(%error, "the HTTP API stopped");
            }
        });
        let open = if settings.tokens.is_empty() {
            "no token needed (loopback only)"
        } else {
            "tokens required"
        };
        info!(%address, access = open, "HTTP API listening");
        Ok(Self {
            address,
            stop,
            task: Some(task),
            plugins_loaded,
        })
    }

    /// The address served (the port chosen when the settings asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Marks the plugins folder loaded: from now on the daemon reports itself ready.
    pub fn plugins_loaded(&self) {
        self.plugins_loaded.store(true, Ordering::Release);
    }

    /// Stops taking connections and waits a moment for requests in flight.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let Some(task) = self.task.take() else { return };
        if tokio::time::timeout(DRAIN_TIMEOUT, task).await.is_err() {
            warn!("HTTP requests still in flight after {DRAIN_TIMEOUT:?}: dropped");
        }
    }
}

impl Drop for HttpServer {
    /// A daemon that fails to start drops its server: it stops serving at once.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn router(api: Api, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::script))
        .route("/assets/app.css", get(page::style))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route(
            "/v1/events",
            get(events::read_all).post(events::append_lines),
        )
        .route(
            "/v1/streams/{aggregate_type}/{aggregate_id}/events",
            get(events::read_stream).post(events::append_to_stream),
        )
        .route(
            "/v1/categories/{aggregate_type}/events",
            get(events::read_category),
        )
        .route("/v1/subscriptions", get(operate::subscriptions))
        .route("/v1/subscriptions/{name}/reset", post(operate::reset))
        .route("/v1/subscriptions/{name}/state", get(operate::state))
        .route("/v1/parked", get(operate::parked))
        .route("/v1/parked/replay", post(operate::replay_all))
        .route("/v1/parked/{id}/replay", post(operate::replay_one))
        .route("/v1/parked/{id}/skip", post(operate::skip_parked))
        .route("/v1/plugins", get(operate::plugins))
        .route("/v1/deliveries", get(operate::deliveries))
        .route("/v1/deliveries/retry", post(operate::retry_all))
        .route("/v1/deliveries/{id}/retry", post(operate::retry_one))
        .route("/v1/deliveries/{id}/skip", post(operate::skip_delivery))
        .route("/v1/feed", get(feed::feed))
        .route("/metrics", get(metrics::metrics))
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_method)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(api)
}

/// `GET /health/live`: the process serves requests.
async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

/// `GET /health/ready`: the store answers and the plugins folder is loaded.
async fn ready(State(api): State<Api>) -> Response {
    let store = match tokio::time::timeout(READY_TIMEOUT, api.store.pulse()).await {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(error)) => format!("unavailable: {error}"),
        Err(_) => format!("no answer within {READY_TIMEOUT:?}"),
    };
    let loaded = api.plugins_loaded.load(Ordering::Acquire);
    let ready = loaded && store == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "store": store,
        "plugins": if loaded { "loaded" } else { "loading" },
    });
    (status, Json(body)).into_response()
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("no such route")
}

async fn unknown_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
