//! Which events a subscription receives, by aggregate type and event type.

use crate::event::Event;

/// Which events a subscription receives. Empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub aggregate_types: Vec<String>,
    pub event_types: Vec<String>,
}

impl Filter {
    /// The same filter with each list sorted and without repeats: two filters that match the
    /// same events compare equal in this form.
    pub fn canonical(mut self) -> Self {
        for list in [&mut self.aggregate_types, &mut self.event_types] {
            list.sort();
            list.dedup();
        }
        self
    }

    pub fn matches(&self, event: &Event) -> bool {
        (self.aggregate_types.is_empty() || self.aggregate_types.contains(&event.aggregate_type))
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
    }
}

#[cfg(test)]
mod tests {
    use super::Filter;

    fn filter(aggregate_types: &[&str], event_types: &[&str]) -> Filter {
        let owned = |list: &[&str]| list.iter().map(|item| (*item).to_owned()).collect();
        Filter {
            aggregate_types: owned(aggregate_types),
            event_types: owned(event_types),
        }
    }

    #[test]
    fn filters_matching_the_same_events_are_equal_in_canonical_form() {
        assert_eq!(
            filter(&["order", "cart", "order"], &["b", "a"]).canonical(),
            filter(&["cart", "order"], &["a", "b"]).canonical()
        );
        assert_ne!(
            filter(&["order"], &[]).canonical(),
            filter(&["order", "cart"], &[]).canonical()
        );
    }
}
