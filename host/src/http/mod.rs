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
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::{debug, info, warn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use eventhost_store::{Store, StoreError};

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
    /// `/health/ready` fails while a running subscription's oldest unhandled event is older
    /// than this; `None`: lag never makes the daemon unready.
    pub ready_max_lag: Option<Duration>,
    /// Origins whose pages may call the API from a browser; none by default (no CORS headers).
    pub cors_origins: Vec<HeaderValue>,
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
    ready_max_lag: Option<Duration>,
}

/// The running server; [`HttpServer::stop`] ends it.
pub struct HttpServer {
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
        let listener = TcpListener::bind(settings.address)
            .await
            .map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        // Answers go out as they are written: Nagle's algorithm would hold a small one back
        // until the client acknowledges the previous segment.
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                debug!(%error, "cannot set TCP_NODELAY on an API connection");
            }
        });
        let plugins_loaded = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        metrics::keep_up(stop.clone());
        let api = Api {
            store,
            tokens: Arc::new(settings.tokens.clone()),
            plugins_loaded: plugins_loaded.clone(),
            changes,
            stopping: stop.clone(),
            feeds: Arc::new(Semaphore::new(settings.max_feeds)),
            ready_max_lag: settings.ready_max_lag,
        };
        let serve = axum::serve(listener, router(api, settings))
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
            stop,
            task: Some(task),
            plugins_loaded,
        })
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

/// The API's description, completed by every route [`router`] registers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "eventhost",
        description = "Append, read and follow events; operate subscriptions, parked events, plugins and deliveries. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    tags(
        (name = "events", description = "Append, read and follow events"),
        (name = "operate", description = "Subscriptions, parked events, plugins, deliveries"),
        (name = "health", description = "Probes and metrics"),
    )
)]
struct ApiDoc;

/// What every route shares, written once: the bearer token scheme, and the error answers
/// a route can give whatever it does (401 and 403 where a token is needed, 503 when the
/// store fails, 400 for bad parameters, 413 and 415 for bodies).
struct Conventions;

impl utoipa::Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "A token of the daemon's configuration, with the scope a route names (admin allows all); none on a loopback address without tokens",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("token", SecurityScheme::Http(scheme));
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                let secured = operation
                    .security
                    .as_ref()
                    .is_some_and(|list| !list.is_empty());
                let mut common = Vec::new();
                if secured {
                    common.extend([
                        ("401", "No token, or an unknown one"),
                        ("403", "The token lacks the route's scope"),
                        ("503", "The store does not answer"),
                    ]);
                }
                if operation
                    .parameters
                    .as_ref()
                    .is_some_and(|list| !list.is_empty())
                {
                    common.push(("400", "Bad input (the message names the parameter)"));
                }
                if operation.request_body.is_some() {
                    common.extend([
                        ("400", "Bad input (the message names the field)"),
                        ("413", "The body is over max_body_bytes"),
                        ("415", "The body is not sent as application/json"),
                    ]);
                }
                for (status, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build(),
    )
}

/// Every route, registered and described at once: a route cannot be served undocumented.
fn api_routes() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(metrics::metrics))
        .routes(routes!(events::read_all, events::append_lines))
        .routes(routes!(events::read_stream, events::append_to_stream))
        .routes(routes!(events::read_category))
        .routes(routes!(feed::feed))
        .routes(routes!(operate::subscriptions))
        .routes(routes!(operate::reset))
        .routes(routes!(operate::state))
        .routes(routes!(operate::parked))
        .routes(routes!(operate::replay_all))
        .routes(routes!(operate::replay_one))
        .routes(routes!(operate::skip_parked))
        .routes(routes!(operate::plugins))
        .routes(routes!(operate::deliveries))
        .routes(routes!(operate::retry_all))
        .routes(routes!(operate::retry_one))
        .routes(routes!(operate::skip_delivery))
        .routes(routes!(operate::daemons))
}

fn router(api: Api, settings: &HttpSettings) -> Router {
    let (routes, mut document) = api_routes().split_for_parts();
    utoipa::Modify::modify(&Conventions, &mut document);
    let document: Arc<str> = Arc::from(document.to_json().unwrap_or_default());
    let routes = routes
        .route(
            "/v1/openapi.json",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    document.to_string(),
                )
            }),
        )
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::script))
        .route("/assets/app.css", get(page::style))
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_method)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes));
    match cors(&settings.cors_origins) {
        Some(cors) => routes.layer(cors).with_state(api),
        None => routes.with_state(api),
    }
}

/// CORS for the configured origins only: with none, no CORS header is ever sent, and a page
/// of another origin cannot read an answer. Tokens travel in a header, never in cookies, so
/// no credentials mode is needed.
fn cors(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(Duration::from_secs(600));
    Some(layer)
}

/// `{"status": "live"}`
#[derive(Serialize, ToSchema)]
struct Live {
    status: &'static str,
}

/// Whether the daemon is ready, and what it waits for.
#[derive(Serialize, ToSchema)]
struct Ready {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// `ok`, or why the store does not answer.
    store: String,
    /// `loaded`, or `loading` while the plugins folder is first loaded.
    plugins: &'static str,
    /// With `ready_max_lag_seconds` configured: the running subscriptions whose oldest
    /// unhandled event is older than that.
    lagging: Vec<String>,
}

/// The process serves requests.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "Serving", body = Live)))]
async fn live() -> Json<Live> {
    Json(Live { status: "live" })
}

/// The store answers, the plugins folder is loaded and, if so configured, no subscription
/// lags too long.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Not ready: the store does not answer, plugins are loading, or a subscription lags", body = Ready),
    ))]
async fn ready(State(api): State<Api>) -> Response {
    let check = async {
        api.store.pulse().await?;
        match api.ready_max_lag {
            Some(limit) => lagging(&api.store, limit).await,
            None => Ok(Vec::new()),
        }
    };
    let (store, lagging) = match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(lagging)) => ("ok".to_owned(), lagging),
        Ok(Err(error)) => (format!("unavailable: {error}"), Vec::new()),
        Err(_) => (format!("no answer within {READY_TIMEOUT:?}"), Vec::new()),
    };
    let loaded = api.plugins_loaded.load(Ordering::Acquire);
    let ready = loaded && store == "ok" && lagging.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Ready {
        status: if ready { "ready" } else { "not_ready" },
        store,
        plugins: if loaded { "loaded" } else { "loading" },
        lagging,
    };
    (status, Json(body)).into_response()
}

/// The running subscriptions whose oldest unhandled event is older than `limit` (a stopped
/// one, whose plugin is gone, lags by design).
async fn lagging(store: &Store, limit: Duration) -> Result<Vec<String>, StoreError> {
    Ok(crate::operate::subscriptions(store)
        .await?
        .into_iter()
        .filter(|view| view.record.status != "stopped" && view.lag_seconds > limit.as_secs_f64())
        .map(|view| view.record.name)
        .collect())
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
