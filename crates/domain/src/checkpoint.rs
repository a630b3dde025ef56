//! Where a subscription is in the store's subscription order.
//!
//! Opaque to users: its text form (`<tx>:<position>`) is only for storage and display. On
//! PostgreSQL `tx` is the event's ordering transaction id (see migrations/postgres); on
//! SQLite it is always 0, as commit order equals position order there.

use std::fmt;
use std::str::FromStr;

/// A point in the subscription order: everything up to and including it has been read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Checkpoint {
    tx: u64,
    position: u64,
}

impl Checkpoint {
    /// Before the first event.
    pub const ORIGIN: Checkpoint = Checkpoint { tx: 0, position: 0 };

    /// A checkpoint from its parts, as a store reads them back.
    pub fn new(tx: u64, position: u64) -> Self {
        Self { tx, position }
    }

    /// The global position of the last event read.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The ordering transaction of the last event read (0 on SQLite).
    pub fn tx(&self) -> u64 {
        self.tx
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.tx, self.position)
    }
}

/// A checkpoint's text could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid checkpoint {0:?}: expected <tx>:<position>")]
pub struct InvalidCheckpoint(String);

impl FromStr for Checkpoint {
    type Err = InvalidCheckpoint;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidCheckpoint(text.to_owned());
        let (tx, position) = text.split_once(':').ok_or_else(invalid)?;
        Ok(Self {
            tx: tx.parse().map_err(|_| invalid())?,
            position: position.parse().map_err(|_| invalid())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_orders_by_tx_first() {
        let checkpoint = Checkpoint::new(7, 42);
        assert_eq!(
            checkpoint.to_string().parse::<Checkpoint>().unwrap(),
            checkpoint
        );
        assert!(Checkpoint::new(8, 1) > Checkpoint::new(7, 42));
        assert!("7".parse::<Checkpoint>().is_err());
        assert!("a:1".parse::<Checkpoint>().is_err());
    }
}
