//! Durable subscriptions on PostgreSQL: see `store::subscriptions` for the contract and
//! `migrations/postgres/0002_subscriptions.sql` for the tables.

use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};

use super::{PgStore, append_each, deliveries, event_from_row, parse_tx};
use crate::subscriptions::{Definition, like_prefix};
use crate::{
    BatchCommit, Checkpoint, DefinedSubscription, Filter, ParkedEvent, ParkedSelection,
    ParkedSummary, StoreError, SubscriptionDefinition, SubscriptionRecord, SubscriptionStore,
    from_sql_int, sql_int, sql_limit,
};
use eventhost_domain::{Event, Position};

macro_rules! subscription_columns {
    () => {
        "name, plugin, aggregate_types, event_types, checkpoint_tx, checkpoint_position, \
         revision, status, last_error, progress, updated_at, \
         CASE WHEN lease_expires_at > now() THEN owner END AS owner"
    };
}

fn record_from_row(row: &PgRow) -> Result<SubscriptionRecord, StoreError> {
    Ok(SubscriptionRecord {
        name: row.try_get("name")?,
        plugin: row.try_get("plugin")?,
        filter: Filter {
            aggregate_types: row.try_get("aggregate_types")?,
            event_types: row.try_get("event_types")?,
        },
        checkpoint: Checkpoint::new(
            from_sql_int(row.try_get("checkpoint_tx")?),
            from_sql_int(row.try_get("checkpoint_position")?),
        ),
        revision: from_sql_int(row.try_get("revision")?),
        status: row.try_get("status")?,
        last_error: row.try_get("last_error")?,
        owner: row.try_get("owner")?,
        progress: row
            .try_get::<Option<Json<serde_json::Value>>, _>("progress")?
            .map(|json| json.0),
        updated_at: row.try_get("updated_at")?,
    })
}

fn parked_from_row(row: &PgRow) -> Result<ParkedEvent, StoreError> {
    Ok(ParkedEvent {
        id: row.try_get("parked_id")?,
        subscription: row.try_get("subscription")?,
        event_id: row.try_get("event_id")?,
        position: from_sql_int(row.try_get("event_position")?),
        error: row.try_get("error")?,
        attempts: u32::try_from(row.try_get::<i32, _>("attempts")?).unwrap_or(0),
        parked_at: row.try_get("parked_at")?,
        replay_requested: row.try_get("replay_requested")?,
    })
}

impl PgStore {
    /// Each subscription's parked events: how many, and when the oldest was parked.
    pub(crate) async fn parked_summary(&self) -> Result<Vec<ParkedSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT subscription, count(*) AS parked, min(parked_at) AS oldest
             FROM eventhost.parked GROUP BY subscription ORDER BY subscription",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ParkedSummary {
                    subscription: row.try_get("subscription")?,
                    parked: from_sql_int(row.try_get("parked")?),
                    oldest: row.try_get("oldest")?,
                })
            })
            .collect()
    }

    async fn select_subscription(
        &self,
        name: &str,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM eventhost.subscriptions WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn commit_in(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        commit: &BatchCommit,
    ) -> Result<(), StoreError> {
        let moved = sqlx::query(
            "UPDATE eventhost.subscriptions
             SET checkpoint_tx = $2, checkpoint_position = $3, revision = revision + 1,
                 status = 'running', last_error = NULL, updated_at = now()
             WHERE name = $1 AND checkpoint_tx = $4 AND checkpoint_position = $5
               AND revision = $6
               AND ($7::uuid IS NULL OR (owner = $7 AND lease_expires_at > now()))",
        )
        .bind(&commit.subscription)
        .bind(sql_int(commit.to.tx(), "checkpoint")?)
        .bind(sql_int(commit.to.position(), "checkpoint")?)
        .bind(sql_int(commit.from.tx(), "checkpoint")?)
        .bind(sql_int(commit.from.position(), "checkpoint")?)
        .bind(sql_int(commit.revision, "revision")?)
        .bind(commit.lease)
        .execute(&mut **tx)
        .await?;
        if moved.rows_affected() != 1 {
            if let Some(owner) = commit.lease {
                let held = sqlx::query_scalar::<_, Option<bool>>(
                    "SELECT owner IS NOT DISTINCT FROM $2 AND lease_expires_at > now()
                     FROM eventhost.subscriptions WHERE name = $1",
                )
                .bind(&commit.subscription)
                .bind(owner)
                .fetch_optional(&mut **tx)
                .await?
                .flatten();
                if held != Some(true) {
                    return Err(StoreError::LeaseLost {
                        subscription: commit.subscription.clone(),
                    });
                }
            }
            return Err(StoreError::CheckpointMoved {
                subscription: commit.subscription.clone(),
            });
        }
        let prepared = commit
            .appends
            .iter()
            .map(|append| {
                eventhost_domain::append::prepare(&append.stream, &append.events, self.limits())
            })
            .collect::<Result<Vec<_>, _>>()?;
        append_each(tx, &commit.appends, &prepared, |_, error| error).await?;
        let (set, deleted): (Vec<_>, Vec<_>) =
            commit.state.iter().partition(|(_, value)| value.is_some());
        if !set.is_empty() {
            let keys: Vec<&str> = set.iter().map(|(key, _)| key.as_str()).collect();
            let values: Vec<&str> = set
                .iter()
                .filter_map(|(_, value)| value.as_deref())
                .collect();
            sqlx::query(
                "INSERT INTO eventhost.state (namespace, key, value)
                 SELECT $1, key, value FROM UNNEST($2::text[], $3::text[]) AS t(key, value)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
            )
            .bind(&commit.subscription)
            .bind(keys)
            .bind(values)
            .execute(&mut **tx)
            .await?;
        }
        if !deleted.is_empty() {
            let keys: Vec<&str> = deleted.iter().map(|(key, _)| key.as_str()).collect();
            sqlx::query("DELETE FROM eventhost.state WHERE namespace = $1 AND key = ANY($2)")
                .bind(&commit.subscription)
                .bind(keys)
                .execute(&mut **tx)
                .await?;
        }
        deliveries::enqueue_in(tx, &commit.subscription, &commit.messages).await?;
        if let Some(park) = &commit.park {
            sqlx::query(
                "INSERT INTO eventhost.parked (subscription, event_id, event_position, error, attempts)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (subscription, event_id) DO UPDATE
                     SET error = excluded.error, attempts = excluded.attempts,
                         parked_at = now(), replay_requested = false",
            )
            .bind(&commit.subscription)
            .bind(park.event_id)
            .bind(sql_int(park.position, "position")?)
            .bind(&park.error)
            .bind(i32::try_from(park.attempts).unwrap_or(i32::MAX))
            .execute(&mut **tx)
            .await?;
        }
        if let Some(parked_id) = commit.replayed {
            let resolved =
                sqlx::query("DELETE FROM eventhost.parked WHERE id = $1 AND subscription = $2")
                    .bind(parked_id)
                    .bind(&commit.subscription)
                    .execute(&mut **tx)
                    .await?;
            if resolved.rows_affected() != 1 {
                return Err(StoreError::NotFound(format!("parked event {parked_id}")));
            }
        }
        Ok(())
    }

    /// The subscription-order checkpoint just after the event at `position`.
    /// The checkpoint from which a subscription handles every event after `position` (0:
    /// the beginning). Subscriptions read in commit order, `(order_tx, position)`, not in
    /// position order: an event whose transaction began before the one at `position`, and
    /// that took a later position, comes before it. So the checkpoint is the event at
    /// `position`'s, unless such an event exists: then it is just before the first of them,
    /// and the events after it that are at or before `position` are handled again too.
    async fn checkpoint_before_all_after(
        &self,
        position: Position,
    ) -> Result<Checkpoint, StoreError> {
        if position == 0 {
            return Ok(Checkpoint::ORIGIN);
        }
        let tx: Option<String> =
            sqlx::query_scalar("SELECT order_tx::text FROM eventhost.events WHERE position = $1")
                .bind(sql_int(position, "position")?)
                .fetch_optional(self.pool())
                .await?;
        let tx = tx.ok_or_else(|| StoreError::NotFound(format!("event at position {position}")))?;
        let at = Checkpoint::new(parse_tx(&tx)?, position);
        // The events after `position` that come before it in commit order.
        let earliest: Option<(String, i64)> = sqlx::query_as(
            "SELECT order_tx::text, position FROM eventhost.events
             WHERE position > $1 AND order_tx < $2::text::xid8
             ORDER BY order_tx, position LIMIT 1",
        )
        .bind(sql_int(position, "position")?)
        .bind(&tx)
        .fetch_optional(self.pool())
        .await?;
        let Some((earliest_tx, earliest_position)) = earliest else {
            return Ok(at);
        };
        let earliest_position = from_sql_int(earliest_position);
        Ok(Checkpoint::new(
            parse_tx(&earliest_tx)?,
            earliest_position.saturating_sub(1),
        ))
    }
}

/// How a batch's transaction begins. A batch that appends no event and enqueues no message
/// writes only what the durable events can rebuild (its checkpoint, its state, a parked
/// entry): it commits without waiting for the WAL flush. A server crash may then lose its
/// last such commits, each whole (checkpoint and state together), and the daemon runs those
/// batches again: effects stay exactly once, and the wait leaves the path from an append to
/// the next batch's handler. A batch that appends events records new facts, and one that
/// enqueues messages may see them sent at once: both wait for their commit to be durable.
fn begin_statement(commit: &BatchCommit) -> &'static str {
    if commit.appends.is_empty() && commit.messages.is_empty() {
        "BEGIN; SET LOCAL synchronous_commit = off"
    } else {
        "BEGIN"
    }
}

/// Creates or updates one subscription inside `tx` (see
/// [`SubscriptionStore::define_subscriptions`]); the row is locked until `tx` ends, so a
/// concurrent definition or reset waits.
async fn define_in(
    tx: &mut Transaction<'_, Postgres>,
    plugin: &str,
    definition: &SubscriptionDefinition,
) -> Result<DefinedSubscription, StoreError> {
    // Two daemons starting together may both find no row and both create it: the second
    // insert waits for the first's commit, then does nothing, and this looks again (each
    // statement sees what committed before it), now finding the row to keep or restart.
    let (row, action) = loop {
        let stored = sqlx::query(
            "SELECT aggregate_types, event_types FROM eventhost.subscriptions
             WHERE name = $1 FOR UPDATE",
        )
        .bind(&definition.name)
        .fetch_optional(&mut **tx)
        .await?
        .map(|row| {
            Ok::<_, sqlx::Error>(Filter {
                aggregate_types: row.try_get("aggregate_types")?,
                event_types: row.try_get("event_types")?,
            })
        })
        .transpose()?;
        let action = Definition::of(definition, stored);
        let (sql, binds_start) = match action {
            Definition::Create => (
                concat!(
                    "INSERT INTO eventhost.subscriptions
                         (name, plugin, aggregate_types, event_types, checkpoint_tx,
                          checkpoint_position)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (name) DO NOTHING
                     RETURNING ",
                    subscription_columns!()
                ),
                true,
            ),
            Definition::Keep => (
                concat!(
                    "UPDATE eventhost.subscriptions
                     SET plugin = $2, aggregate_types = $3, event_types = $4, status = 'running',
                         updated_at = now()
                     WHERE name = $1
                     RETURNING ",
                    subscription_columns!()
                ),
                false,
            ),
            Definition::Restart => (
                concat!(
                    "UPDATE eventhost.subscriptions
                     SET plugin = $2, aggregate_types = $3, event_types = $4, status = 'running',
                         checkpoint_tx = $5, checkpoint_position = $6, last_error = NULL,
                         revision = revision + 1, updated_at = now()
                     WHERE name = $1
                     RETURNING ",
                    subscription_columns!()
                ),
                true,
            ),
        };
        let mut query = sqlx::query(sql)
            .bind(&definition.name)
            .bind(plugin)
            .bind(&definition.filter.aggregate_types)
            .bind(&definition.filter.event_types);
        if binds_start {
            query = query
                .bind(sql_int(definition.start.tx(), "checkpoint")?)
                .bind(sql_int(definition.start.position(), "checkpoint")?);
        }
        if let Some(row) = query.fetch_optional(&mut **tx).await? {
            break (row, action);
        }
    };
    let restarted = action == Definition::Restart;
    if restarted {
        for sql in [
            "DELETE FROM eventhost.state WHERE namespace = $1",
            "DELETE FROM eventhost.parked WHERE subscription = $1",
        ] {
            sqlx::query(sql)
                .bind(&definition.name)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(DefinedSubscription {
        record: record_from_row(&row)?,
        restarted,
    })
}

impl SubscriptionStore for PgStore {
    async fn define_subscriptions(
        &self,
        plugin: &str,
        definitions: &[SubscriptionDefinition],
    ) -> Result<Vec<DefinedSubscription>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let mut defined = Vec::with_capacity(definitions.len());
        for definition in definitions {
            defined.push(define_in(&mut tx, plugin, definition).await?);
        }
        tx.commit().await?;
        Ok(defined)
    }

    async fn subscription(&self, name: &str) -> Result<Option<SubscriptionRecord>, StoreError> {
        self.select_subscription(name).await
    }

    async fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM eventhost.subscriptions ORDER BY name"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn commit_batch(&self, commit: &BatchCommit) -> Result<(), StoreError> {
        commit.check_content()?;
        let mut tx = self.pool().begin_with(begin_statement(commit)).await?;
        self.commit_in(&mut tx, commit).await?;
        tx.commit().await?;
        if !commit.appends.is_empty() {
            self.notify_soon();
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
            "UPDATE eventhost.subscriptions
             SET status = $2, last_error = $3, progress = coalesce($4, progress), updated_at = now()
             WHERE name = $1",
        )
        .bind(name)
        .bind(status)
        .bind(last_error)
        .bind(progress.map(Json))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn lag(&self, name: &str) -> Result<u64, StoreError> {
        match self.select_subscription(name).await? {
            Some(record) => {
                super::count_after(self.pool(), record.checkpoint, &record.filter).await
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
        let checkpoint = self.checkpoint_before_all_after(position).await?;
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query(concat!(
            "UPDATE eventhost.subscriptions
             SET checkpoint_tx = $2, checkpoint_position = $3, revision = revision + 1,
                 last_error = NULL, updated_at = now()
             WHERE name = $1
             RETURNING ",
            subscription_columns!()
        ))
        .bind(name)
        .bind(sql_int(checkpoint.tx(), "checkpoint")?)
        .bind(sql_int(checkpoint.position(), "checkpoint")?)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(updated) = updated else {
            return Err(StoreError::NotFound(format!("subscription {name:?}")));
        };
        let record = record_from_row(&updated)?;
        if clear_state {
            sqlx::query("DELETE FROM eventhost.state WHERE namespace = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM eventhost.parked WHERE subscription = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "DELETE FROM eventhost.parked AS p USING eventhost.events AS e
                 WHERE p.subscription = $1 AND e.id = p.event_id
                   AND (e.order_tx, e.position) > ($2::text::xid8, $3)",
            )
            .bind(name)
            .bind(checkpoint.tx().to_string())
            .bind(sql_int(checkpoint.position(), "checkpoint")?)
            .execute(&mut *tx)
            .await?;
        }
        PgStore::raise_control(&mut tx).await?;
        tx.commit().await?;
        self.notify().await;
        Ok(record)
    }

    async fn parked(&self, subscription: Option<&str>) -> Result<Vec<ParkedEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id AS parked_id, subscription, event_id, event_position, error, attempts,
                    parked_at, replay_requested
             FROM eventhost.parked WHERE $1::text IS NULL OR subscription = $1 ORDER BY id",
        )
        .bind(subscription)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(parked_from_row).collect()
    }

    async fn request_replay(&self, selection: ParkedSelection<'_>) -> Result<u64, StoreError> {
        let query = match selection {
            ParkedSelection::One(id) => {
                sqlx::query("UPDATE eventhost.parked SET replay_requested = true WHERE id = $1")
                    .bind(id)
            }
            ParkedSelection::AllOf(subscription) => sqlx::query(
                "UPDATE eventhost.parked SET replay_requested = true
                 WHERE $1::text IS NULL OR subscription = $1",
            )
            .bind(subscription),
        };
        let mut tx = self.pool().begin().await?;
        let marked = query.execute(&mut *tx).await?.rows_affected();
        if marked > 0 {
            PgStore::raise_control(&mut tx).await?;
        }
        tx.commit().await?;
        if marked > 0 {
            self.notify().await;
        }
        Ok(marked)
    }

    async fn skip_parked(&self, selection: ParkedSelection<'_>) -> Result<u64, StoreError> {
        let (id, subscription) = match selection {
            ParkedSelection::One(id) => (Some(id), None),
            ParkedSelection::AllOf(subscription) => (None, subscription),
        };
        let skipped: i64 = sqlx::query_scalar(
            "WITH skipped AS (
                 DELETE FROM eventhost.parked
                 WHERE CASE WHEN $1::bigint IS NOT NULL THEN id = $1
                            ELSE $2::text IS NULL OR subscription = $2 END
                 RETURNING subscription
             ), raised AS (
                 UPDATE eventhost.subscriptions SET revision = revision + 1
                 WHERE name IN (SELECT subscription FROM skipped)
             )
             SELECT count(*) FROM skipped",
        )
        .bind(id)
        .bind(subscription)
        .fetch_one(self.pool())
        .await?;
        Ok(from_sql_int(skipped))
    }

    async fn replay_requests(
        &self,
        subscription: &str,
    ) -> Result<Vec<(ParkedEvent, Event)>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.id AS parked_id, p.subscription, p.event_id, p.event_position, p.error,
                    p.attempts, p.parked_at, p.replay_requested, e.order_tx::text AS order_tx,
                    e.position, e.id, e.aggregate_type, e.aggregate_id, e.version, e.event_type,
                    e.payload, e.metadata, e.recorded_at
             FROM eventhost.parked AS p JOIN eventhost.events AS e ON e.id = p.event_id
             WHERE p.subscription = $1 AND p.replay_requested ORDER BY p.id",
        )
        .bind(subscription)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((parked_from_row(row)?, event_from_row(row)?)))
            .collect()
    }

    async fn state_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT value FROM eventhost.state WHERE namespace = $1 AND key = $2",
        )
        .bind(namespace)
        .bind(key)
        .fetch_optional(self.pool())
        .await?)
    }

    async fn state_get_many(
        &self,
        namespace: &str,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let found: Vec<(String, String)> = sqlx::query_as(
            "SELECT key, value FROM eventhost.state WHERE namespace = $1 AND key = ANY($2)",
        )
        .bind(namespace)
        .bind(keys)
        .fetch_all(self.pool())
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
        Ok(sqlx::query_as(
            "SELECT key, value FROM eventhost.state
             WHERE namespace = $1 AND key LIKE $2 ESCAPE '\\' AND ($3::text IS NULL OR key > $3)
             ORDER BY key LIMIT $4",
        )
        .bind(namespace)
        .bind(like_prefix(prefix))
        .bind(start_after)
        .bind(sql_limit(limit))
        .fetch_all(self.pool())
        .await?)
    }
}

impl crate::PluginRecords for PgStore {
    async fn record_plugin(&self, record: &crate::PluginRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO eventhost.plugins (file, name, version, hash, loaded_at, status, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
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
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn plugin_records(&self) -> Result<Vec<crate::PluginRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT file, name, version, hash, loaded_at, status, error FROM eventhost.plugins ORDER BY file",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(crate::PluginRecord {
                    file: row.try_get("file")?,
                    name: row.try_get("name")?,
                    version: row.try_get("version")?,
                    hash: row.try_get("hash")?,
                    loaded_at: row.try_get("loaded_at")?,
                    status: row.try_get("status")?,
                    error: row.try_get("error")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PendingAppend;
    use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};

    #[test]
    fn only_a_batch_that_appends_waits_for_the_wal_flush() {
        let mut commit = BatchCommit::advance("p.s", 0, Checkpoint::ORIGIN, Checkpoint::ORIGIN);
        commit.state = vec![("count".to_owned(), Some("1".to_owned()))];
        assert_eq!(
            begin_statement(&commit),
            "BEGIN; SET LOCAL synchronous_commit = off"
        );
        commit.appends.push(PendingAppend {
            stream: StreamId::new("order", "o-1"),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent::new("shipped", serde_json::json!({}))],
        });
        assert_eq!(begin_statement(&commit), "BEGIN");
    }
}
