//! Appending and reading events: `/v1/events`, `/v1/streams/{type}/{id}/events` and
//! `/v1/categories/{type}/events`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use eventhost_domain::input::{EventLine, deserialize_expected_version};
use eventhost_domain::{Event, ExpectedVersion, Metadata, NewEvent, StreamId};
use eventhost_store::EventStore;

use super::Api;
use super::auth::{AppendScope, Granted, ReadScope};
use super::error::{ApiError, JsonBody, PathParams, QueryParams, limit, number};
use crate::operate::{self, AppendedRecord};

/// Events per page when the request does not say.
pub const DEFAULT_PAGE: u64 = 100;
/// The most events one page holds.
pub const MAX_PAGE: u64 = 1_000;

/// The body of an append to one stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamAppend {
    /// `"any"` (the default), `"no-stream"`, or the version the stream must be at.
    #[serde(default, deserialize_with = "deserialize_expected_version")]
    expected_version: ExpectedVersion,
    events: Vec<EventBody>,
}

/// One event of a stream append.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    event_type: String,
    #[serde(default)]
    payload: serde_json::Value,
    #[serde(default)]
    metadata: Metadata,
    /// Supply ids to make retries safe: an append whose ids are all stored writes nothing.
    #[serde(default)]
    id: Option<Uuid>,
}

/// The body of an append to several streams at once: each event names its stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinesAppend {
    events: Vec<EventLine>,
}

/// What an append did: `201 Created`, or `200 OK` when every event was already stored (a
/// retried request).
#[derive(Debug, Serialize)]
pub struct AppendResponse {
    duplicate: bool,
    events: Vec<AppendedRecord>,
}

/// A page of events and where the next one starts.
#[derive(Debug, Serialize)]
pub struct EventsPage {
    events: Vec<Event>,
    /// Pass as `after` for the next page: a position (all, category) or a version (stream).
    next_after: u64,
}

/// `after` and `limit`, as written.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    after: Option<String>,
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

/// `POST /v1/streams/{aggregate_type}/{aggregate_id}/events`
pub async fn append_to_stream(
    _: Granted<AppendScope>,
    State(api): State<Api>,
    PathParams((aggregate_type, aggregate_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<StreamAppend>,
) -> Result<(StatusCode, Json<AppendResponse>), ApiError> {
    let stream = StreamId::new(aggregate_type, aggregate_id);
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

/// `POST /v1/events`
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

/// `GET /v1/streams/{aggregate_type}/{aggregate_id}/events?after=VERSION&limit=N`
pub async fn read_stream(
    _: Granted<ReadScope>,
    State(api): State<Api>,
    PathParams((aggregate_type, aggregate_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let (after, limit) = (query.after()?, query.limit()?);
    let stream = StreamId::new(aggregate_type, aggregate_id);
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

/// `GET /v1/events?after=POSITION&limit=N`
pub async fn read_all(
    _: Granted<ReadScope>,
    State(api): State<Api>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    read_positions(&api, None, &query).await
}

/// `GET /v1/categories/{aggregate_type}/events?after=POSITION&limit=N`
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
