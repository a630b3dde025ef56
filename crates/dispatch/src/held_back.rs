//! Why subscriptions wait, told once: on PostgreSQL an event is readable only once every
//! transaction that began before it committed has ended (the store's ordering rule), so one
//! transaction left open, in any database of the cluster, holds back every event committed
//! after it began, for every subscription. Nothing is lost, but to an operator it looks like
//! a hang. Once events have been held back for the warning's delay, the daemon names the
//! transaction that holds them (the oldest writer of the cluster), once per holder, and says
//! when they are readable again and how long it lasted.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use eventhost_store::{Store, Writer};

/// A holder, as far as telling one from the next goes.
type HolderKey = (String, Option<i32>, Option<String>);

fn key(writer: &Writer) -> HolderKey {
    (writer.kind.clone(), writer.pid, writer.application.clone())
}

pub(crate) struct HeldBack {
    warn_after: Duration,
    /// Since when events have been seen held back, without a look that found none.
    since: Option<Instant>,
    /// The holder last warned about in this stall.
    warned: Option<HolderKey>,
}

impl HeldBack {
    pub(crate) fn new(warn_after: Duration) -> Self {
        Self {
            warn_after,
            since: None,
            warned: None,
        }
    }

    /// One look (one query; two while a stall lasts past the delay).
    pub(crate) async fn check(&mut self, store: &Store) {
        let held = match store.held_back(1).await {
            Ok(held) => held > 0,
            Err(error) => {
                debug!(%error, "cannot look for events held back");
                return;
            }
        };
        if !held {
            if let Some(since) = self.since.take()
                && self.warned.take().is_some()
            {
                info!(
                    lasted_seconds = since.elapsed().as_secs(),
                    "events are readable again: the transaction that held them back ended"
                );
            }
            return;
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.warn_after {
            return;
        }
        let writer = match store.oldest_writer().await {
            Ok(Some(writer)) => writer,
            Ok(None) => return,
            Err(error) => {
                debug!(%error, "cannot look for the transaction that holds events back");
                return;
            }
        };
        if self.warned.as_ref() == Some(&key(&writer)) {
            return;
        }
        warn!(
            kind = %writer.kind,
            pid = writer.pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
            database = writer.database.as_deref().unwrap_or("?"),
            user = writer.user.as_deref().unwrap_or("?"),
            application = writer.application.as_deref().unwrap_or(""),
            state = writer.state.as_deref().unwrap_or("?"),
            transaction_age_seconds = writer.age.as_secs(),
            query = writer.query.as_deref().unwrap_or(""),
            "events are held back: an open transaction began before they committed, and no \
             subscription may read them until it ends (commit or end it; see \
             idle_in_transaction_session_timeout)"
        );
        self.warned = Some(key(&writer));
    }
}
