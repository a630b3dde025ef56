//! The store's guarantees, checked identically against PostgreSQL and SQLite.

#[macro_use]
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use eventhost_domain::{ExpectedVersion, NewEvent, StreamId, StreamRead};
use eventhost_store::{BatchLimit, Checkpoint, EventStore, Filter, StoreError};
use serde_json::json;
use uuid::Uuid;

fn order(id: &str) -> StreamId {
    StreamId::new("order", id)
}

fn event(event_type: &str, n: i64) -> NewEvent {
    NewEvent::new(event_type, json!({ "n": n }))
}

async fn versions_are_assigned_from_one_in_order(store: &impl EventStore) {
    let first = store
        .append(
            &order("o-1"),
            ExpectedVersion::NoStream,
            &[event("a", 1), event("b", 2)],
        )
        .await
        .unwrap();
    assert_eq!(
        first.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(first.events[0].position < first.events[1].position);
    let second = store
        .append(&order("o-1"), ExpectedVersion::Exact(2), &[event("c", 3)])
        .await
        .unwrap();
    assert_eq!(second.last_version(), 3);
    assert_eq!(store.stream_version(&order("o-1")).await.unwrap(), 3);
    assert_eq!(store.stream_version(&order("missing")).await.unwrap(), 0);
    let read = store.read_stream(&order("o-1"), 1, 10).await.unwrap();
    let types: Vec<_> = read.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["a", "b", "c"]);
}

async fn a_wrong_expected_version_is_a_conflict_naming_both_versions(store: &impl EventStore) {
    store
        .append(&order("o-2"), ExpectedVersion::Any, &[event("a", 1)])
        .await
        .unwrap();
    let error = store
        .append(&order("o-2"), ExpectedVersion::Exact(5), &[event("b", 2)])
        .await
        .unwrap_err();
    match &error {
        StoreError::Conflict {
            expected,
            actual,
            stream,
        } => {
            assert_eq!(*expected, ExpectedVersion::Exact(5));
            assert_eq!(*actual, 1);
            assert_eq!(*stream, order("o-2"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(
        error.to_string().contains("expected 5, actual 1"),
        "{error}"
    );
    let no_stream = store
        .append(&order("o-2"), ExpectedVersion::NoStream, &[event("b", 2)])
        .await
        .unwrap_err();
    assert!(
        matches!(no_stream, StoreError::Conflict { actual: 1, .. }),
        "{no_stream:?}"
    );
    assert_eq!(
        store.stream_version(&order("o-2")).await.unwrap(),
        1,
        "nothing written"
    );
}

async fn an_append_is_all_or_nothing(store: &impl EventStore) {
    let mut bad = event("", 2);
    bad.event_type.clear();
    let error = store
        .append(&order("o-3"), ExpectedVersion::Any, &[event("a", 1), bad])
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Invalid(_)), "{error:?}");
    let huge = NewEvent::new("big", json!("x".repeat(1024 * 1024 + 1)));
    let error = store
        .append(&order("o-3"), ExpectedVersion::Any, &[event("a", 1), huge])
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::PayloadTooLarge { index: 1, .. }),
        "{error:?}"
    );
    assert!(
        store
            .read_stream(&order("o-3"), 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.read_positions(None, 0, 10).await.unwrap().is_empty());
}

async fn reappending_the_same_ids_is_idempotent(store: &impl EventStore) {
    let ids = [Uuid::now_v7(), Uuid::now_v7()];
    let events: Vec<NewEvent> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| NewEvent {
            id: Some(*id),
            ..event("a", n as i64)
        })
        .collect();
    let first = store
        .append(&order("o-4"), ExpectedVersion::NoStream, &events)
        .await
        .unwrap();
    assert!(!first.duplicate);
    // The retry carries the same stale expected version: it must still be reported a duplicate.
    let again = store
        .append(&order("o-4"), ExpectedVersion::NoStream, &events)
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.events, first.events);
    assert_eq!(
        store.read_stream(&order("o-4"), 1, 10).await.unwrap().len(),
        2
    );

    let mixed = [events[0].clone(), event("fresh", 9)];
    let error = store
        .append(&order("o-4"), ExpectedVersion::Any, &mixed)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::PartialDuplicate { found: 1, total: 2 }),
        "{error:?}"
    );
    let elsewhere = store
        .append(&order("o-other"), ExpectedVersion::Any, &events)
        .await
        .unwrap_err();
    assert!(
        matches!(elsewhere, StoreError::PartialDuplicate { .. }),
        "{elsewhere:?}"
    );
    assert_eq!(store.stream_version(&order("o-4")).await.unwrap(), 2);
}

async fn payload_and_metadata_round_trip(store: &impl EventStore) {
    let payload = json!({"name": "Zoë ✓", "nested": {"list": [1, 2.5, null, true]}, "q": "a'b\"c"});
    let mut new = NewEvent::new("order.created", payload.clone());
    new.metadata.insert("correlation-id".into(), "c-1".into());
    let id = Uuid::new_v4();
    new.id = Some(id);
    store
        .append(&order("o-5"), ExpectedVersion::Any, &[new])
        .await
        .unwrap();
    let read = store.read_stream(&order("o-5"), 1, 1).await.unwrap();
    assert_eq!(read[0].payload, payload);
    assert_eq!(read[0].metadata["correlation-id"], "c-1");
    assert_eq!(read[0].id, id);
    assert_eq!(read[0].stream(), order("o-5"));
    let age = chrono::Utc::now() - read[0].recorded_at;
    assert!(
        age.num_seconds().abs() < 60,
        "recorded_at is now-ish: {}",
        read[0].recorded_at
    );
}

async fn listings_page_in_position_order(store: &impl EventStore) {
    for n in 0..5 {
        store
            .append(
                &order(&format!("p-{n}")),
                ExpectedVersion::Any,
                &[event("a", n)],
            )
            .await
            .unwrap();
        store
            .append(
                &StreamId::new("invoice", format!("i-{n}")),
                ExpectedVersion::Any,
                &[event("b", n)],
            )
            .await
            .unwrap();
    }
    let first = store.read_positions(None, 0, 4).await.unwrap();
    assert_eq!(first.len(), 4);
    let rest = store
        .read_positions(None, first[3].position, 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 6);
    let all: Vec<_> = first.iter().chain(&rest).map(|e| e.position).collect();
    assert!(all.windows(2).all(|pair| pair[0] < pair[1]));
    let orders = store.read_positions(Some("order"), 0, 100).await.unwrap();
    assert_eq!(orders.len(), 5);
    assert!(orders.iter().all(|e| e.aggregate_type == "order"));
    let stream_tail = store.read_stream(&order("p-0"), 2, 10).await.unwrap();
    assert!(stream_tail.is_empty());
}

async fn batches_apply_filters_and_resume_after_their_checkpoint(store: &impl EventStore) {
    for n in 0..6 {
        let stream = if n % 2 == 0 {
            order(&format!("f-{n}"))
        } else {
            StreamId::new("invoice", format!("f-{n}"))
        };
        let event_type = if n % 3 == 0 { "x.created" } else { "x.updated" };
        store
            .append(&stream, ExpectedVersion::Any, &[event(event_type, n)])
            .await
            .unwrap();
    }
    read_everything(store, &Filter::default(), 4, 6).await;
    let by_type = Filter {
        aggregate_types: vec!["order".into()],
        ..Filter::default()
    };
    let orders = read_everything(store, &by_type, 2, 3).await;
    assert!(orders.iter().all(|e| e.aggregate_type == "order"));
    let by_event = Filter {
        event_types: vec!["x.created".into()],
        ..Filter::default()
    };
    read_everything(store, &by_event, 1, 2).await;
    let both = Filter {
        aggregate_types: vec!["invoice".into()],
        event_types: vec!["x.created".into()],
    };
    let hits = read_everything(store, &both, 10, 1).await;
    assert_eq!(hits[0].payload.value().unwrap()["n"], 3);
    let several = Filter {
        aggregate_types: vec!["invoice".into(), "order".into()],
        ..Filter::default()
    };
    read_everything(store, &several, 5, 6).await;
    // Read name by name and merged: repeated names count once, and the merge keeps the
    // log's order across names, page after page.
    let repeated = Filter {
        aggregate_types: vec!["order".into(), "invoice".into(), "order".into()],
        event_types: vec!["x.updated".into(), "x.created".into(), "x.updated".into()],
    };
    let merged = read_everything(store, &repeated, 2, 6).await;
    let order: Vec<u64> = merged.iter().map(|event| event.position).collect();
    assert!(order.is_sorted(), "out of order: {order:?}");
    let absent = Filter {
        event_types: vec!["x.absent".into(), "x.created".into()],
        ..Filter::default()
    };
    read_everything(store, &absent, 1, 2).await;
}

async fn a_batch_ends_after_the_event_that_reaches_its_byte_bound(store: &impl EventStore) {
    let big = "x".repeat(1000);
    for n in 0..5 {
        let event = NewEvent::new("x.sized", json!({ "big": big, "n": n }));
        store
            .append(&order(&format!("b-{n}")), ExpectedVersion::Any, &[event])
            .await
            .unwrap();
    }
    // Each event's text is a little over 1000 bytes: the third reaches 2500.
    let limit = BatchLimit {
        events: 100,
        bytes: 2500,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let batch = store
            .read_batch(Checkpoint::ORIGIN, &Filter::default(), limit)
            .await
            .unwrap();
        if batch.len() >= 3 || Instant::now() > deadline {
            break batch;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(limit.reached(&first), "cut short by its bytes");
    let rest = store
        .read_batch(first[2].checkpoint, &Filter::default(), limit)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert!(!limit.reached(&rest), "the last two are all there is");
    let tiny = BatchLimit {
        events: 100,
        bytes: 1,
    };
    let one = store
        .read_batch(Checkpoint::ORIGIN, &Filter::default(), tiny)
        .await
        .unwrap();
    assert_eq!(one.len(), 1, "a batch always holds at least one event");
}

async fn head_is_after_every_readable_event(store: &impl EventStore) {
    assert_eq!(store.head().await.unwrap(), Checkpoint::ORIGIN);
    store
        .append(
            &order("h-1"),
            ExpectedVersion::Any,
            &[event("a", 1), event("b", 2)],
        )
        .await
        .unwrap();
    let readable = read_everything(store, &Filter::default(), 10, 2).await;
    let head = store.head().await.unwrap();
    assert_eq!(head.position(), readable[1].position);
    assert!(
        store
            .read_batch(head, &Filter::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .append(&order("h-1"), ExpectedVersion::Any, &[event("c", 3)])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after_head = loop {
        let batch = store
            .read_batch(head, &Filter::default(), 10)
            .await
            .unwrap();
        if !batch.is_empty() || Instant::now() > deadline {
            break batch;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(after_head.len(), 1);
    assert_eq!(after_head[0].event.event_type, "c");
}

async fn racing_writers_with_the_same_expected_version_have_one_winner(
    store: &(impl EventStore + Clone + 'static),
) {
    store
        .append(&order("race"), ExpectedVersion::NoStream, &[event("a", 0)])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(&order("race"), ExpectedVersion::Exact(1), &[event("b", n)])
                .await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { actual: 2, .. }) => {}
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.stream_version(&order("race")).await.unwrap(), 2);
}

async fn streams_read_together_answer_each_read_in_order(store: &impl EventStore) {
    let events: Vec<NewEvent> = (1..=5).map(|n| event("e", n)).collect();
    store
        .append(&order("r-1"), ExpectedVersion::NoStream, &events)
        .await
        .unwrap();
    store
        .append(&order("r-2"), ExpectedVersion::NoStream, &events[..2])
        .await
        .unwrap();
    let read = |id: &str, from_version: u64, limit: usize| StreamRead {
        stream: order(id),
        from_version,
        limit,
    };
    let pages = store
        .read_streams(
            &[
                read("r-1", 2, 2),
                read("missing", 1, 10),
                read("r-2", 1, 10),
                read("r-1", 1, 0),
                read("r-1", 4, 100),
                read("r-2", 3, 10),
            ],
            usize::MAX,
        )
        .await
        .unwrap();
    let shapes: Vec<(u64, Vec<u64>)> = pages
        .iter()
        .map(|page| {
            let versions = page.events.iter().map(|e| e.version).collect();
            (page.version, versions)
        })
        .collect();
    assert_eq!(
        shapes,
        [
            (5, vec![2, 3]),
            (0, vec![]),
            (2, vec![1, 2]),
            (5, vec![]),
            (5, vec![4, 5]),
            (2, vec![]),
        ]
    );
    let single = store.read_stream(&order("r-1"), 2, 2).await.unwrap();
    assert_eq!(pages[0].events, single, "the same events as read-stream");
    assert!(pages[4].events.iter().all(|e| e.aggregate_id == "r-1"));
    assert!(
        store
            .read_streams(&[], usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    // Past its bytes, a read still gives every version, and events as a prefix.
    let cut = store
        .read_streams(&[read("r-1", 1, 10), read("r-2", 1, 10)], 1)
        .await
        .unwrap();
    let shapes: Vec<(u64, usize)> = cut
        .iter()
        .map(|page| (page.version, page.events.len()))
        .collect();
    assert_eq!(shapes, [(5, 1), (2, 0)]);
    assert_eq!(cut[0].events[0].version, 1);
}

/// Follows the subscription order from the origin until `expected` events have come,
/// checking that checkpoints only grow and no event comes twice, then that nothing more
/// comes. PostgreSQL makes an event readable only once every older transaction in the
/// cluster has ended (tests in other databases run concurrently), so an empty read is a
/// "not yet", not an end: poll, with a deadline.
async fn read_everything(
    store: &impl EventStore,
    filter: &Filter,
    page: usize,
    expected: usize,
) -> Vec<eventhost_domain::Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut checkpoint = Checkpoint::ORIGIN;
    let mut events = Vec::new();
    let mut seen = HashSet::new();
    while events.len() < expected {
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} events arrived",
            events.len()
        );
        let batch = store.read_batch(checkpoint, filter, page).await.unwrap();
        assert!(batch.len() <= page);
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for entry in &batch {
            assert!(entry.checkpoint > checkpoint, "checkpoints only grow");
            checkpoint = entry.checkpoint;
            assert!(seen.insert(entry.event.id), "event delivered twice");
            events.push(entry.event.clone());
        }
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let extra = store.read_batch(checkpoint, filter, page).await.unwrap();
    assert!(extra.is_empty(), "more events than expected: {extra:?}");
    events
}

conformance!(
    versions_are_assigned_from_one_in_order,
    a_wrong_expected_version_is_a_conflict_naming_both_versions,
    an_append_is_all_or_nothing,
    reappending_the_same_ids_is_idempotent,
    payload_and_metadata_round_trip,
    listings_page_in_position_order,
    batches_apply_filters_and_resume_after_their_checkpoint,
    a_batch_ends_after_the_event_that_reaches_its_byte_bound,
    head_is_after_every_readable_event,
    racing_writers_with_the_same_expected_version_have_one_winner,
    streams_read_together_answer_each_read_in_order,
);
