//! `/metrics` in the Prometheus text format. Counters and histograms are recorded where the
//! work happens, through the `metrics` facade (batches in the dispatcher, plugin calls in the
//! runtime, requests and appends here); gauges of the store's state (lag, parked events, the
//! oldest open transaction) are measured when Prometheus scrapes. The exporter renders them.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use eventhost_store::ParkedSummary;

use super::Api;
use super::auth::{Granted, ReadScope};
use super::error::ApiError;
use crate::operate;

/// Histogram buckets of every `_seconds` metric: from half a millisecond to a minute.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// How often the samples recorded into histograms are folded into their buckets. The
/// exporter keeps each sample until then: without it, memory would grow with every request
/// and batch until Prometheus scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the recorder if it is not yet, and folds histogram samples into their buckets
/// every [`UPKEEP_EVERY`] until `stop` is cancelled.
pub fn keep_up(stop: CancellationToken) {
    let Some(handle) = handle() else { return };
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => handle.run_upkeep(),
            }
        }
    });
}

/// The process's recorder, installed on first use. `None` if another recorder was installed
/// first (the metrics are then that recorder's).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS);
            let recorder = match builder {
                Ok(builder) => builder.build_recorder(),
                Err(error) => {
                    warn!(%error, "metrics are off: cannot set their buckets");
                    return None;
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                warn!("metrics are off: another recorder is installed");
                return None;
            }
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    describe_counter!(
        "eventhost_events_appended_total",
        Unit::Count,
        "Events appended through this daemon, by source (http, plugin)"
    );
    describe_counter!(
        "eventhost_batches_total",
        Unit::Count,
        "Batches handed to a plugin, by subscription and outcome (committed, failed, abandoned, store_error)"
    );
    describe_counter!(
        "eventhost_events_handled_total",
        Unit::Count,
        "Events of committed batches, by subscription"
    );
    describe_counter!(
        "eventhost_events_parked_total",
        Unit::Count,
        "Events parked by this daemon, by subscription"
    );
    describe_histogram!(
        "eventhost_batch_duration_seconds",
        Unit::Seconds,
        "Time to run a batch's plugin and commit its effects, by subscription"
    );
    describe_gauge!(
        "eventhost_subscription_lag_events",
        Unit::Count,
        "Events a subscription has yet to handle"
    );
    describe_gauge!(
        "eventhost_subscription_lag_seconds",
        Unit::Seconds,
        "Age of the oldest event a subscription has yet to handle (0 when caught up)"
    );
    describe_gauge!(
        "eventhost_parked_events",
        Unit::Count,
        "Parked events, by subscription"
    );
    describe_gauge!(
        "eventhost_parked_oldest_age_seconds",
        Unit::Seconds,
        "How long the oldest parked event of a subscription has waited"
    );
    describe_histogram!(
        "eventhost_plugin_instantiation_seconds",
        Unit::Seconds,
        "Time to instantiate a plugin for a batch, by plugin"
    );
    describe_gauge!(
        "eventhost_plugin_memory_high_water_bytes",
        Unit::Bytes,
        "The most linear memory one call of the running plugin has held, by plugin"
    );
    describe_gauge!(
        "eventhost_postgres_oldest_transaction_age_seconds",
        Unit::Seconds,
        "How long the oldest writing transaction of the cluster, which holds back what subscriptions may read, has been open (0: none)"
    );
    describe_counter!(
        "eventhost_http_requests_total",
        Unit::Count,
        "HTTP API requests, by route, method and status"
    );
    describe_histogram!(
        "eventhost_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP API request (to its headers), by route"
    );
}

/// Counts every request by route (its template, or `unmatched`), method and status.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = known_method(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    counter!("eventhost_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    histogram!("eventhost_http_request_duration_seconds", "route" => route)
        .record(started.elapsed());
    response
}

/// A method as a label: the standard ones by name, any other as `other`, so a client cannot
/// grow the label set.
fn known_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Prometheus metrics, in its text format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4", body = String)),
    security(("token" = ["read"])))]
pub async fn metrics(_: Granted<ReadScope>, State(api): State<Api>) -> Result<Response, ApiError> {
    let Some(handle) = handle() else {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "metrics are off in this process (see the daemon's log)",
        ));
    };
    let parked: HashMap<String, ParkedSummary> = api
        .store
        .parked_summary()
        .await?
        .into_iter()
        .map(|summary| (summary.subscription.clone(), summary))
        .collect();
    for view in operate::subscriptions(&api.store).await? {
        let name = view.record.name;
        let (count, age) = parked.get(&name).map_or((0, 0.0), |summary| {
            (summary.parked, operate::age_seconds(summary.oldest))
        });
        gauge!("eventhost_subscription_lag_events", "subscription" => name.clone())
            .set(view.lag as f64);
        gauge!("eventhost_subscription_lag_seconds", "subscription" => name.clone())
            .set(view.lag_seconds);
        gauge!("eventhost_parked_events", "subscription" => name.clone()).set(count as f64);
        gauge!("eventhost_parked_oldest_age_seconds", "subscription" => name).set(age);
    }
    if let eventhost_store::Store::Postgres(_) = api.store {
        let oldest = api.store.oldest_writer().await?;
        gauge!("eventhost_postgres_oldest_transaction_age_seconds")
            .set(oldest.map_or(0.0, |writer| writer.age.as_secs_f64()));
    }
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
