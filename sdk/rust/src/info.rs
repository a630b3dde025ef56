//! Builders for what a plugin declares in `describe`: [`PluginInfo`] and its [`Subscription`]s.
//!
//! The defaults are the ones a projection usually wants: no filter, batches of
//! [`Subscription::DEFAULT_BATCH_SIZE`] events, starting from the beginning of the store.
//! The host validates names and sizes when it loads the plugin.

use crate::{PluginInfo, StartFrom, Subscription};

impl PluginInfo {
    /// A plugin called `name` (lowercase letters, digits, `-` and `_`) at `version`, with no
    /// subscription yet: add at least one with [`PluginInfo::subscription`].
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            subscriptions: Vec::new(),
        }
    }

    /// Adds a subscription.
    pub fn subscription(mut self, subscription: Subscription) -> Self {
        self.subscriptions.push(subscription);
        self
    }
}

impl Subscription {
    /// The batch size of a subscription that does not set one.
    pub const DEFAULT_BATCH_SIZE: u32 = 100;

    /// A subscription called `name`, unique within the plugin, matching every event.
    pub fn new(name: impl Into<String>) -> Self {
        Subscription {
            name: name.into(),
            aggregate_types: Vec::new(),
            event_types: Vec::new(),
            batch_size: Self::DEFAULT_BATCH_SIZE,
            start_from: StartFrom::Beginning,
        }
    }

    /// Only events of these aggregate types (replaces any earlier list).
    pub fn aggregate_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.aggregate_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Only events of these event types (replaces any earlier list).
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// At most `batch_size` events per `handle` call (1..=10000; the operator may lower it).
    pub fn batch_size(mut self, batch_size: u32) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Where the subscription starts the first time it is created.
    pub fn start_from(mut self, start_from: StartFrom) -> Self {
        self.start_from = start_from;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_defaults_match_every_event_from_the_beginning() {
        let info = PluginInfo::new("p", "1.0.0").subscription(Subscription::new("all"));
        let subscription = &info.subscriptions[0];
        assert!(subscription.aggregate_types.is_empty() && subscription.event_types.is_empty());
        assert_eq!(subscription.batch_size, Subscription::DEFAULT_BATCH_SIZE);
        assert_eq!(subscription.start_from, StartFrom::Beginning);
    }

    #[test]
    fn builder_sets_filters_size_and_start() {
        let subscription = Subscription::new("totals")
            .aggregate_types(["order"])
            .event_types(vec![String::from("order.paid")])
            .batch_size(10)
            .start_from(StartFrom::Now);
        assert_eq!(subscription.aggregate_types, ["order"]);
        assert_eq!(subscription.event_types, ["order.paid"]);
        assert_eq!(subscription.batch_size, 10);
        assert_eq!(subscription.start_from, StartFrom::Now);
    }
}
