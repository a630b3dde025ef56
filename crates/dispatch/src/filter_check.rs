//! Filters that cannot silently miss: the names a subscription's filter asks for that no
//! stored event has, each with the stored names closest to it.
//!
//! A typo in a filter (`skus` for `sku`, `stock.sould`) is a valid filter: the subscription
//! runs, receives nothing and shows lag 0. The daemon checks each subscription's names when it
//! installs a plugin and says so in a warning, as `plugins check --database-url` does before a
//! deploy; one [`NameCheck`] per plugin asks the store once per distinct name.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use eventhost_store::{Filter, NameKind, Store, StoreError};

/// How many stored names of a kind are compared with a missing one.
const COMPARED: usize = 1000;

/// How many of the closest stored names a miss names.
const CLOSEST: usize = 3;

/// A name a filter asks for that no stored event has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    pub kind: NameKind,
    pub name: String,
    /// The stored names of the same kind closest to it, closest first (a likely fix).
    pub closest: Vec<String>,
}

impl std::fmt::Display for Unmatched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no stored event has {} `{}`", self.kind, self.name)?;
        if !self.closest.is_empty() {
            let closest: Vec<String> = self.closest.iter().map(|n| format!("`{n}`")).collect();
            write!(f, " (closest stored: {})", closest.join(", "))?;
        }
        Ok(())
    }
}

/// Checks filters against the stored names, remembering what it learned: the subscriptions
/// of one plugin often ask for the same names, and each distinct name then costs one query,
/// however many subscriptions ask for it.
pub struct NameCheck<'a> {
    store: &'a Store,
    /// Whether the store holds any event, once asked.
    empty: Option<bool>,
    /// Whether a stored event has the name, per name asked about.
    found: HashMap<(NameKind, String), bool>,
    /// Up to [`COMPARED`] stored names of a kind, once a name of that kind was missing.
    stored: HashMap<NameKind, Vec<String>>,
}

impl<'a> NameCheck<'a> {
    pub fn new(store: &'a Store) -> Self {
        Self {
            store,
            empty: None,
            found: HashMap::new(),
            stored: HashMap::new(),
        }
    }

    /// The names of `filter` that match no stored event, in the filter's order. None when
    /// the store holds no event yet: there is nothing to compare with.
    pub async fn unmatched(&mut self, filter: &Filter) -> Result<Vec<Unmatched>, StoreError> {
        let empty = match self.empty {
            Some(empty) => empty,
            None => {
                let names = self.store.stored_names(NameKind::AggregateType, 1).await?;
                *self.empty.insert(names.is_empty())
            }
        };
        if empty {
            return Ok(Vec::new());
        }
        let mut misses = Vec::new();
        for (kind, names) in [
            (NameKind::AggregateType, &filter.aggregate_types),
            (NameKind::EventType, &filter.event_types),
        ] {
            for name in names {
                if self.found(kind, name).await? {
                    continue;
                }
                let stored = match self.stored.entry(kind) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => {
                        entry.insert(self.store.stored_names(kind, COMPARED).await?)
                    }
                };
                misses.push(Unmatched {
                    kind,
                    name: name.clone(),
                    closest: closest(name, stored),
                });
            }
        }
        Ok(misses)
    }

    async fn found(&mut self, kind: NameKind, name: &str) -> Result<bool, StoreError> {
        let key = (kind, name.to_owned());
        if let Some(found) = self.found.get(&key) {
            return Ok(*found);
        }
        let found = self.store.has_name(kind, name).await?;
        self.found.insert(key, found);
        Ok(found)
    }
}

/// The stored names within a few edits of `name`, closest first.
fn closest(name: &str, stored: &[String]) -> Vec<String> {
    let within = (name.chars().count() / 3).max(2);
    let mut near: Vec<(usize, &String)> = stored
        .iter()
        .map(|candidate| (strsim::levenshtein(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= within)
        .collect();
    near.sort();
    near.into_iter()
        .take(CLOSEST)
        .map(|(_, candidate)| candidate.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn the_closest_names_are_a_few_edits_away_closest_first() {
        let stored: Vec<String> = ["order", "sku", "stock.sold", "stock.low", "sku-archive"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(closest("skus", &stored), ["sku"]);
        assert_eq!(closest("stock.sould", &stored), ["stock.sold"]);
        assert_eq!(closest("stock.sol", &stored), ["stock.sold", "stock.low"]);
        assert!(closest("invoice", &stored).is_empty());
    }
}
