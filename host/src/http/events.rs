//! Appending and reading events: `/v1/events`, `/v1/streams/{type}/{id}/events` and
//! `/v1/categories/{type}/events`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use eventhost_domain::input::{EventLine, WrittenExpectedVersion, deserialize_expected_version};
use eventhost_domain::{Event, ExpectedVersion, Metadata, NewEvent, StreamId};
use eventhost_store::EventStore;

use super::Api;
use super::auth::{AppendScope, Granted, ReadScope};
use super::error::{ApiError, ErrorBody, JsonBody, PathParams, QueryParams, limit, number};
use crate::operate::{self, AppendedRecord};

/// Events per page when the request does not say.
pub const DEFAULT_PAGE: u64 = 100;
/// The most events one page holds.
pub const MAX_PAGE: u64 = 1_000;

/// The body of an append to one stream.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamAppend {
    /// `"any"` (the default), `"no-stream"`, or the version the stream must be at.
    #[serde(default, deserialize_with = "deserialize_expected_version")]
    #[schema(value_type = WrittenExpectedVersion)]
    expected_version: ExpectedVersion,
    #[schema(min_items = 1, max_items = 10000)]
    events: Vec<EventBody>,
}

/// One event of a stream append.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// What happened, e.g. `order.created` (at most 1024 bytes).
    #[schema(min_length = 1)]
    event_type: String,
    /// Any JSON value (default `null`).
    #[serde(default)]
    payload: serde_json::Value,
    #[serde(default)]
    metadata: Metadata,
    /// Supply ids to make retries safe: an append whose ids are all stored writes nothing.
    #[serde(default)]
    id: Option<Uuid>,
}

/// The body of an append to several streams at once: each event names its stream.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinesAppend {
    #[schema(min_items = 1, max_items = 10000)]
    events: Vec<EventLine>,
}

/// What an append did: `201 Created`, or `200 OK` when every event was already stored (a
/// retried request).
#[derive(Debug, Serialize, ToSchema)]
pub struct AppendResponse {
    duplicate: bool,
    events: Vec<AppendedRecord>,
}

/// A page of events and where the next one starts.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsPage {
    events: Vec<Event>,
    /// Pass as `after` for the next page: a position (all, category) or a version (stream).
    next_after: u64,
}

/// A stream's path parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StreamPath {
    /// The stream's aggregate type, e.g. `order`.
    #[param(min_length = 1)]
    aggregate_type: String,
    /// The stream's aggregate id, e.g. `o-1001`.
    #[param(min_length = 1)]
    aggregate_id: String,
}

/// `after` and `limit`, as written.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Start after this position (all, category) or version (stream); 0 by default.
    #[param(value_type = Option<u64>, maximum = 9223372036854775807_u64)]
    after: Option<String>,
    /// Events on the page: 1 to 1000, 100 by default.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

impl PageQuery {
    fn after(&self) -> Result<u64, ApiError> {
        number("after", self.after.as_deref(), 0, u64::MAX)
    }

    fn limit(&self) -> Result<usize, ApiError> {
        limit(self.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)
    }
}

fn appended(records: Vec<AppendedRecord>) -> (StatusCode, Json<AppendResponse>) {
    let written = records.iter().filter(|record| !record.duplicate).count();
    metrics::counter!("eventhost_events_appended_total", "source" => "http")
        .increment(written as u64);
    let duplicate = written == 0;
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let events = records;
    (status, Json(AppendResponse { duplicate, events }))
}

/// Appends events to one stream, atomically, if it is at the expected version.
#[utoipa::path(
    post,
    path = "/v1/streams/{aggregate_type}/{aggregate_id}/events",
    tag = "events",
    params(StreamPath),
    request_body = StreamAppend,
    responses(
        (status = 201, description = "Appended", body = AppendResponse),
        (status = 200, description = "Every event's id was already stored in this stream: a retry, nothing written", body = AppendResponse),
        (status = 400, description = "Bad input (the message names the field)", body = ErrorBody),
        (status = 409, description = "Version conflict, or some ids already stored", body = ErrorBody),
        (status = 413, description = "The body or a payload is over its cap", body = ErrorBody),
    ),
    security(("token" = ["append"]))
)]
pub async fn append_to_stream(
    _: Granted<AppendScope>,
    State(api): State<Api>,
    PathParams(path): PathParams<StreamPath>,
    JsonBody(body): JsonBody<StreamAppend>,
) -> Result<(StatusCode, Json<AppendResponse>), ApiError> {
    let stream = StreamId::new(path.aggregate_type, path.aggregate_id);
    let events: Vec<NewEvent> = body
        .events
        .into_iter()
        .map(|event| NewEvent {
            id: event.id,
            event_type: event.event_type,
            payload: event.payload,
            metadata: event.metadata,
        })
        .collect();
    let records =
        operate::append_stream(&api.store, &stream, body.expected_version, &events).await?;
    Ok(appended(records))
}

/// Appends events to several streams in one transaction: all of them or none.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body = LinesAppend,
    responses(
        (status = 201, description = "Appended", body = AppendResponse),
        (status = 200, description = "Every append was a retry: nothing written", body = AppendResponse),
        (status = 400, description = "Bad input (the message names the event: `events[N]`)", body = ErrorBody),
        (status = 409, description = "An event's stream is not at its expected version", body = ErrorBody),
        (status = 413, description = "The body or a payload is over its cap", body = ErrorBody),
    ),
    security(("token" = ["append"]))
)]
pub async fn append_lines(
    _: Granted<AppendScope>,
    State(api): State<Api>,
    JsonBody(body): JsonBody<LinesAppend>,
) -> Result<(StatusCode, Json<AppendResponse>), ApiError> {
    if body.events.is_empty() {
        return Err(ApiError::bad_request(
            "events: an append needs at least one event",
        ));
    }
    let records = operate::append_lines(&api.store, &body.events).await?;
    Ok(appended(records))
}

/// A page of one stream's events after a version, in version order.
#[utoipa::path(
    get,
    path = "/v1/streams/{aggregate_type}/{aggregate_id}/events",
    tag = "events",
    params(StreamPath, PageQuery),
    responses(
        (status = 200, description = "A page of events", body = EventsPage),
        (status = 400, description = "Bad `after` or `limit`", body = ErrorBody),
    ),
    security(("token" = ["read"]))
)]
pub async fn read_stream(
    _: Granted<ReadScope>,
    State(api): State<Api>,
    PathParams(path): PathParams<StreamPath>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let (after, limit) = (query.after()?, query.limit()?);
    let stream = StreamId::new(path.aggregate_type, path.aggregate_id);
    let events = api.store.read_stream(&stream, after + 1, limit).await?;
    if events.is_empty() && after > 0 {
        let version = api.store.stream_version(&stream).await?;
        if after > version {
            return Err(ApiError::bad_request(format!(
                "after: version {after} is past the stream's last version ({version})"
            )));
        }
    }
    let next_after = events.last().map_or(after, |event| event.version);
    Ok(Json(EventsPage { events, next_after }))
}

/// A page of every event after a position, in position order.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of events", body = EventsPage),
        (status = 400, description = "Bad `after` (no event of this database is there) or `limit`", body = ErrorBody),
    ),
    security(("token" = ["read"]))
)]
pub async fn read_all(
    _: Granted<ReadScope>,
    State(api): State<Api>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    read_positions(&api, None, &query).await
}

/// A page of one aggregate type's events after a position, in position order.
#[utoipa::path(
    get,
    path = "/v1/categories/{aggregate_type}/events",
    tag = "events",
    params(("aggregate_type" = String, Path, description = "The aggregate type"), PageQuery),
    responses(
        (status = 200, description = "A page of events", body = EventsPage),
        (status = 400, description = "Bad `after` (no event of this database is there) or `limit`", body = ErrorBody),
    ),
    security(("token" = ["read"]))
)]
pub async fn read_category(
    _: Granted<ReadScope>,
    State(api): State<Api>,
    PathParams(aggregate_type): PathParams<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    read_positions(&api, Some(&aggregate_type), &query).await
}

async fn read_positions(
    api: &Api,
    aggregate_type: Option<&str>,
    query: &PageQuery,
) -> Result<Json<EventsPage>, ApiError> {
    let (after, limit) = (query.after()?, query.limit()?);
    check_position(api, after).await?;
    let events = api
        .store
        .read_positions(aggregate_type, after, limit)
        .await?;
    let next_after = events.last().map_or(after, |event| event.position);
    Ok(Json(EventsPage { events, next_after }))
}

/// A position a client resumes after is one this database gave it: an event's. Anything
/// else (a cursor kept from another database, a typo) would silently skip or repeat events.
pub async fn check_position(api: &Api, after: u64) -> Result<(), ApiError> {
    if after == 0 {
        return Ok(());
    }
    let at = api.store.read_positions(None, after - 1, 1).await?;
    if at.first().is_some_and(|event| event.position == after) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "after: no event of this database is at position {after} (a position from another database?)"
    )))
}
