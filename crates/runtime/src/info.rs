//! What a plugin says it is (`describe`), as domain types, and the checks it must pass.
//!
//! Names are lowercase letters, digits, `-` and `_` because they become parts of durable
//! subscription names (`<plugin>.<subscription>`) and of file and log fields.

use serde::Serialize;

use super::bindings::wit;
use eventhost_domain::Event;
use eventhost_domain::name::name_problem;

/// A plugin's name, version and subscriptions, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub subscriptions: Vec<SubscriptionSpec>,
}

/// A subscription a plugin asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionSpec {
    pub name: String,
    /// Only events of these aggregate types (empty: all).
    pub aggregate_types: Vec<String>,
    /// Only events of these event types (empty: all).
    pub event_types: Vec<String>,
    /// The most events in one `handle` call, 1..=10000.
    pub batch_size: u32,
    pub start_from: StartFrom,
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    Beginning,
    Now,
}

/// The largest batch a plugin may ask for.
pub const MAX_BATCH_SIZE: u32 = 10_000;

/// The longest version string, in bytes.
pub const MAX_VERSION_BYTES: usize = 64;

/// The most subscriptions one plugin may describe, and the most aggregate or event types in
/// one subscription's filter.
pub const MAX_SUBSCRIPTIONS: usize = 100;
pub const MAX_FILTER_NAMES: usize = 100;

impl PluginInfo {
    /// The subscription called `name`, if the plugin has one.
    pub fn subscription(&self, name: &str) -> Option<&SubscriptionSpec> {
        self.subscriptions
            .iter()
            .find(|subscription| subscription.name == name)
    }

    /// Checks what `describe` returned; the error lists every problem found.
    pub(crate) fn from_wit(info: wit::PluginInfo) -> Result<Self, String> {
        Self {
            name: info.name,
            version: info.version,
            subscriptions: info
                .subscriptions
                .into_iter()
                .map(SubscriptionSpec::from)
                .collect(),
        }
        .validated()
    }

    /// The description, if it passes the checks a plugin's `describe` must pass (names,
    /// filters, batch sizes); else every problem found. For handlers the daemon builds itself.
    pub fn validated(self) -> Result<Self, String> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(problems.join("; "))
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(problem) = name_problem("plugin name", &self.name) {
            problems.push(problem);
        }
        if self.version.len() > MAX_VERSION_BYTES || self.version.chars().any(char::is_control) {
            problems.push(format!(
                "the version is {} bytes or holds control characters: at most {MAX_VERSION_BYTES} printable bytes",
                self.version.len()
            ));
        }
        if self.subscriptions.is_empty() {
            problems
                .push("the plugin asks for no subscription (at least one is required)".to_owned());
        }
        if self.subscriptions.len() > MAX_SUBSCRIPTIONS {
            problems.push(format!(
                "the plugin asks for {} subscriptions, over the cap of {MAX_SUBSCRIPTIONS}",
                self.subscriptions.len()
            ));
            return problems;
        }
        for (index, subscription) in self.subscriptions.iter().enumerate() {
            problems.extend(subscription.problems());
            if self.subscriptions[..index]
                .iter()
                .any(|earlier| earlier.name == subscription.name)
            {
                problems.push(format!(
                    "subscription name `{}` is used twice",
                    subscription.name
                ));
            }
        }
        problems
    }
}

impl SubscriptionSpec {
    /// Whether `event` passes this subscription's filters.
    pub fn matches(&self, event: &Event) -> bool {
        let type_ok =
            self.aggregate_types.is_empty() || self.aggregate_types.contains(&event.aggregate_type);
        let event_ok = self.event_types.is_empty() || self.event_types.contains(&event.event_type);
        type_ok && event_ok
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(problem) = name_problem("subscription name", &self.name) {
            problems.push(problem);
        }
        let names = self.aggregate_types.len() + self.event_types.len();
        let longest = self
            .aggregate_types
            .iter()
            .chain(&self.event_types)
            .map(String::len)
            .max()
            .unwrap_or(0);
        if names > MAX_FILTER_NAMES
            || longest > eventhost_domain::StoreLimits::default().max_name_bytes
        {
            problems.push(format!(
                "subscription `{}` filters on {names} names (at most {MAX_FILTER_NAMES}), the longest {longest} bytes (at most {})",
                self.name,
                eventhost_domain::StoreLimits::default().max_name_bytes
            ));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            problems.push(format!(
                "subscription `{}` asks for batch-size {}, outside 1..={MAX_BATCH_SIZE}",
                self.name, self.batch_size
            ));
        }
        problems
    }
}

impl From<wit::Subscription> for SubscriptionSpec {
    fn from(subscription: wit::Subscription) -> Self {
        Self {
            name: subscription.name,
            aggregate_types: subscription.aggregate_types,
            event_types: subscription.event_types,
            batch_size: subscription.batch_size,
            start_from: match subscription.start_from {
                wit::StartFrom::Beginning => StartFrom::Beginning,
                wit::StartFrom::Now => StartFrom::Now,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(name: &str, batch_size: u32) -> wit::Subscription {
        wit::Subscription {
            name: name.to_owned(),
            aggregate_types: vec![],
            event_types: vec![],
            batch_size,
            start_from: wit::StartFrom::Beginning,
        }
    }

    fn info(name: &str, subscriptions: Vec<wit::Subscription>) -> wit::PluginInfo {
        wit::PluginInfo {
            name: name.to_owned(),
            version: "1.0.0".to_owned(),
            subscriptions,
        }
    }

    #[test]
    fn a_well_formed_description_is_accepted() {
        let accepted =
            PluginInfo::from_wit(info("order-totals", vec![subscription("totals", 100)]));
        assert_eq!(accepted.map(|info| info.subscriptions.len()), Ok(1));
    }

    #[test]
    fn a_description_past_its_caps_is_refused() {
        let mut long_version = info("p", vec![subscription("s", 1)]);
        long_version.version = "1".repeat(30 * 1024 * 1024);
        let error = PluginInfo::from_wit(long_version).unwrap_err();
        assert!(
            error.contains("the version is") && error.len() < 200,
            "{}",
            &error[..200.min(error.len())]
        );
        let many = (0..=MAX_SUBSCRIPTIONS)
            .map(|index| subscription(&format!("s{index}"), 1))
            .collect();
        let error = PluginInfo::from_wit(info("p", many)).unwrap_err();
        assert!(error.contains("over the cap of 100"), "{error}");
        let error =
            PluginInfo::from_wit(info(&"p".repeat(65), vec![subscription("s", 1)])).unwrap_err();
        assert!(error.contains("65 bytes"), "{error}");
    }

    #[test]
    fn every_problem_of_a_description_is_named() {
        let error = PluginInfo::from_wit(info(
            "Orders!",
            vec![
                subscription("a", 0),
                subscription("a", 10_001),
                subscription("B c", 1),
            ],
        ))
        .unwrap_err();
        for expected in [
            "plugin name `Orders!`",
            "batch-size 0",
            "batch-size 10001",
            "`a` is used twice",
            "`B c`",
        ] {
            assert!(
                error.contains(expected),
                "{expected:?} missing from {error:?}"
            );
        }
    }

    #[test]
    fn a_plugin_without_subscriptions_is_refused() {
        let error = PluginInfo::from_wit(info("empty", vec![])).unwrap_err();
        assert!(error.contains("no subscription"), "{error}");
    }
}
