//! One daemon delivers each sink's messages (PostgreSQL): a sink's worker sends only while it
//! holds the sink's advisory lock, on a session of its own. The lock is the session's: a
//! daemon that dies, or whose connection breaks, loses it at once, and the worker of another
//! daemon takes it at its next look; a live, paused one keeps it, so nobody sends meanwhile
//! (a message is never sent by two daemons at once, and each key's order holds).

use sqlx::PgConnection;

use super::PgStore;
use crate::StoreError;

/// A sink worker's hold on its sink.
#[derive(Debug)]
pub struct SinkLock {
    store: PgStore,
    /// `eventhost.sink/<name>`, hashed to the lock's key by the server.
    key: String,
    /// The session that holds, or tries for, the lock: outside the pool, so that it is
    /// never handed to other work while it holds the lock.
    session: Option<PgConnection>,
    held: bool,
}

impl SinkLock {
    pub fn new(store: PgStore, sink: &str) -> Self {
        Self {
            store,
            key: format!("eventhost.sink/{sink}"),
            session: None,
            held: false,
        }
    }

    /// Takes the lock if it is free, or checks that this worker still holds it (its session
    /// is alive): whether the worker may send now. An error means the session is gone, and
    /// the lock with it.
    pub async fn hold(&mut self) -> Result<bool, StoreError> {
        let session = match &mut self.session {
            Some(session) => session,
            None => {
                self.held = false;
                self.session
                    .insert(self.store.pool().acquire().await?.detach())
            }
        };
        let held = if self.held {
            sqlx::query_scalar::<_, bool>("SELECT true")
                .fetch_one(&mut *session)
                .await
        } else {
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(&self.key)
                .fetch_one(&mut *session)
                .await
        };
        match held {
            Ok(held) => {
                self.held = held;
                Ok(held)
            }
            Err(error) => {
                self.session = None;
                self.held = false;
                Err(error.into())
            }
        }
    }
}
