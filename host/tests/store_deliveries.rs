//! The outbox's guarantees, checked identically against PostgreSQL and SQLite: a batch's
//! messages are enqueued with its commit, once, in order; every attempt is recorded; an
//! operator's retry and skip act only on the messages they apply to.

#[macro_use]
mod support;

use std::time::Duration;

use chrono::Utc;
use eventhost_domain::{ExpectedVersion, Message, NewEvent, StreamId};
use eventhost_store::{
    AttemptOutcome, BatchCommit, Checkpoint, DeliveryQuery, DeliverySelection, DeliveryStatus,
    DeliveryStore, EventStore, Filter, StoreError, SubscriptionStore,
};
use serde_json::json;

const SUB: &str = "notifier.paid";

fn message(id: &str, sink: &str, key: Option<&str>) -> Message {
    Message {
        id: id.to_owned(),
        sink: sink.to_owned(),
        key: key.map(str::to_owned),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: format!("{{\"id\":\"{id}\"}}").into_bytes(),
    }
}

/// A subscription over three events, and the checkpoint after each.
async fn subscription<S: EventStore + SubscriptionStore>(store: &S) -> Vec<Checkpoint> {
    for n in 0..3 {
        store
            .append(
                &StreamId::new("order", format!("o-{n}")),
                ExpectedVersion::Any,
                &[NewEvent::new("order.paid", json!({ "n": n }))],
            )
            .await
            .unwrap();
    }
    store
        .ensure_subscription(SUB, "notifier", &Filter::default(), Checkpoint::ORIGIN)
        .await
        .unwrap();
    let mut checkpoints = Vec::new();
    for _ in 0..200 {
        let batch = store
            .read_batch(Checkpoint::ORIGIN, &Filter::default(), 3)
            .await
            .unwrap();
        if batch.len() == 3 {
            checkpoints = batch.iter().map(|entry| entry.checkpoint).collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(checkpoints.len(), 3, "three events readable");
    checkpoints
}

fn ids(deliveries: &[eventhost_store::Delivery]) -> Vec<&str> {
    deliveries.iter().map(|d| d.message.id.as_str()).collect()
}

async fn a_committed_batch_enqueues_its_messages_once_and_a_refused_one_none<
    S: EventStore + SubscriptionStore + DeliveryStore,
>(
    store: &S,
) {
    let checkpoints = subscription(store).await;
    let mut commit = BatchCommit::advance(SUB, 0, Checkpoint::ORIGIN, checkpoints[1]);
    commit.messages = vec![
        message("notifier.paid:2:0", "hooks", Some("o-1")),
        message("notifier.paid:2:1", "events", None),
        message("notifier.paid:2:2", "hooks", Some("o-1")),
    ];
    store.commit_batch(&commit).await.unwrap();

    let pending = store
        .pending_deliveries("hooks", 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(ids(&pending), ["notifier.paid:2:0", "notifier.paid:2:2"]);
    assert_eq!(pending[0].message, commit.messages[0], "stored as asked");
    assert_eq!(pending[0].subscription, SUB);
    assert_eq!(
        (pending[0].status, pending[0].attempts),
        (DeliveryStatus::Pending, 0)
    );
    assert!(
        pending[0].id < pending[1].id,
        "enqueue order is the batch's"
    );
    let first = store.pending_deliveries("hooks", 100, 1).await.unwrap();
    assert_eq!(
        ids(&first),
        ["notifier.paid:2:0"],
        "a read ends at its byte bound"
    );
    assert_eq!(
        store
            .pending_deliveries("events", 100, usize::MAX)
            .await
            .unwrap()
            .len(),
        1
    );

    // The same batch committed again from its old checkpoint (a second daemon): refused
    // whole, its messages with it.
    let mut stale = BatchCommit::advance(SUB, 0, Checkpoint::ORIGIN, checkpoints[1]);
    stale.messages = vec![message("notifier.paid:2:9", "hooks", None)];
    let refused = store.commit_batch(&stale).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::CheckpointMoved { .. }),
        "{refused:?}"
    );
    // A replayed batch asking for a message its sink already holds does not enqueue it twice.
    let mut replayed = BatchCommit::advance(SUB, 1, checkpoints[1], checkpoints[2]);
    replayed.messages = vec![
        message("notifier.paid:2:0", "hooks", Some("o-1")),
        message("notifier.paid:3:0", "hooks", Some("o-2")),
    ];
    store.commit_batch(&replayed).await.unwrap();
    let pending = store
        .pending_deliveries("hooks", 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        ids(&pending),
        [
            "notifier.paid:2:0",
            "notifier.paid:2:2",
            "notifier.paid:3:0"
        ]
    );
}

async fn attempts_are_recorded_and_operators_retry_and_skip_what_they_apply_to<
    S: EventStore + SubscriptionStore + DeliveryStore,
>(
    store: &S,
) {
    let checkpoints = subscription(store).await;
    let mut commit = BatchCommit::advance(SUB, 0, Checkpoint::ORIGIN, checkpoints[0]);
    commit.messages = (0..4)
        .map(|n| message(&format!("notifier.paid:1:{n}"), "hooks", None))
        .collect();
    store.commit_batch(&commit).await.unwrap();
    let pending = store
        .pending_deliveries("hooks", 100, usize::MAX)
        .await
        .unwrap();
    let [a, b, c, d] = [0, 1, 2, 3].map(|n| pending[n].id);

    let later = Utc::now() + chrono::Duration::seconds(60);
    let retry = AttemptOutcome::Retry {
        error: "the receiver answered 503".to_owned(),
        at: later,
    };
    assert!(store.record_attempt(a, &retry).await.unwrap());
    assert_eq!(
        store.record_delivered(&[b, i64::MAX]).await.unwrap(),
        1,
        "a batch of successes, recorded for the rows that exist"
    );
    let dead = AttemptOutcome::Dead {
        error: "the receiver answered 400".to_owned(),
    };
    assert!(store.record_attempt(c, &dead).await.unwrap());

    let all = store
        .deliveries(&DeliveryQuery {
            limit: 100,
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&all).len(), 4);
    assert!(all[0].id > all[3].id, "newest first");
    let by_id = |id: i64| all.iter().find(|d| d.id == id).unwrap().clone();
    let retried = by_id(a);
    assert_eq!(
        (retried.status, retried.attempts),
        (DeliveryStatus::Pending, 1)
    );
    assert_eq!(
        retried.last_error.as_deref(),
        Some("the receiver answered 503")
    );
    assert!((retried.next_attempt_at - later).num_milliseconds().abs() < 1000);
    assert_eq!(by_id(b).status, DeliveryStatus::Delivered);
    assert!(by_id(b).finished_at.is_some());
    assert_eq!(by_id(c).status, DeliveryStatus::Dead);

    let dead_only = DeliveryQuery {
        status: Some(DeliveryStatus::Dead),
        sink: Some("hooks".to_owned()),
        limit: 100,
    };
    assert_eq!(
        ids(&store.deliveries(&dead_only).await.unwrap()),
        ["notifier.paid:1:2"]
    );
    let other_sink = DeliveryQuery {
        sink: Some("events".to_owned()),
        limit: 100,
        ..DeliveryQuery::default()
    };
    assert!(store.deliveries(&other_sink).await.unwrap().is_empty());

    // Retry applies to dead (and skipped) messages only; skip to pending and dead ones.
    assert_eq!(
        store
            .retry_deliveries(DeliverySelection::One(b))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .retry_deliveries(DeliverySelection::One(c))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .skip_deliveries(DeliverySelection::One(d))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .skip_deliveries(DeliverySelection::One(b))
            .await
            .unwrap(),
        0
    );
    assert!(
        !store
            .record_attempt(d, &AttemptOutcome::Delivered)
            .await
            .unwrap(),
        "a skipped message stays skipped"
    );
    let pending = store
        .pending_deliveries("hooks", 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(ids(&pending), ["notifier.paid:1:0", "notifier.paid:1:2"]);
    assert_eq!(
        pending[1].attempts, 0,
        "a retried message counts its attempts anew"
    );
    let all_of_sink = DeliverySelection::All {
        sink: Some("hooks"),
    };
    assert_eq!(
        store.retry_deliveries(all_of_sink).await.unwrap(),
        1,
        "the skipped one"
    );

    // Pruning removes delivered messages older than the bound, nothing else.
    assert_eq!(
        store
            .prune_deliveries(Utc::now() - chrono::Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .prune_deliveries(Utc::now() + chrono::Duration::seconds(5))
            .await
            .unwrap(),
        1
    );
    let left = store
        .deliveries(&DeliveryQuery {
            limit: 100,
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 3);
}

conformance!(
    a_committed_batch_enqueues_its_messages_once_and_a_refused_one_none,
    attempts_are_recorded_and_operators_retry_and_skip_what_they_apply_to,
);
