//! The stores against a model: random sequences of appends (streams, expected versions,
//! fresh and repeated event ids) run on PostgreSQL and on SQLite give what a few lines of
//! in-memory bookkeeping say they must: each append's outcome (written with its versions, a
//! duplicate returning the stored versions, a version conflict, a partial duplicate, a
//! repeated id), each stream's version, and the log's order. Proptest shrinks a failing
//! sequence to a smallest one and records it under `proptest-regressions/`, which is run
//! first on every later run.
//!
//! The model is written from the rules as documented (docs/operator.md, the HTTP API's
//! appends), not from the domain crate's code, so that the two can disagree.

mod support;

use std::collections::HashMap;

use eventhost_domain::{ExpectedVersion, NewEvent, StreamId, Version};
use eventhost_store::{EventStore, Store, StoreError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use uuid::Uuid;

/// Sequences per store, each of up to [`MAX_APPENDS`] appends.
const CASES: u32 = 128;
const MAX_APPENDS: usize = 24;
const STREAMS: usize = 3;
/// Ids an append may repeat: the first few used in its sequence.
const REUSABLE_IDS: usize = 6;

#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    NoStream,
    Exact(Version),
}

#[derive(Debug, Clone, Copy)]
enum IdChoice {
    Fresh,
    /// The n-th id used so far in the sequence (modulo how many there are).
    Reuse(usize),
}

#[derive(Debug, Clone)]
struct Op {
    stream: usize,
    expect: Expect,
    ids: Vec<IdChoice>,
}

fn op() -> impl Strategy<Value = Op> {
    let expect = prop_oneof![
        Just(Expect::Any),
        Just(Expect::NoStream),
        (0u64..5).prop_map(Expect::Exact),
    ];
    let id = prop_oneof![
        3 => Just(IdChoice::Fresh),
        1 => (0..REUSABLE_IDS).prop_map(IdChoice::Reuse),
    ];
    (0..STREAMS, expect, prop::collection::vec(id, 1..4)).prop_map(|(stream, expect, ids)| Op {
        stream,
        expect,
        ids,
    })
}

/// What an append came to, in terms both the model and a store can give.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Written, at these versions.
    Written(Vec<Version>),
    /// Every id was stored already, in this stream: their versions.
    Duplicate(Vec<Version>),
    Conflict {
        actual: Version,
    },
    PartialDuplicate {
        found: usize,
    },
    /// An id given twice in one append.
    Invalid,
}

/// The rules, as documented: an id given twice in one append is refused; an append whose
/// ids were all stored already, in this stream, is a harmless duplicate (whatever the
/// expected version; the stored versions come back); some ids stored, or stored in another
/// stream, is a partial duplicate; then the expected version must hold; then the events
/// are written, versions counting on from the stream's.
#[derive(Default)]
struct Model {
    versions: HashMap<usize, Version>,
    /// Each stored id: its stream and version.
    ids: HashMap<Uuid, (usize, Version)>,
    /// The ids in the order they were written.
    log: Vec<Uuid>,
}

impl Model {
    fn append(&mut self, stream: usize, expect: Expect, ids: &[Uuid]) -> Outcome {
        let mut seen = std::collections::HashSet::new();
        if !ids.iter().all(|id| seen.insert(*id)) {
            return Outcome::Invalid;
        }
        let stored: Vec<(usize, Version)> = ids
            .iter()
            .filter_map(|id| self.ids.get(id).copied())
            .collect();
        if !stored.is_empty() {
            let all_here = stored.len() == ids.len() && stored.iter().all(|(s, _)| *s == stream);
            if !all_here {
                return Outcome::PartialDuplicate {
                    found: stored.len(),
                };
            }
            let mut versions: Vec<Version> = stored.iter().map(|(_, v)| *v).collect();
            versions.sort_unstable();
            return Outcome::Duplicate(versions);
        }
        let actual = self.versions.get(&stream).copied().unwrap_or(0);
        let holds = match expect {
            Expect::Any => true,
            Expect::NoStream => actual == 0,
            Expect::Exact(version) => actual == version,
        };
        if !holds {
            return Outcome::Conflict { actual };
        }
        let versions: Vec<Version> = (actual + 1..=actual + ids.len() as u64).collect();
        for (id, version) in ids.iter().zip(&versions) {
            self.ids.insert(*id, (stream, *version));
            self.log.push(*id);
        }
        self.versions.insert(stream, actual + ids.len() as u64);
        Outcome::Written(versions)
    }
}

fn outcome_of(result: Result<eventhost_domain::Appended, StoreError>) -> Outcome {
    match result {
        Ok(appended) => {
            let versions = appended.events.iter().map(|event| event.version).collect();
            if appended.duplicate {
                Outcome::Duplicate(versions)
            } else {
                Outcome::Written(versions)
            }
        }
        Err(StoreError::Conflict { actual, .. }) => Outcome::Conflict { actual },
        Err(StoreError::PartialDuplicate { found, .. }) => Outcome::PartialDuplicate { found },
        Err(StoreError::Invalid(_)) => Outcome::Invalid,
        Err(other) => panic!("an append failed: {other}"),
    }
}

/// Runs one sequence on `store` (in streams of its own, `case`) and on the model.
async fn check(store: &Store, case: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let stream_id = |stream: usize| StreamId::new(format!("case{case}"), format!("s-{stream}"));
    // Where this sequence's events begin: after the head of the log.
    let start = store
        .pulse()
        .await
        .map_err(|error| TestCaseError::fail(error.to_string()))?
        .head
        .position();
    let mut model = Model::default();
    let mut used: Vec<Uuid> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        let ids: Vec<Uuid> = op
            .ids
            .iter()
            .map(|choice| match (choice, used.len()) {
                (IdChoice::Reuse(n), len) if len > 0 => used[n % len.min(REUSABLE_IDS)],
                _ => {
                    let id = Uuid::new_v4();
                    used.push(id);
                    id
                }
            })
            .collect();
        let events: Vec<NewEvent> = ids
            .iter()
            .map(|id| NewEvent {
                id: Some(*id),
                ..NewEvent::new("thing.happened", json!({ "op": index }))
            })
            .collect();
        let expected = match op.expect {
            Expect::Any => ExpectedVersion::Any,
            Expect::NoStream => ExpectedVersion::NoStream,
            Expect::Exact(version) => ExpectedVersion::Exact(version),
        };
        let want = model.append(op.stream, op.expect, &ids);
        let got = outcome_of(store.append(&stream_id(op.stream), expected, &events).await);
        prop_assert_eq!(&got, &want, "append {} of {:?}", index, ops);
    }
    for stream in 0..STREAMS {
        let version = store
            .stream_version(&stream_id(stream))
            .await
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(version, model.versions.get(&stream).copied().unwrap_or(0));
    }
    let logged: Vec<Uuid> = store
        .read_positions(None, start, 100_000)
        .await
        .map_err(|error| TestCaseError::fail(error.to_string()))?
        .iter()
        .map(|event| event.id)
        .collect();
    prop_assert_eq!(logged, model.log, "the log's order");
    Ok(())
}

fn run_against(store: Store, runtime: &tokio::runtime::Runtime) {
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..Config::default()
    });
    // Every run, shrinking's included, appends to streams of its own.
    let case = std::cell::Cell::new(0);
    let result = runner.run(&prop::collection::vec(op(), 1..MAX_APPENDS), |ops| {
        case.set(case.get() + 1);
        runtime.block_on(check(&store, case.get(), &ops))
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

#[test]
fn postgres_appends_agree_with_the_model() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let db = runtime.block_on(support::PgDatabase::create());
    let store = runtime
        .block_on(eventhost_store::connect(&db.url))
        .expect("connect");
    run_against(store, &runtime);
}

#[test]
fn sqlite_appends_agree_with_the_model() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let file = support::SqliteFile::create();
    let store = runtime
        .block_on(eventhost_store::connect(&file.url))
        .expect("connect");
    run_against(store, &runtime);
}
