//! Operating the daemon: subscriptions (list, reset, state), parked events (list, replay,
//! skip), plugins, deliveries (list, retry, skip), daemons. Each route calls the same function of
//! `crate::operate` as its command, so the two never disagree.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use eventhost_store::{
    DaemonRecord, Delivery, DeliveryQuery, DeliverySelection, DeliveryStatus, DeliveryStore,
    ParkedEvent, ParkedSelection, PluginRecord, PluginRecords,
};

use super::Api;
use super::auth::{AdminScope, Granted, ReadScope};
use super::error::{ApiError, ErrorBody, JsonBody, PathParams, QueryParams, limit, name, stored};
use crate::operate::{self, StateEntry, SubscriptionView};

/// The most entries of one page of state, or of a deliveries listing.
const MAX_LISTED: u64 = 1_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct Subscriptions {
    subscriptions: Vec<SubscriptionView>,
}

/// Every subscription, with its lag.
#[utoipa::path(get, path = "/v1/subscriptions", tag = "operate",
    responses((status = 200, description = "Every subscription", body = Subscriptions)),
    security(("token" = ["read"])))]
pub async fn subscriptions(
    _: Granted<ReadScope>,
    State(api): State<Api>,
) -> Result<Json<Subscriptions>, ApiError> {
    let subscriptions = operate::subscriptions(&api.store).await?;
    Ok(Json(Subscriptions { subscriptions }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Daemons {
    daemons: Vec<DaemonRecord>,
}

/// The daemons running on this database and the subscriptions each runs (PostgreSQL; empty
/// on SQLite, which runs this daemon alone).
#[utoipa::path(get, path = "/v1/daemons", tag = "operate",
    responses((status = 200, description = "Every live daemon, oldest first", body = Daemons)),
    security(("token" = ["read"])))]
pub async fn daemons(
    _: Granted<ReadScope>,
    State(api): State<Api>,
) -> Result<Json<Daemons>, ApiError> {
    let daemons = operate::daemons(&api.store).await?;
    Ok(Json(Daemons { daemons }))
}

/// The body of a reset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reset {
    /// Resume after the event at this position (0, the default: from the beginning).
    #[serde(default)]
    to: u64,
    /// Also delete the subscription's state, to rebuild a projection from scratch.
    #[serde(default)]
    clear_state: bool,
}

/// Moves a subscription's checkpoint (and, if asked, deletes its state).
#[utoipa::path(post, path = "/v1/subscriptions/{name}/reset", tag = "operate",
    params(("name" = String, Path, description = "`<plugin>.<subscription>`")),
    request_body = Reset,
    responses(
        (status = 200, description = "The subscription as reset", body = SubscriptionView),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 404, description = "No such subscription, or no event at `to`", body = ErrorBody),
    ),
    security(("token" = ["admin"])))]
pub async fn reset(
    _: Granted<AdminScope>,
    State(api): State<Api>,
    PathParams(name): PathParams<String>,
    JsonBody(body): JsonBody<Reset>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let to = stored("to", body.to)?;
    let view = operate::reset(&api.store, &name, to, body.clear_state).await?;
    Ok(Json(view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StateQuery {
    /// Only keys starting with this.
    #[serde(default)]
    prefix: String,
    /// Start after this key.
    after: Option<String>,
    /// Entries on the page: 1 to 1000, 100 by default.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatePage {
    entries: Vec<StateEntry>,
    /// Pass as `after` for the next page; `null` once the last page is reached.
    next_after: Option<String>,
}

/// A page of a subscription's state (a projection's read model), in key order.
#[utoipa::path(get, path = "/v1/subscriptions/{name}/state", tag = "operate",
    params(("name" = String, Path, description = "`<plugin>.<subscription>`"), StateQuery),
    responses(
        (status = 200, description = "A page of entries", body = StatePage),
        (status = 400, description = "Bad `limit`", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
    ),
    security(("token" = ["read"])))]
pub async fn state(
    _: Granted<ReadScope>,
    State(api): State<Api>,
    PathParams(name): PathParams<String>,
    QueryParams(query): QueryParams<StateQuery>,
) -> Result<Json<StatePage>, ApiError> {
    let limit = limit(query.limit.as_deref(), 100, MAX_LISTED)?;
    let entries = operate::state_page(
        &api.store,
        &name,
        &query.prefix,
        query.after.as_deref(),
        limit,
    )
    .await?;
    let next_after = (entries.len() == limit)
        .then(|| entries.last().map(|entry| entry.key.clone()))
        .flatten();
    Ok(Json(StatePage {
        entries,
        next_after,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ParkedQuery {
    /// Only this subscription's.
    subscription: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Parked {
    parked: Vec<ParkedEvent>,
}

/// Parked events, oldest first.
#[utoipa::path(get, path = "/v1/parked", tag = "operate", params(ParkedQuery),
    responses((status = 200, description = "Parked events", body = Parked),
        (status = 404, description = "No such subscription", body = ErrorBody)),
    security(("token" = ["read"])))]
pub async fn parked(
    _: Granted<ReadScope>,
    State(api): State<Api>,
    QueryParams(query): QueryParams<ParkedQuery>,
) -> Result<Json<Parked>, ApiError> {
    let parked = operate::parked(&api.store, query.subscription.as_deref()).await?;
    Ok(Json(Parked { parked }))
}

/// How many entries an action changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Changed {
    changed: u64,
}

/// Asks the daemon to handle a parked event again.
#[utoipa::path(post, path = "/v1/parked/{id}/replay", tag = "operate",
    params(("id" = i64, Path, description = "The parked entry's id")),
    responses(
        (status = 200, description = "Marked for replay", body = Changed),
        (status = 404, description = "No such parked event", body = ErrorBody),
    ),
    security(("token" = ["admin"])))]
pub async fn replay_one(
    _: Granted<AdminScope>,
    State(api): State<Api>,
    PathParams(id): PathParams<i64>,
) -> Result<Json<Changed>, ApiError> {
    let changed = operate::replay_parked(&api.store, ParkedSelection::One(id)).await?;
    Ok(Json(Changed { changed }))
}

/// The body of a replay of every parked event, of one subscription or of all.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayAll {
    /// Only this subscription's (`<plugin>.<subscription>`).
    subscription: Option<String>,
}

/// The body of a retry of every dead or skipped message, of one sink or of all.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryAll {
    /// Only this sink's.
    sink: Option<String>,
}

/// Asks the daemon to handle every parked event (of one subscription) again.
#[utoipa::path(post, path = "/v1/parked/replay", tag = "operate", request_body = ReplayAll,
    responses(
        (status = 200, description = "How many were marked", body = Changed),
        (status = 400, description = "Bad input", body = ErrorBody),
    ),
    security(("token" = ["admin"])))]
pub async fn replay_all(
    _: Granted<AdminScope>,
    State(api): State<Api>,
    JsonBody(body): JsonBody<ReplayAll>,
) -> Result<Json<Changed>, ApiError> {
    let subscription = name("subscription", body.subscription.as_deref())?;
    let selection = ParkedSelection::AllOf(subscription);
    let changed = operate::replay_parked(&api.store, selection).await?;
    Ok(Json(Changed { changed }))
}

/// Drops a parked event for good, without handling it.
#[utoipa::path(post, path = "/v1/parked/{id}/skip", tag = "operate",
    params(("id" = i64, Path, description = "The parked entry's id")),
    responses(
        (status = 200, description = "Skipped", body = Changed),
        (status = 404, description = "No such parked event", body = ErrorBody),
    ),
    security(("token" = ["admin"])))]
pub async fn skip_parked(
    _: Granted<AdminScope>,
    State(api): State<Api>,
    PathParams(id): PathParams<i64>,
) -> Result<Json<Changed>, ApiError> {
    operate::skip_parked(&api.store, id).await?;
    Ok(Json(Changed { changed: 1 }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Plugins {
    plugins: Vec<PluginRecord>,
}

/// The plugin files the daemon saw: running, rejected (and why) or removed.
#[utoipa::path(get, path = "/v1/plugins", tag = "operate",
    responses((status = 200, description = "The plugin files", body = Plugins)),
    security(("token" = ["read"])))]
pub async fn plugins(
    _: Granted<ReadScope>,
    State(api): State<Api>,
) -> Result<Json<Plugins>, ApiError> {
    let plugins = api.store.plugin_records().await?;
    Ok(Json(Plugins { plugins }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only this sink's.
    sink: Option<String>,
    /// Only messages in this state.
    status: Option<DeliveryStatus>,
    /// Messages listed: 1 to 1000, 100 by default.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deliveries {
    deliveries: Vec<Delivery>,
}

/// Messages plugins asked to send to sinks, newest first.
#[utoipa::path(get, path = "/v1/deliveries", tag = "operate", params(DeliveriesQuery),
    responses(
        (status = 200, description = "Messages", body = Deliveries),
        (status = 400, description = "Bad `status` or `limit`", body = ErrorBody),
    ),
    security(("token" = ["read"])))]
pub async fn deliveries(
    _: Granted<ReadScope>,
    State(api): State<Api>,
    QueryParams(query): QueryParams<DeliveriesQuery>,
) -> Result<Json<Deliveries>, ApiError> {
    let limit = limit(query.limit.as_deref(), 100, MAX_LISTED)?;
    let query = DeliveryQuery {
        sink: query.sink,
        status: query.status,
        limit,
    };
    let deliveries = api.store.deliveries(&query).await?;
    Ok(Json(Deliveries { deliveries }))
}

/// Sends a dead or skipped message again.
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", tag = "operate",
    params(("id" = i64, Path, description = "The message's id")),
    responses(
        (status = 200, description = "Pending again", body = Changed),
        (status = 404, description = "No dead or skipped message with that id", body = ErrorBody),
    ),
    security(("token" = ["admin"])))]
pub async fn retry_one(
    _: Granted<AdminScope>,
    State(api): State<Api>,
    PathParams(id): PathParams<i64>,
) -> Result<Json<Changed>, ApiError> {
    let changed = operate::retry_deliveries(&api.store, DeliverySelection::One(id)).await?;
    Ok(Json(Changed { changed }))
}

/// Sends every dead or skipped message (of one sink) again.
#[utoipa::path(post, path = "/v1/deliveries/retry", tag = "operate", request_body = RetryAll,
    responses(
        (status = 200, description = "How many are pending again", body = Changed),
        (status = 400, description = "Bad input", body = ErrorBody),
    ),
    security(("token" = ["admin"])))]
pub async fn retry_all(
    _: Granted<AdminScope>,
    State(api): State<Api>,
    JsonBody(body): JsonBody<RetryAll>,
) -> Result<Json<Changed>, ApiError> {
    let selection = DeliverySelection::All {
        sink: name("sink", body.sink.as_deref())?,
    };
    let changed = operate::retry_deliveries(&api.store, selection).await?;
    Ok(Json(Changed { changed }))
}

/// Gives up on a pending or dead message.
#[utoipa::path(post, path = "/v1/deliveries/{id}/skip", tag = "operate",
    params(("id" = i64, Path, description = "The message's id")),
    responses(
        (status = 200, description = "Skipped", body = Changed),
        (status = 404, description = "No pending or dead message with that id", body = ErrorBody),
    ),
    security(("token" = ["admin"])))]
pub async fn skip_delivery(
    _: Granted<AdminScope>,
    State(api): State<Api>,
    PathParams(id): PathParams<i64>,
) -> Result<Json<Changed>, ApiError> {
    operate::skip_delivery(&api.store, id).await?;
    Ok(Json(Changed { changed: 1 }))
}
