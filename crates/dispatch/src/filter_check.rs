//! Filters that cannot silently miss: the names a subscription's filter asks for that no
//! stored event has, each with the stored names closest to it.
//!
//! A typo in a filter (`skus` for `sku`, `stock.sould`) is a valid filter: the subscription
//! runs, receives nothing and shows lag 0. The daemon checks each subscription's names when it
//! installs a plugin and says so in a warning, as `plugins check --database-url` does before a
//! deploy.

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

/// The names of `filter` that match no stored event, in the filter's order. None when the
/// store holds no event yet: there is nothing to compare with.
pub async fn unmatched(store: &Store, filter: &Filter) -> Result<Vec<Unmatched>, StoreError> {
    if store
        .stored_names(NameKind::AggregateType, 1)
        .await?
        .is_empty()
    {
        return Ok(Vec::new());
    }
    let mut misses = Vec::new();
    for (kind, names) in [
        (NameKind::AggregateType, &filter.aggregate_types),
        (NameKind::EventType, &filter.event_types),
    ] {
        let mut stored = None;
        for name in names {
            if store.has_name(kind, name).await? {
                continue;
            }
            let stored = match &mut stored {
                Some(stored) => stored,
                None => stored.insert(store.stored_names(kind, COMPARED).await?),
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
