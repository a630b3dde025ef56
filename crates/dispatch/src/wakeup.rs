//! What wakes an idle subscription: PostgreSQL `LISTEN/NOTIFY`, or appends made in this
//! process (SQLite); a fallback poll covers everything else (appends by another process to
//! SQLite, a lost listener connection).
//!
//! Wake-ups are watch channels' version counters: a receiver never misses that something
//! changed, however many notifications arrived meanwhile.

use std::time::Duration;

use eventhost_store::{Notification, Notifications, Store, StoreError};
use tokio::sync::watch;

use crate::shutdown::Shutdown;

/// What a subscription waits on.
#[derive(Clone)]
pub(crate) struct Wakeups {
    /// Changes after every notification: events may be readable.
    pub(crate) any: watch::Receiver<u64>,
    /// Changes after an operator's control notification (a replay request), and whenever
    /// notifications may have been lost.
    pub(crate) control: watch::Receiver<u64>,
}

/// Starts listening.
pub(crate) async fn listen(store: &Store, shutdown: Shutdown) -> Result<Wakeups, StoreError> {
    match store {
        Store::Sqlite(store) => Ok(Wakeups {
            any: store.appends(),
            // Requests come from other processes, which cannot signal this one: the poll
            // finds them.
            control: watch::channel(0).1,
        }),
        Store::Postgres(store) => {
            let listener = store.notifications().await?;
            let (any, any_receiver) = watch::channel(0);
            let (control, control_receiver) = watch::channel(0);
            tokio::spawn(forward(listener, any, control, shutdown));
            Ok(Wakeups {
                any: any_receiver,
                control: control_receiver,
            })
        }
    }
}

async fn forward(
    mut listener: Notifications,
    any: watch::Sender<u64>,
    control: watch::Sender<u64>,
    mut shutdown: Shutdown,
) {
    let bump =
        |sender: &watch::Sender<u64>| sender.send_modify(|count| *count = count.wrapping_add(1));
    loop {
        tokio::select! {
            _ = shutdown.requested() => return,
            notification = listener.recv() => {
                match notification {
                    Ok(Notification::Control) => bump(&control),
                    Ok(Notification::Appended) => {}
                    Err(error) => {
                        // The listener reconnects on its next recv; notifications sent
                        // meanwhile are lost, so wake everyone to look for themselves.
                        tracing::warn!(%error, "lost the LISTEN connection; reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        bump(&control);
                    }
                }
                bump(&any);
            }
        }
    }
}
