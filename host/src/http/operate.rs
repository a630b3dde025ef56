//! Operating the daemon: subscriptions (list, reset, state), parked events (list, replay,
//! skip), plugins, deliveries (list, retry, skip). Each route calls the same function of
//! `crate::operate` as its command, so the two never disagree.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use eventhost_store::{
    Delivery, DeliveryQuery, DeliverySelection, DeliveryStatus, DeliveryStore, ParkedEvent,
    ParkedSelection, PluginRecord, PluginRecords, SubscriptionStore,
};

use super::Api;
use super::auth::{AdminScope, Granted, ReadScope};
use super::error::{ApiError, JsonBody, PathParams, QueryParams, limit, stored};
use crate::operate::{self, StateEntry, SubscriptionView};

/// The most entries of one page of state, or of a deliveries listing.
const MAX_LISTED: u64 = 1_000;

#[derive(Debug, Serialize)]
pub struct Subscriptions {
    subscriptions: Vec<SubscriptionView>,
}

/// `GET /v1/subscriptions`
pub async fn subscriptions(
    _: Granted<ReadScope>,
    State(api): State<Api>,
) -> Result<Json<Subscriptions>, ApiError> {
    let subscriptions = operate::subscriptions(&api.store).await?;
    Ok(Json(Subscriptions { subscriptions }))
}

/// The body of a reset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reset {
    /// Resume after the event at this position (0, the default: from the beginning).
    #[serde(default)]
    to: u64,
    /// Also delete the subscription's state, to rebuild a projection from scratch.
    #[serde(default)]
    clear_state: bool,
}

/// `POST /v1/subscriptions/{name}/reset`
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

#[derive(Debug, Deserialize)]
pub struct StateQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StatePage {
    entries: Vec<StateEntry>,
    /// Pass as `after` for the next page; `null` once the last page is reached.
    next_after: Option<String>,
}

/// `GET /v1/subscriptions/{name}/state?prefix=&after=KEY&limit=N`
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

#[derive(Debug, Deserialize)]
pub struct ParkedQuery {
    subscription: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Parked {
    parked: Vec<ParkedEvent>,
}

/// `GET /v1/parked?subscription=NAME`
pub async fn parked(
    _: Granted<ReadScope>,
    State(api): State<Api>,
    QueryParams(query): QueryParams<ParkedQuery>,
) -> Result<Json<Parked>, ApiError> {
    let parked = api.store.parked(query.subscription.as_deref()).await?;
    Ok(Json(Parked { parked }))
}

/// How many entries an action changed.
#[derive(Debug, Serialize)]
pub struct Changed {
    changed: u64,
}

/// `POST /v1/parked/{id}/replay`
pub async fn replay_one(
    _: Granted<AdminScope>,
    State(api): State<Api>,
    PathParams(id): PathParams<i64>,
) -> Result<Json<Changed>, ApiError> {
    let changed = operate::replay_parked(&api.store, ParkedSelection::One(id)).await?;
    Ok(Json(Changed { changed }))
}

/// The body of an action on every entry, of one subscription or sink, or of all.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Every {
    subscription: Option<String>,
    sink: Option<String>,
}

/// `POST /v1/parked/replay` with `{"subscription": NAME}` or `{}`
pub async fn replay_all(
    _: Granted<AdminScope>,
    State(api): State<Api>,
    JsonBody(body): JsonBody<Every>,
) -> Result<Json<Changed>, ApiError> {
    if body.sink.is_some() {
        return Err(ApiError::bad_request(
            "sink: parked events belong to subscriptions",
        ));
    }
    let selection = ParkedSelection::AllOf(body.subscription.as_deref());
    let changed = operate::replay_parked(&api.store, selection).await?;
    Ok(Json(Changed { changed }))
}

/// `POST /v1/parked/{id}/skip`
pub async fn skip_parked(
    _: Granted<AdminScope>,
    State(api): State<Api>,
    PathParams(id): PathParams<i64>,
) -> Result<Json<Changed>, ApiError> {
    operate::skip_parked(&api.store, id).await?;
    Ok(Json(Changed { changed: 1 }))
}

#[derive(Debug, Serialize)]
pub struct Plugins {
    plugins: Vec<PluginRecord>,
}

/// `GET /v1/plugins`
pub async fn plugins(
    _: Granted<ReadScope>,
    State(api): State<Api>,
) -> Result<Json<Plugins>, ApiError> {
    let plugins = api.store.plugin_records().await?;
    Ok(Json(Plugins { plugins }))
}

#[derive(Debug, Deserialize)]
pub struct DeliveriesQuery {
    sink: Option<String>,
    status: Option<DeliveryStatus>,
    limit: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Deliveries {
    deliveries: Vec<Delivery>,
}

/// `GET /v1/deliveries?sink=&status=pending|delivered|dead|skipped&limit=N`, newest first.
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

/// `POST /v1/deliveries/{id}/retry`
pub async fn retry_one(
    _: Granted<AdminScope>,
    State(api): State<Api>,
    PathParams(id): PathParams<i64>,
) -> Result<Json<Changed>, ApiError> {
    let changed = operate::retry_deliveries(&api.store, DeliverySelection::One(id)).await?;
    Ok(Json(Changed { changed }))
}

/// `POST /v1/deliveries/retry` with `{"sink": NAME}` or `{}`
pub async fn retry_all(
    _: Granted<AdminScope>,
    State(api): State<Api>,
    JsonBody(body): JsonBody<Every>,
) -> Result<Json<Changed>, ApiError> {
    if body.subscription.is_some() {
        return Err(ApiError::bad_request(
            "subscription: messages are retried by sink",
        ));
    }
    let selection = DeliverySelection::All {
        sink: body.sink.as_deref(),
    };
    let changed = operate::retry_deliveries(&api.store, selection).await?;
    Ok(Json(Changed { changed }))
}

/// `POST /v1/deliveries/{id}/skip`
pub async fn skip_delivery(
    _: Granted<AdminScope>,
    State(api): State<Api>,
    PathParams(id): PathParams<i64>,
) -> Result<Json<Changed>, ApiError> {
    operate::skip_delivery(&api.store, id).await?;
    Ok(Json(Changed { changed: 1 }))
}
