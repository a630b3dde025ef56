//! Relays: subscriptions with no plugin that forward every event they match to a sink, each
//! event's JSON the message and its id the idempotency key.
//!
//! A relay is a [`Handler`] like a plugin: its subscription (`relay.<name>`) has a checkpoint,
//! lag, progress and reset, and its messages commit with the checkpoint in the batch's
//! transaction, so an event is enqueued once and delivered at least once. The message's key is
//! the event's aggregate id (a stream's events reach the sink in order), and headers name the
//! event (`eventhost-aggregate-type`, `eventhost-aggregate-id`, `eventhost-event-type`), which
//! a sink's subject or URL template can use (`events.{aggregate_type}.{event_type}`).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use eventhost_domain::{Event, Message};
use eventhost_runtime::{Effects, HandleError, PluginInfo, Reads, StartFrom, SubscriptionSpec};

use crate::Handler;

/// The plugin name relays run under; a plugin file cannot take it.
pub const RELAY_PLUGIN: &str = "relay";

/// One relay as the configuration defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpec {
    /// Its subscription is `relay.<name>`.
    pub name: String,
    pub sink: String,
    /// Only events of these aggregate types (empty: all).
    pub aggregate_types: Vec<String>,
    /// Only events of these event types (empty: all).
    pub event_types: Vec<String>,
    pub start_from: StartFrom,
    pub batch_size: u32,
}

/// Every relay of the configuration, as one handler.
#[derive(Debug)]
pub struct Relays {
    info: PluginInfo,
    /// The sink of each relay, by subscription name.
    sinks: BTreeMap<String, String>,
}

impl Relays {
    /// The relays of `specs`, checked as a plugin's description is (names, filters, batch
    /// sizes); the error lists every problem.
    pub fn new(specs: &[RelaySpec]) -> Result<Self, String> {
        let info = PluginInfo {
            name: RELAY_PLUGIN.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            subscriptions: specs
                .iter()
                .map(|spec| SubscriptionSpec {
                    name: spec.name.clone(),
                    aggregate_types: spec.aggregate_types.clone(),
                    event_types: spec.event_types.clone(),
                    batch_size: spec.batch_size,
                    start_from: spec.start_from,
                })
                .collect(),
        }
        .validated()?;
        let sinks = specs
            .iter()
            .map(|spec| (spec.name.clone(), spec.sink.clone()))
            .collect();
        Ok(Self { info, sinks })
    }

    /// The message that forwards `event` to `sink`.
    fn message(sink: &str, event: &Event) -> Message {
        let body = serde_json::to_vec(event).unwrap_or_default();
        Message {
            id: event.id.hyphenated().to_string(),
            sink: sink.to_owned(),
            key: Some(event.aggregate_id.clone()),
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                (
                    "eventhost-aggregate-type".to_owned(),
                    event.aggregate_type.clone(),
                ),
                (
                    "eventhost-aggregate-id".to_owned(),
                    event.aggregate_id.clone(),
                ),
                ("eventhost-event-type".to_owned(), event.event_type.clone()),
            ],
            body,
        }
    }
}

impl Handler for Relays {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn sinks(&self) -> Vec<&str> {
        let mut sinks: Vec<&str> = self.sinks.values().map(String::as_str).collect();
        sinks.sort_unstable();
        sinks.dedup();
        sinks
    }

    fn handle<'a>(
        &'a self,
        subscription: &'a str,
        batch: &'a [Event],
        _reads: Arc<dyn Reads>,
    ) -> BoxFuture<'a, Result<Effects, HandleError>> {
        let outcome = match self.sinks.get(subscription) {
            Some(sink) => Ok(Effects {
                messages: batch
                    .iter()
                    .map(|event| Self::message(sink, event))
                    .collect(),
                ..Effects::default()
            }),
            None => Err(HandleError::UnknownSubscription(subscription.to_owned())),
        };
        async move { outcome }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> RelaySpec {
        RelaySpec {
            name: name.to_owned(),
            sink: "events".to_owned(),
            aggregate_types: vec!["order".to_owned()],
            event_types: Vec::new(),
            start_from: StartFrom::Beginning,
            batch_size: 100,
        }
    }

    #[test]
    fn relays_are_checked_as_a_plugin_description_is() {
        assert!(Relays::new(&[spec("orders")]).is_ok());
        let error = Relays::new(&[spec("Orders!"), spec("b"), spec("b")]).unwrap_err();
        assert!(error.contains("subscription name"), "{error}");
        assert!(error.contains("`b` is used twice"), "{error}");
    }

    #[tokio::test]
    async fn each_event_becomes_one_message_keyed_by_its_stream_under_its_own_id() {
        let relays = Relays::new(&[spec("orders")]).unwrap();
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": "0195f3a4-0000-7000-8000-000000000001", "position": 7,
            "aggregate_type": "order", "aggregate_id": "o-1", "version": 2,
            "event_type": "order.paid", "payload": {"amount_cents": 1500},
            "metadata": {}, "recorded_at": "2026-12-07T00:00:00Z"
        }))
        .unwrap();
        let reads: Arc<dyn Reads> = Arc::new(NoReads);
        let effects = relays
            .handle("orders", std::slice::from_ref(&event), reads)
            .await
            .unwrap();
        let [message] = effects.messages.as_slice() else {
            panic!("one message: {:?}", effects.messages)
        };
        assert_eq!(message.id, "0195f3a4-0000-7000-8000-000000000001");
        assert_eq!(
            (message.sink.as_str(), message.key.as_deref()),
            ("events", Some("o-1"))
        );
        assert!(
            message
                .headers
                .contains(&("eventhost-event-type".to_owned(), "order.paid".to_owned()))
        );
        let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(body["payload"]["amount_cents"], 1500);
        assert_eq!(body["version"], 2);
        assert!(effects.emitted.is_empty() && effects.state.is_empty());
    }

    struct NoReads;

    impl Reads for NoReads {
        fn state_get<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Option<String>, eventhost_runtime::ReadError>> {
            async { Ok(None) }.boxed()
        }

        fn state_scan<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Option<&'a str>,
            _: u32,
        ) -> BoxFuture<'a, Result<Vec<(String, String)>, eventhost_runtime::ReadError>> {
            async { Ok(Vec::new()) }.boxed()
        }

        fn stream_version<'a>(
            &'a self,
            _: &'a eventhost_domain::StreamId,
        ) -> BoxFuture<'a, Result<u64, eventhost_runtime::ReadError>> {
            async { Ok(0) }.boxed()
        }

        fn read_stream<'a>(
            &'a self,
            _: &'a eventhost_domain::StreamId,
            _: u64,
            _: u32,
        ) -> BoxFuture<'a, Result<Vec<Event>, eventhost_runtime::ReadError>> {
            async { Ok(Vec::new()) }.boxed()
        }
    }
}
