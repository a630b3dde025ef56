//! Durable subscriptions on SQLite: see `store::subscriptions` for the contract and
//! `migrations/sqlite/0002_subscriptions.sql` for the tables. Checkpoints are positions.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::{SqliteStore, append_in, deliveries, event_from_row, parse_json};
use crate::subscriptions::{Definition, like_prefix};
use crate::{
    BatchCommit, Checkpoint, DefinedSubscription, Filter, ParkedEvent, ParkedSelection,
    ParkedSummary, StoreError, SubscriptionDefinition, SubscriptionRecord, SubscriptionStore,
    from_sql_int, sql_int, sql_limit,
};
use eventhost_domain::{Event, Position};

macro_rules! subscription_columns {
    () => {
        "name, plugin, aggregate_types, event_types, checkpoint_position, revision, status, \
         last_error, progress, updated_at"
    };
}

fn record_from_row(row: &SqliteRow) -> Result<SubscriptionRecord, StoreError> {
    let progress: Option<String> = row.try_get("progress")?;
    Ok(SubscriptionRecord {
        name: row.try_get("name")?,
        plugin: row.try_get("plugin")?,
        filter: Filter {
            aggregate_types: parse_json(row.try_get("aggregate_types")?, "aggregate_types")?,
            event_types: parse_json(row.try_get("event_types")?, "event_types")?,
        },
        checkpoint: Checkpoint::new(0, from_sql_int(row.try_get("checkpoint_position")?)),
        revision: from_sql_int(row.try_get("revision")?),
        status: row.try_get("status")?,
        last_error: row.try_get("last_error")?,
        owner: None,
        progress: progress
            .as_deref()
            .map(|text| parse_json(text, "progress"))
            .transpose()?,
        updated_at: row.try_get::<DateTime<Utc>, _>("updated_at")?,
    })
}

fn parked_from_row(row: &SqliteRow) -> Result<ParkedEvent, StoreError> {
    let event_id: String = row.try_get("parked_event_id")?;
    Ok(ParkedEvent {
        id: row.try_get("parked_id")?,
        subscription: row.try_get("subscription")?,
        event_id: Uuid::parse_str(&event_id)
            .map_err(|_| StoreError::Corrupt(format!("parked event id {event_id:?}")))?,
        position: from_sql_int(row.try_get("event_position")?),
        error: row.try_get("error")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
        parked_at: row.try_get::<DateTime<Utc>, _>("parked_at")?,
        replay_requested: row.try_get("replay_requested")?,
    })
}

/// Raises the control counter a daemon's poll watches: an operator's request for it.
async fn raise_control(tx: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("UPDATE control SET version = version + 1 WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

fn names_json(names: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(names).map_err(|error| StoreError::Invalid(format!("filter: {error}")))
}

impl SqliteStore {
    /// Each subscription's parked events: how many, and when the oldest was parked.
    pub(crate) async fn parked_summary(&self) -> Result<Vec<ParkedSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT subscription, count(*) AS parked, min(parked_at) AS oldest
             FROM parked GROUP BY subscription ORDER BY subscription",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ParkedSummary {
                    subscription: row.try_get("subscription")?,
                    parked: from_sql_int(row.try_get("parked")?),
                    oldest: row.try_get::<DateTime<Utc>, _>("oldest")?,
                })
            })
            .collect()
    }

    async fn commit_in(
        &self,
        conn: &mut SqliteConnection,
        commit: &BatchCommit,
    ) -> Result<(), StoreError> {
        let moved = sqlx::query(
            "UPDATE subscriptions
             SET checkpoint_position = ?2, revision = revision + 1, status = 'running',
                 last_error = NULL, updated_at = ?4
             WHERE name = ?1 AND checkpoint_position = ?3 AND revision = ?5",
        )
        .bind(&commit.subscription)
        .bind(sql_int(commit.to.position(), "checkpoint")?)
        .bind(sql_int(commit.from.position(), "checkpoint")?)
        .bind(Utc::now())
        .bind(sql_int(commit.revision, "revision")?)
        .execute(&mut *conn)
        .await?;
        if moved.rows_affected() != 1 {
            return Err(StoreError::CheckpointMoved {
                subscription: commit.subscription.clone(),
            });
        }
        for append in &commit.appends {
            let prepared =
                eventhost_domain::append::prepare(&append.stream, &append.events, self.limits)?;
            append_in(conn, &append.stream, append.expected, &prepared).await?;
        }
        for (key, value) in &commit.state {
            let query = match value {
                Some(value) => sqlx::query(
                    "INSERT INTO state (namespace, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                )
                .bind(&commit.subscription)
                .bind(key)
                .bind(value),
                None => sqlx::query("DELETE FROM state WHERE namespace = ?1 AND key = ?2")
                    .bind(&commit.subscription)
                    .bind(key),
            };
            query.execute(&mut *conn).await?;
        }
        deliveries::enqueue_in(conn, &commit.subscription, &commit.messages).await?;
        if let Some(park) = &commit.park {
            sqlx::query(
                "INSERT INTO parked (subscription, event_id, event_position, error, attempts, parked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (subscription, event_id) DO UPDATE
                     SET error = excluded.error, attempts = excluded.attempts,
                         parked_at = excluded.parked_at, replay_requested = 0",
            )
            .bind(&commit.subscription)
            .bind(park.event_id.to_string())
            .bind(sql_int(park.position, "position")?)
            .bind(&park.error)
            .bind(i64::from(park.attempts))
            .bind(Utc::now())
            .execute(&mut *conn)
            .await?;
        }
        if let Some(parked_id) = commit.replayed {
            let resolved = sqlx::query("DELETE FROM parked WHERE id = ?1 AND subscription = ?2")
                .bind(parked_id)
                .bind(&commit.subscription)
                .execute(&mut *conn)
                .await?;
            if resolved.rows_affected() != 1 {
                return Err(StoreError::NotFound(format!("parked event {parked_id}")));
            }
        }
        Ok(())
    }
}

/// Creates or updates one subscription inside `conn`'s open `BEGIN IMMEDIATE` transaction
/// (see [`SubscriptionStore::define_subscriptions`]).
async fn define_in(
    conn: &mut SqliteConnection,
    plugin: &str,
    definition: &SubscriptionDefinition,
) -> Result<DefinedSubscription, StoreError> {
    let stored: Option<(String, String)> =
        sqlx::query_as("SELECT aggregate_types, event_types FROM subscriptions WHERE name = ?1")
            .bind(&definition.name)
            .fetch_optional(&mut *conn)
            .await?;
    let stored = stored
        .map(|(aggregate_types, event_types)| {
            Ok::<_, StoreError>(Filter {
                aggregate_types: parse_json(&aggregate_types, "aggregate_types")?,
                event_types: parse_json(&event_types, "event_types")?,
            })
        })
        .transpose()?;
    let action = Definition::of(definition, stored);
    let sql = match action {
        Definition::Create => concat!(
            "INSERT INTO subscriptions
                 (name, plugin, aggregate_types, event_types, checkpoint_position, created_at,
                  updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             RETURNING ",
            subscription_columns!()
        ),
        // ?5 (the start) is bound but unused: SQLite allows it.
        Definition::Keep => concat!(
            "UPDATE subscriptions
             SET plugin = ?2, aggregate_types = ?3, event_types = ?4, status = 'running',
                 updated_at = ?6
             WHERE name = ?1
             RETURNING ",
            subscription_columns!()
        ),
        Definition::Restart => concat!(
            "UPDATE subscriptions
             SET plugin = ?2, aggregate_types = ?3, event_types = ?4, status = 'running',
                 checkpoint_position = ?5, last_error = NULL, revision = revision + 1,
                 updated_at = ?6
             WHERE name = ?1
             RETURNING ",
            subscription_columns!()
        ),
    };
    let row = sqlx::query(sql)
        .bind(&definition.name)
        .bind(plugin)
        .bind(names_json(&definition.filter.aggregate_types)?)
        .bind(names_json(&definition.filter.event_types)?)
        .bind(sql_int(definition.start.position(), "checkpoint")?)
        .bind(Utc::now())
        .fetch_one(&mut *conn)
        .await?;
    let restarted = action == Definition::Restart;
    if restarted {
        for sql in [
            "DELETE FROM state WHERE namespace = ?1",
            "DELETE FROM parked WHERE subscription = ?1",
        ] {
            sqlx::query(sql)
                .bind(&definition.name)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(DefinedSubscription {
        record: record_from_row(&row)?,
        restarted,
    })
}

impl SubscriptionStore for SqliteStore {
    async fn define_subscriptions(
        &self,
        plugin: &str,
        definitions: &[SubscriptionDefinition],
    ) -> Result<Vec<DefinedSubscription>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut defined = Vec::with_capacity(definitions.len());
        for definition in definitions {
            defined.push(define_in(&mut tx, plugin, definition).await?);
        }
        tx.commit().await?;
        Ok(defined)
    }

    async fn subscription(&self, name: &str) -> Result<Option<SubscriptionRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM subscriptions WHERE name = ?1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM subscriptions ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn commit_batch(&self, commit: &BatchCommit) -> Result<(), StoreError> {
        commit.check_content()?;
        let mut tx = self.begin_write().await?;
        self.commit_in(&mut tx, commit).await?;
        tx.commit().await?;
        if !commit.appends.is_empty() {
            self.signal_append();
        }
        if !commit.messages.is_empty() {
            self.signal_enqueued();
        }
        Ok(())
    }

    async fn record_status(
        &self,
        name: &str,
        status: &str,
        last_error: Option<&str>,
        progress: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE subscriptions
             SET status = ?2, last_error = ?3, progress = coalesce(?4, progress), updated_at = ?5
             WHERE name = ?1",
        )
        .bind(name)
        .bind(status)
        .bind(last_error)
        .bind(progress.map(serde_json::Value::to_string))
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn lag(&self, name: &str) -> Result<u64, StoreError> {
        match self.subscription(name).await? {
            Some(record) => {
                super::count_after(&self.pool, record.checkpoint.position(), &record.filter).await
            }
            None => Ok(0),
        }
    }

    async fn reset(
        &self,
        name: &str,
        position: Position,
        clear_state: bool,
    ) -> Result<SubscriptionRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE subscriptions
             SET checkpoint_position = ?2, revision = revision + 1, last_error = NULL,
                 updated_at = ?3
             WHERE name = ?1",
        )
        .bind(name)
        .bind(sql_int(position, "position")?)
        .bind(Utc::now())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::NotFound(format!("subscription {name:?}")));
        }
        if clear_state {
            sqlx::query("DELETE FROM state WHERE namespace = ?1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        // Each is handled again, or (with the state) belongs to a state that is gone.
        sqlx::query("DELETE FROM parked WHERE subscription = ?1 AND (?2 OR event_position > ?3)")
            .bind(name)
            .bind(clear_state)
            .bind(sql_int(position, "position")?)
            .execute(&mut *tx)
            .await?;
        raise_control(&mut tx).await?;
        tx.commit().await?;
        self.signal_append();
        self.subscription(name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("subscription {name:?}")))
    }

    async fn parked(&self, subscription: Option<&str>) -> Result<Vec<ParkedEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id AS parked_id, subscription, event_id AS parked_event_id, event_position,
                    error, attempts, parked_at, replay_requested
             FROM parked WHERE ?1 IS NULL OR subscription = ?1 ORDER BY id",
        )
        .bind(subscription)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(parked_from_row).collect()
    }

    async fn request_replay(&self, selection: ParkedSelection<'_>) -> Result<u64, StoreError> {
        let query = match selection {
            ParkedSelection::One(id) => {
                sqlx::query("UPDATE parked SET replay_requested = 1 WHERE id = ?1").bind(id)
            }
            ParkedSelection::AllOf(subscription) => sqlx::query(
                "UPDATE parked SET replay_requested = 1 WHERE ?1 IS NULL OR subscription = ?1",
            )
            .bind(subscription),
        };
        let mut tx = self.begin_write().await?;
        let marked = query.execute(&mut *tx).await?.rows_affected();
        if marked > 0 {
            raise_control(&mut tx).await?;
        }
        tx.commit().await?;
        if marked > 0 {
            self.signal_append();
        }
        Ok(marked)
    }

    async fn skip_parked(&self, selection: ParkedSelection<'_>) -> Result<u64, StoreError> {
        let (id, subscription) = match selection {
            ParkedSelection::One(id) => (Some(id), None),
            ParkedSelection::AllOf(subscription) => (None, subscription),
        };
        const SELECTED: &str = "CASE WHEN ?1 IS NOT NULL THEN id = ?1
                                     ELSE ?2 IS NULL OR subscription = ?2 END";
        let mut tx = self.begin_write().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE subscriptions SET revision = revision + 1
             WHERE name IN (SELECT subscription FROM parked WHERE {SELECTED})"
        )))
        .bind(id)
        .bind(subscription)
        .execute(&mut *tx)
        .await?;
        let skipped = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM parked WHERE {SELECTED}"
        )))
        .bind(id)
        .bind(subscription)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(skipped)
    }

    async fn replay_requests(
        &self,
        subscription: &str,
    ) -> Result<Vec<(ParkedEvent, Event)>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.id AS parked_id, p.subscription, p.event_id AS parked_event_id,
                    p.event_position, p.error, p.attempts, p.parked_at, p.replay_requested,
                    e.position, e.id, e.aggregate_type, e.aggregate_id, e.version, e.event_type,
                    e.payload, e.metadata, e.recorded_at
             FROM parked AS p JOIN events AS e ON e.id = p.event_id
             WHERE p.subscription = ?1 AND p.replay_requested ORDER BY p.id",
        )
        .bind(subscription)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((parked_from_row(row)?, event_from_row(row)?)))
            .collect()
    }

    async fn state_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM state WHERE namespace = ?1 AND key = ?2")
                .bind(namespace)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn state_get_many(
        &self,
        namespace: &str,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let found: Vec<(String, String)> = sqlx::query_as(
            "SELECT key, value FROM state
             WHERE namespace = ?1 AND key IN (SELECT value FROM json_each(?2))",
        )
        .bind(namespace)
        .bind(names_json(keys)?)
        .fetch_all(&self.pool)
        .await?;
        Ok(crate::subscriptions::in_order(keys, found))
    }

    async fn state_scan(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        // LIKE is case-insensitive in SQLite: the exact prefix check keeps it byte-exact.
        Ok(sqlx::query_as(
            "SELECT key, value FROM state
             WHERE namespace = ?1 AND key LIKE ?2 ESCAPE '\\' AND substr(key, 1, length(?3)) = ?3
               AND (?4 IS NULL OR key > ?4)
             ORDER BY key LIMIT ?5",
        )
        .bind(namespace)
        .bind(like_prefix(prefix))
        .bind(prefix)
        .bind(start_after)
        .bind(sql_limit(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}

impl crate::PluginRecords for SqliteStore {
    async fn record_plugin(&self, record: &crate::PluginRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO plugins (file, name, version, hash, loaded_at, status, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (file) DO UPDATE
                 SET name = excluded.name, version = excluded.version, hash = excluded.hash,
                     loaded_at = excluded.loaded_at, status = excluded.status, error = excluded.error",
        )
        .bind(&record.file)
        .bind(&record.name)
        .bind(&record.version)
        .bind(&record.hash)
        .bind(record.loaded_at)
        .bind(&record.status)
        .bind(&record.error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn plugin_records(&self) -> Result<Vec<crate::PluginRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT file, name, version, hash, loaded_at, status, error FROM plugins ORDER BY file",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(crate::PluginRecord {
                    file: row.try_get("file")?,
                    name: row.try_get("name")?,
                    version: row.try_get("version")?,
                    hash: row.try_get("hash")?,
                    loaded_at: row.try_get::<DateTime<Utc>, _>("loaded_at")?,
                    status: row.try_get("status")?,
                    error: row.try_get("error")?,
                })
            })
            .collect()
    }
}
