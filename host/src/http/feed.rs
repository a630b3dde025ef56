//! `GET /v1/feed`: the log as a live feed of Server-Sent Events, for consumers outside the
//! daemon. Events come in the subscriptions' gap-free order (on PostgreSQL an event committed
//! late is never passed over: see the store), each with its checkpoint as the SSE `id`; a
//! client that reconnects with `Last-Event-ID` (browsers' `EventSource` does it by itself)
//! resumes just after the last event it got: it misses nothing and gets nothing twice.
//!
//! A feed reads pages from the store and, once caught up, waits for what wakes the
//! subscriptions (a PostgreSQL notification, an append of this process, the poll); it ends
//! when the daemon stops.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use utoipa::{IntoParams, ToSchema};

use eventhost_domain::{Checkpoint, Filter};
use eventhost_store::{BatchEntry, BatchLimit, EventStore, Store};

use super::Api;
use super::auth::{Granted, ReadScope};
use super::error::{ApiError, ErrorBody, QueryParams};
use super::events::check_position;

/// Events read from the store at once.
const PAGE: usize = 500;
/// Bytes of events read from the store at once.
const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// A comment line every so often keeps proxies from closing an idle feed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The pause before reading again after the store failed.
const RETRY: Duration = Duration::from_secs(1);

/// Where to start and what to follow.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// `beginning` (the default) or `now`.
    #[param(pattern = "^(beginning|now)$")]
    from: Option<String>,
    /// Start after this checkpoint (an event's SSE id); `Last-Event-ID` takes precedence.
    after: Option<String>,
    /// Only these aggregate types (comma-separated).
    aggregate_type: Option<String>,
    /// Only these event types (comma-separated).
    event_type: Option<String>,
}

/// The log as a live feed of Server-Sent Events, in the subscriptions' gap-free order; each
/// event's SSE id is its checkpoint, for `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/feed", tag = "events",
    params(
        FeedQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume just after this event (its SSE id)"),
    ),
    responses(
        (status = 200, description = "An endless stream of events: `id: TX:POSITION`, `data: <event as JSON>`", content_type = "text/event-stream", body = FeedMessage),
        (status = 400, description = "Bad `from`, `after` or `Last-Event-ID`", body = ErrorBody),
        (status = 503, description = "`max_feeds` feeds are open", body = ErrorBody),
    ),
    security(("token" = ["read"])))]
pub async fn feed(
    _: Granted<ReadScope>,
    State(api): State<Api>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<FeedQuery>,
) -> Result<Response, ApiError> {
    let permit = api.feeds.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_feeds",
            "this daemon serves as many live feeds as it may ([http] max_feeds): try again later",
        )
    })?;
    let filter = Filter {
        aggregate_types: names(query.aggregate_type.as_deref()),
        event_types: names(query.event_type.as_deref()),
    };
    let start = start(&api, &headers, &query).await?;
    let follower = Follower {
        store: api.store.clone(),
        filter,
        checkpoint: start,
        pending: VecDeque::new(),
        changes: api.changes.clone(),
        stopping: api.stopping.clone(),
        _permit: permit,
    };
    metrics::gauge!("eventhost_http_feeds_open").increment(1.0);
    let events = futures::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok::<_, Infallible>(event), follower))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// A comma-separated list of names, without empty ones.
fn names(list: Option<&str>) -> Vec<String> {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The checkpoint the feed starts after: `Last-Event-ID`, else `after`, else `from`.
async fn start(api: &Api, headers: &HeaderMap, query: &FeedQuery) -> Result<Checkpoint, ApiError> {
    let last_event_id = headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID: not text"))
        })
        .transpose()?
        .filter(|text| !text.trim().is_empty());
    let (given, name) = match (last_event_id, query.after.as_deref()) {
        (Some(text), _) => (Some(text), "Last-Event-ID"),
        (None, Some(text)) => (Some(text), "after"),
        (None, None) => (None, ""),
    };
    if let Some(text) = given {
        let checkpoint: Checkpoint = text.trim().parse().map_err(|_| {
            ApiError::bad_request(format!(
                "{name}: expected an event's id from this feed (TX:POSITION), got {text:?}"
            ))
        })?;
        check_position(api, checkpoint.position())
            .await
            .map_err(|error| ApiError::bad_request(format!("{name}: {}", error.message)))?;
        return Ok(checkpoint);
    }
    match query.from.as_deref() {
        None | Some("beginning") => Ok(Checkpoint::ORIGIN),
        Some("now") => Ok(api.store.head().await?),
        Some(other) => Err(ApiError::bad_request(format!(
            "from: expected `beginning` or `now`, got {other:?}"
        ))),
    }
}

/// One client's place in the log.
struct Follower {
    store: Store,
    filter: Filter,
    /// After the last event sent (or queued to be sent next).
    checkpoint: Checkpoint,
    pending: VecDeque<BatchEntry>,
    changes: watch::Receiver<u64>,
    stopping: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Follower {
    /// The next event to send; `None` when the daemon stops.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                return Some(sse_event(&entry));
            }
            // Seen before reading: a change during the read wakes the wait below.
            self.changes.borrow_and_update();
            let limit = BatchLimit {
                events: PAGE,
                bytes: PAGE_BYTES,
            };
            match self
                .store
                .read_batch(self.checkpoint, &self.filter, limit)
                .await
            {
                Ok(entries) if !entries.is_empty() => {
                    if let Some(last) = entries.last() {
                        self.checkpoint = last.checkpoint;
                    }
                    self.pending.extend(entries);
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, "a live feed cannot read the store; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => continue,
                        () = self.stopping.cancelled() => return None,
                    }
                }
            }
            tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                () = self.stopping.cancelled() => return None,
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        metrics::gauge!("eventhost_http_feeds_open").decrement(1.0);
    }
}

/// One event of the feed, as the SSE fields carry it.
#[derive(ToSchema)]
pub struct FeedMessage {
    /// The event's checkpoint (`TX:POSITION`): send it back as `Last-Event-ID`.
    id: String,
    /// Absent for an event; `unreadable` for one the store cannot read whole.
    event: Option<&'static str>,
    /// The event as JSON; for an unreadable one its id, stream, position and the reason.
    data: String,
}

impl From<FeedMessage> for SseEvent {
    fn from(message: FeedMessage) -> Self {
        let event = SseEvent::default().id(message.id).data(message.data);
        match message.event {
            Some(name) => event.event(name),
            None => event,
        }
    }
}

/// An entry as an SSE event: its checkpoint the id, the event as JSON the data. An event the
/// store cannot read whole comes as an `unreadable` event with the reason.
fn sse_event(entry: &BatchEntry) -> SseEvent {
    let id = entry.checkpoint.to_string();
    let message = match (&entry.defect, serde_json::to_string(&entry.event)) {
        (None, Ok(data)) => FeedMessage {
            id,
            event: None,
            data,
        },
        (Some(reason), _) => unreadable(id, entry, reason),
        (None, Err(error)) => unreadable(id, entry, &error.to_string()),
    };
    message.into()
}

fn unreadable(id: String, entry: &BatchEntry, reason: &str) -> FeedMessage {
    let data = serde_json::json!({
        "id": entry.event.id,
        "position": entry.event.position,
        "aggregate_type": entry.event.aggregate_type,
        "aggregate_id": entry.event.aggregate_id,
        "version": entry.event.version,
        "error": reason,
    });
    FeedMessage {
        id,
        event: Some("unreadable"),
        data: data.to_string(),
    }
}
