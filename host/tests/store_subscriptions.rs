//! Durable subscriptions' guarantees, checked identically against PostgreSQL and SQLite:
//! a batch's effects and checkpoint commit together or not at all, and only once.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
use eventhost_store::{
    BatchCommit, BatchEntry, Checkpoint, EventStore, Filter, Park, ParkedSelection, PendingAppend,
    StoreError, SubscriptionStore,
};
use serde_json::json;

const SUB: &str = "projection.totals";

fn orders() -> Filter {
    Filter {
        aggregate_types: vec!["order".into()],
        ..Filter::default()
    }
}

async fn seed(store: &impl EventStore, count: usize) {
    for n in 0..count {
        let stream = StreamId::new("order", format!("o-{n}"));
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                &[NewEvent::new("order.created", json!({ "n": n }))],
            )
            .await
            .unwrap();
    }
    store
        .append(
            &StreamId::new("invoice", "i-1"),
            ExpectedVersion::Any,
            &[NewEvent::new("invoice.sent", json!({}))],
        )
        .await
        .unwrap();
}

/// Reads the next batch, waiting for events that are committed but not readable yet.
async fn next_batch(
    store: &impl EventStore,
    after: Checkpoint,
    filter: &Filter,
    expected: usize,
) -> Vec<BatchEntry> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let batch = store.read_batch(after, filter, expected).await.unwrap();
        if batch.len() == expected {
            return batch;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} events readable",
            batch.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn shipment(id: &str) -> PendingAppend {
    PendingAppend {
        stream: StreamId::new("shipment", id),
        expected: ExpectedVersion::NoStream,
        events: vec![NewEvent::new("shipment.requested", json!({ "order": id }))],
    }
}

async fn a_batch_commits_its_effects_and_checkpoint_together<S: EventStore + SubscriptionStore>(
    store: &S,
) {
    seed(store, 3).await;
    let subscription = store
        .ensure_subscription(SUB, "projection", &orders(), Checkpoint::ORIGIN)
        .await
        .unwrap();
    assert_eq!(subscription.checkpoint, Checkpoint::ORIGIN);
    assert_eq!(
        store.lag(SUB).await.unwrap(),
        3,
        "the invoice does not match the filter"
    );
    let batch = next_batch(store, subscription.checkpoint, &subscription.filter, 3).await;
    let mut commit = BatchCommit::advance(
        SUB,
        subscription.revision,
        subscription.checkpoint,
        batch[2].checkpoint,
    );
    commit.appends.push(shipment("o-0"));
    commit.state = vec![
        ("order/o-0".into(), Some("{\"total\":1}".into())),
        ("gone".into(), None),
    ];
    store.commit_batch(&commit).await.unwrap();

    let stored = store.subscription(SUB).await.unwrap().unwrap();
    assert_eq!(stored.checkpoint, batch[2].checkpoint);
    assert_eq!(store.lag(SUB).await.unwrap(), 0);
    assert_eq!(
        store.state_get(SUB, "order/o-0").await.unwrap().as_deref(),
        Some("{\"total\":1}")
    );
    assert_eq!(
        store
            .stream_version(&StreamId::new("shipment", "o-0"))
            .await
            .unwrap(),
        1
    );
    // State lives in the subscription's own namespace.
    assert_eq!(
        store.state_get("other.sub", "order/o-0").await.unwrap(),
        None
    );
}

async fn a_batch_read_from_a_stale_checkpoint_commits_nothing<S: EventStore + SubscriptionStore>(
    store: &S,
) {
    seed(store, 2).await;
    store
        .ensure_subscription(SUB, "projection", &orders(), Checkpoint::ORIGIN)
        .await
        .unwrap();
    let batch = next_batch(store, Checkpoint::ORIGIN, &orders(), 2).await;
    let first = BatchCommit::advance(SUB, 0, Checkpoint::ORIGIN, batch[1].checkpoint);
    store.commit_batch(&first).await.unwrap();

    // A second daemon that read the same batch must not commit it again.
    let mut second = BatchCommit::advance(SUB, 0, Checkpoint::ORIGIN, batch[1].checkpoint);
    second.appends.push(shipment("dup"));
    second.state = vec![("k".into(), Some("v".into()))];
    let error = store.commit_batch(&second).await.unwrap_err();
    assert!(
        matches!(error, StoreError::CheckpointMoved { .. }),
        "{error:?}"
    );
    assert_eq!(
        store
            .stream_version(&StreamId::new("shipment", "dup"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.state_get(SUB, "k").await.unwrap(), None);
}

async fn a_conflicting_emit_fails_the_whole_batch<S: EventStore + SubscriptionStore>(store: &S) {
    seed(store, 1).await;
    store
        .ensure_subscription(SUB, "projection", &orders(), Checkpoint::ORIGIN)
        .await
        .unwrap();
    store
        .append(
            &StreamId::new("shipment", "o-0"),
            ExpectedVersion::Any,
            &[NewEvent::new("x", json!(1))],
        )
        .await
        .unwrap();
    let batch = next_batch(store, Checkpoint::ORIGIN, &orders(), 1).await;
    let mut commit = BatchCommit::advance(SUB, 0, Checkpoint::ORIGIN, batch[0].checkpoint);
    commit.state = vec![("k".into(), Some("v".into()))];
    commit.appends.push(shipment("other"));
    commit.appends.push(shipment("o-0"));
    let error = store.commit_batch(&commit).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict { actual: 1, stream, .. } if stream.aggregate_id == "o-0"),
        "{error:?}"
    );
    let stored = store.subscription(SUB).await.unwrap().unwrap();
    assert_eq!(stored.checkpoint, Checkpoint::ORIGIN);
    assert_eq!(store.state_get(SUB, "k").await.unwrap(), None);
    assert_eq!(
        store
            .stream_version(&StreamId::new("shipment", "other"))
            .await
            .unwrap(),
        0
    );
}

/// A batch that emits to many streams (a policy's: one new stream per handled event, one
/// stream it extends, one it fills with several events) writes each stream's events at their
/// versions, in the order the batch emitted them; a batch that emits twice to one stream, or
/// re-emits an event already stored in its stream, commits as append after append would.
async fn a_batch_emits_to_many_streams_in_order<S: EventStore + SubscriptionStore>(store: &S) {
    seed(store, 1).await;
    let record = store
        .ensure_subscription(SUB, "projection", &orders(), Checkpoint::ORIGIN)
        .await
        .unwrap();
    let extended = StreamId::new("ledger", "l-1");
    let stored = NewEvent::new("ledger.opened", json!({}));
    store
        .append(&extended, ExpectedVersion::NoStream, &[stored])
        .await
        .unwrap();
    let batch = next_batch(store, Checkpoint::ORIGIN, &orders(), 1).await;
    let mut commit = BatchCommit::advance(
        SUB,
        record.revision,
        Checkpoint::ORIGIN,
        batch[0].checkpoint,
    );
    for n in 0..20 {
        commit.appends.push(shipment(&format!("s-{n}")));
    }
    commit.appends.push(PendingAppend {
        stream: extended.clone(),
        expected: ExpectedVersion::Exact(1),
        events: vec![NewEvent::new("ledger.debited", json!({ "cents": 5 }))],
    });
    let several = StreamId::new("pick", "p-1");
    commit.appends.push(PendingAppend {
        stream: several.clone(),
        expected: ExpectedVersion::Any,
        events: (0..3)
            .map(|n| NewEvent::new("pick.line", json!({ "n": n })))
            .collect(),
    });
    store.commit_batch(&commit).await.unwrap();

    let mut emitted = Vec::new();
    for n in 0..20 {
        let events = store
            .read_stream(&StreamId::new("shipment", format!("s-{n}")), 1, 10)
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "stream s-{n}");
        assert_eq!(events[0].version, 1);
        assert_eq!(events[0].payload, json!({ "order": format!("s-{n}") }));
        emitted.push(events[0].position);
    }
    let ledger = store.read_stream(&extended, 1, 10).await.unwrap();
    let types: Vec<&str> = ledger.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["ledger.opened", "ledger.debited"]);
    assert_eq!(ledger[1].version, 2);
    emitted.push(ledger[1].position);
    let picks = store.read_stream(&several, 1, 10).await.unwrap();
    let versions: Vec<u64> = picks.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(picks[2].payload, json!({ "n": 2 }));
    emitted.extend(picks.iter().map(|e| e.position));
    assert!(
        emitted.windows(2).all(|pair| pair[0] < pair[1]),
        "positions follow the order of emission: {emitted:?}"
    );

    // An event already stored in its stream, emitted again beside a new stream's.
    let record = store.subscription(SUB).await.unwrap().unwrap();
    let mut again =
        BatchCommit::advance(SUB, record.revision, record.checkpoint, record.checkpoint);
    let mut replayed = NewEvent::new("ledger.debited", json!({ "cents": 5 }));
    replayed.id = Some(ledger[1].id);
    again.appends.push(PendingAppend {
        stream: extended.clone(),
        expected: ExpectedVersion::Any,
        events: vec![replayed],
    });
    again.appends.push(shipment("s-20"));
    store.commit_batch(&again).await.unwrap();
    // Twice to one stream.
    let record = store.subscription(SUB).await.unwrap().unwrap();
    let mut twice =
        BatchCommit::advance(SUB, record.revision, record.checkpoint, record.checkpoint);
    for expected in [ExpectedVersion::Exact(3), ExpectedVersion::Exact(4)] {
        twice.appends.push(PendingAppend {
            stream: several.clone(),
            expected,
            events: vec![NewEvent::new("pick.line", json!({ "n": 9 }))],
        });
    }
    store.commit_batch(&twice).await.unwrap();
    assert_eq!(
        store.stream_version(&extended).await.unwrap(),
        2,
        "the re-emitted event was written again"
    );
    assert_eq!(store.stream_version(&several).await.unwrap(), 5);
    assert_eq!(
        store
            .stream_version(&StreamId::new("shipment", "s-20"))
            .await
            .unwrap(),
        1
    );
}

async fn parked_events_can_be_listed_replayed_and_skipped<S: EventStore + SubscriptionStore>(
    store: &S,
) {
    seed(store, 2).await;
    store
        .ensure_subscription(SUB, "projection", &orders(), Checkpoint::ORIGIN)
        .await
        .unwrap();
    let batch = next_batch(store, Checkpoint::ORIGIN, &orders(), 2).await;
    let mut commit = BatchCommit::advance(SUB, 0, Checkpoint::ORIGIN, batch[1].checkpoint);
    for (entry, error) in batch.iter().zip(["boom", "bang"]) {
        commit.park = Some(Park {
            event_id: entry.event.id,
            position: entry.event.position,
            error: error.into(),
            attempts: 5,
        });
        store.commit_batch(&commit).await.unwrap();
        commit.from = commit.to;
        commit.revision += 1;
    }
    let parked = store.parked(Some(SUB)).await.unwrap();
    assert_eq!(parked.len(), 2);
    assert_eq!((parked[0].error.as_str(), parked[0].attempts), ("boom", 5));
    assert!(!parked[0].replay_requested);
    assert!(store.parked(Some("other")).await.unwrap().is_empty());

    assert_eq!(
        store
            .request_replay(ParkedSelection::One(parked[0].id))
            .await
            .unwrap(),
        1
    );
    let requests = store.replay_requests(SUB).await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].1.id, batch[0].event.id);

    let stored = store.subscription(SUB).await.unwrap().unwrap();
    let mut replay =
        BatchCommit::advance(SUB, stored.revision, stored.checkpoint, stored.checkpoint);
    replay.replayed = Some(parked[0].id);
    replay.state = vec![("replayed".into(), Some("yes".into()))];
    store.commit_batch(&replay).await.unwrap();
    assert_eq!(
        store.state_get(SUB, "replayed").await.unwrap().as_deref(),
        Some("yes")
    );
    replay.revision += 1;
    let error = store.commit_batch(&replay).await.unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound(_)),
        "a replay resolves once: {error:?}"
    );

    assert_eq!(
        store
            .skip_parked(ParkedSelection::AllOf(Some(SUB)))
            .await
            .unwrap(),
        1
    );
    assert!(store.parked(None).await.unwrap().is_empty());
}

async fn reset_moves_the_checkpoint_and_can_clear_state<S: EventStore + SubscriptionStore>(
    store: &S,
) {
    seed(store, 3).await;
    store
        .ensure_subscription(SUB, "projection", &orders(), Checkpoint::ORIGIN)
        .await
        .unwrap();
    let batch = next_batch(store, Checkpoint::ORIGIN, &orders(), 3).await;
    let mut commit = BatchCommit::advance(SUB, 0, Checkpoint::ORIGIN, batch[2].checkpoint);
    commit.state = vec![("k".into(), Some("v".into()))];
    store.commit_batch(&commit).await.unwrap();

    let reset = store
        .reset(SUB, batch[0].event.position, false)
        .await
        .unwrap();
    assert_eq!(reset.checkpoint, batch[0].checkpoint);
    assert_eq!(store.lag(SUB).await.unwrap(), 2);
    assert_eq!(
        store.state_get(SUB, "k").await.unwrap().as_deref(),
        Some("v")
    );
    let again = store
        .ensure_subscription(SUB, "projection", &orders(), Checkpoint::ORIGIN)
        .await
        .unwrap();
    assert_eq!(
        again.checkpoint, batch[0].checkpoint,
        "an existing subscription keeps its checkpoint"
    );

    let rebuilt = store.reset(SUB, 0, true).await.unwrap();
    assert_eq!(rebuilt.checkpoint, Checkpoint::ORIGIN);
    assert_eq!(store.state_get(SUB, "k").await.unwrap(), None);
    let missing = store.reset("nope.sub", 0, false).await.unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
}

async fn state_scans_by_exact_prefix_in_key_order<S: EventStore + SubscriptionStore>(store: &S) {
    seed(store, 1).await;
    store
        .ensure_subscription(SUB, "projection", &orders(), Checkpoint::ORIGIN)
        .await
        .unwrap();
    let batch = next_batch(store, Checkpoint::ORIGIN, &orders(), 1).await;
    let mut commit = BatchCommit::advance(SUB, 0, Checkpoint::ORIGIN, batch[0].checkpoint);
    commit.state = ["a/2", "a/1", "a_x", "A/3", "b", "a%"]
        .iter()
        .map(|key| (key.to_string(), Some(format!("v-{key}"))))
        .collect();
    store.commit_batch(&commit).await.unwrap();
    let keys = |entries: Vec<(String, String)>| {
        entries.into_iter().map(|(key, _)| key).collect::<Vec<_>>()
    };
    assert_eq!(
        keys(store.state_scan(SUB, "a/", None, 10).await.unwrap()),
        ["a/1", "a/2"]
    );
    assert_eq!(
        keys(store.state_scan(SUB, "a/", Some("a/1"), 10).await.unwrap()),
        ["a/2"]
    );
    assert_eq!(
        keys(store.state_scan(SUB, "a_", None, 10).await.unwrap()),
        ["a_x"]
    );
    assert_eq!(
        keys(store.state_scan(SUB, "a%", None, 10).await.unwrap()),
        ["a%"]
    );
    assert_eq!(
        keys(store.state_scan(SUB, "", None, 3).await.unwrap()),
        ["A/3", "a%", "a/1"]
    );
}

/// Issue 16's races, at the store: an operator's request made while a batch is in flight
/// fails that batch's commit, even when it leaves the checkpoint where it was.
async fn an_operator_request_fails_the_batch_in_flight<S: EventStore + SubscriptionStore>(
    store: &S,
) {
    seed(store, 3).await;
    let started = store
        .ensure_subscription(SUB, "projection", &orders(), Checkpoint::ORIGIN)
        .await
        .unwrap();
    let batch = next_batch(store, Checkpoint::ORIGIN, &orders(), 3).await;
    let mut first = BatchCommit::advance(
        SUB,
        started.revision,
        Checkpoint::ORIGIN,
        batch[0].checkpoint,
    );
    first.state = vec![("count".into(), Some("1".into()))];
    store.commit_batch(&first).await.unwrap();

    // A batch begins at revision + 1; the operator rebuilds from the same checkpoint.
    let in_flight = started.revision + 1;
    let cleared = store
        .reset(SUB, batch[0].event.position, true)
        .await
        .unwrap();
    assert_eq!(
        cleared.checkpoint, batch[0].checkpoint,
        "the checkpoint did not move"
    );
    assert!(cleared.revision > in_flight);
    let mut stale = BatchCommit::advance(SUB, in_flight, batch[0].checkpoint, batch[1].checkpoint);
    stale.state = vec![("count".into(), Some("2".into()))];
    let refused = store.commit_batch(&stale).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::CheckpointMoved { .. }),
        "{refused:?}"
    );
    assert_eq!(
        store.state_get(SUB, "count").await.unwrap(),
        None,
        "the clear holds"
    );

    // A replay in flight while the operator skips its parked event cannot park it again.
    let mut park = BatchCommit::advance(
        SUB,
        cleared.revision,
        batch[0].checkpoint,
        batch[1].checkpoint,
    );
    park.park = Some(Park {
        event_id: batch[1].event.id,
        position: batch[1].event.position,
        error: "boom".into(),
        attempts: 5,
    });
    store.commit_batch(&park).await.unwrap();
    let replaying = cleared.revision + 1;
    store
        .skip_parked(ParkedSelection::AllOf(Some(SUB)))
        .await
        .unwrap();
    let mut repark = BatchCommit::advance(SUB, replaying, batch[1].checkpoint, batch[1].checkpoint);
    repark.park = park.park.clone();
    let refused = store.commit_batch(&repark).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::CheckpointMoved { .. }),
        "{refused:?}"
    );
    assert!(
        store.parked(Some(SUB)).await.unwrap().is_empty(),
        "the skip holds"
    );
}

/// A reset drops the parked events the subscription will handle again (a replay would apply
/// them twice), and with its state all of them.
async fn a_reset_drops_the_parked_events_it_hands_back<S: EventStore + SubscriptionStore>(
    store: &S,
) {
    seed(store, 3).await;
    let started = store
        .ensure_subscription(SUB, "projection", &orders(), Checkpoint::ORIGIN)
        .await
        .unwrap();
    let batch = next_batch(store, Checkpoint::ORIGIN, &orders(), 3).await;
    let mut revision = started.revision;
    let mut from = Checkpoint::ORIGIN;
    for entry in &batch {
        let mut park = BatchCommit::advance(SUB, revision, from, entry.checkpoint);
        park.park = Some(Park {
            event_id: entry.event.id,
            position: entry.event.position,
            error: "boom".into(),
            attempts: 5,
        });
        store.commit_batch(&park).await.unwrap();
        (revision, from) = (revision + 1, entry.checkpoint);
    }
    store
        .reset(SUB, batch[0].event.position, false)
        .await
        .unwrap();
    let kept: Vec<_> = store
        .parked(Some(SUB))
        .await
        .unwrap()
        .into_iter()
        .map(|parked| parked.event_id)
        .collect();
    assert_eq!(
        kept,
        [batch[0].event.id],
        "events after the new checkpoint come again"
    );
    store
        .reset(SUB, batch[2].event.position, true)
        .await
        .unwrap();
    assert!(store.parked(Some(SUB)).await.unwrap().is_empty());
}

conformance!(
    a_batch_commits_its_effects_and_checkpoint_together,
    a_batch_read_from_a_stale_checkpoint_commits_nothing,
    a_conflicting_emit_fails_the_whole_batch,
    a_batch_emits_to_many_streams_in_order,
    parked_events_can_be_listed_replayed_and_skipped,
    reset_moves_the_checkpoint_and_can_clear_state,
    state_scans_by_exact_prefix_in_key_order,
    an_operator_request_fails_the_batch_in_flight,
    a_reset_drops_the_parked_events_it_hands_back,
);
