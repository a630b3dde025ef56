//! What wakes an idle subscription: PostgreSQL `LISTEN/NOTIFY`, or appends made in this
//! process (SQLite); a fallback poll covers everything else (appends by another process to
//! SQLite, a lost listener connection).
//!
//! Wake-ups are a watch channel's version counter: a receiver never misses that something
//! changed, however many notifications arrived meanwhile.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use crate::shutdown::Shutdown;
use crate::store::{NOTIFY_CHANNEL, Store, StoreError};

/// Starts listening; the receiver changes after every commit that appended events.
pub async fn listen(store: &Store, shutdown: Shutdown) -> Result<watch::Receiver<u64>, StoreError> {
    match store {
        Store::Sqlite(store) => Ok(store.appends()),
        Store::Postgres(store) => {
            let mut listener = PgListener::connect_with(store.pool()).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            let (sender, receiver) = watch::channel(0);
            tokio::spawn(forward(listener, sender, shutdown));
            Ok(receiver)
        }
    }
}

async fn forward(mut listener: PgListener, sender: watch::Sender<u64>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = shutdown.requested() => return,
            notification = listener.recv() => {
                if let Err(error) = notification {
                    // The listener reconnects on its next recv; notifications sent meanwhile
                    // are lost, so wake everyone to look for themselves.
                    tracing::warn!(%error, "lost the LISTEN connection; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                sender.send_modify(|count| *count = count.wrapping_add(1));
            }
        }
    }
}
