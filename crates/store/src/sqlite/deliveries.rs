//! The outbox on SQLite: see `store::deliveries` for the contract and
//! `migrations/sqlite/0005_deliveries.sql` for the table.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::SqliteStore;
use crate::deliveries::{headers_from_json, headers_json};
use crate::{
    AttemptOutcome, Delivery, DeliveryQuery, DeliverySelection, DeliveryStatus, DeliveryStore,
    StoreError, collect_until, sql_limit,
};
use eventhost_domain::Message;

/// The columns `delivery_from_row` reads.
macro_rules! columns {
    () => {
        "id, sink, message_id, subscription, ordering_key, headers, body, status, attempts, \
         next_attempt_at, last_error, created_at, finished_at"
    };
}

fn delivery_from_row(row: &SqliteRow) -> Result<Delivery, StoreError> {
    let headers: String = row.try_get("headers")?;
    let status: String = row.try_get("status")?;
    Ok(Delivery {
        id: row.try_get("id")?,
        message: Message {
            id: row.try_get("message_id")?,
            sink: row.try_get("sink")?,
            key: row.try_get("ordering_key")?,
            headers: headers_from_json(&headers)?,
            body: row.try_get("body")?,
        },
        subscription: row.try_get("subscription")?,
        status: DeliveryStatus::parse(&status)?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
        next_attempt_at: row.try_get::<DateTime<Utc>, _>("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get::<DateTime<Utc>, _>("created_at")?,
        finished_at: row.try_get::<Option<DateTime<Utc>>, _>("finished_at")?,
    })
}

/// Enqueues a batch's messages inside its transaction; a message its sink already holds is
/// the same message (a batch committed once asks for it once) and is left as it is.
pub(super) async fn enqueue_in(
    conn: &mut SqliteConnection,
    subscription: &str,
    messages: &[Message],
) -> Result<(), StoreError> {
    let now = Utc::now();
    for message in messages {
        sqlx::query(
            "INSERT INTO deliveries
                 (sink, message_id, subscription, ordering_key, headers, body, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
             ON CONFLICT (sink, message_id) DO NOTHING",
        )
        .bind(&message.sink)
        .bind(&message.id)
        .bind(subscription)
        .bind(&message.key)
        .bind(headers_json(&message.headers)?)
        .bind(&message.body)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// `WHERE` conditions selecting `selection` among rows whose status is one of `statuses`.
fn push_selection(
    query: &mut QueryBuilder<Sqlite>,
    selection: DeliverySelection<'_>,
    statuses: &[DeliveryStatus],
) {
    query.push(" WHERE status IN (");
    let mut list = query.separated(", ");
    for status in statuses {
        list.push_bind(status.as_str());
    }
    query.push(")");
    match selection {
        DeliverySelection::One(id) => {
            query.push(" AND id = ").push_bind(id);
        }
        DeliverySelection::All { sink: Some(sink) } => {
            query.push(" AND sink = ").push_bind(sink.to_owned());
        }
        DeliverySelection::All { sink: None } => {}
    }
}

impl DeliveryStore for SqliteStore {
    async fn pending_deliveries(
        &self,
        sink: &str,
        limit: usize,
        bytes: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM deliveries WHERE sink = ?1 AND status = 'pending' ORDER BY id LIMIT ?2"
        ))
        .bind(sink)
        .bind(sql_limit(limit));
        collect_until(
            query.fetch(&self.pool),
            bytes,
            delivery_from_row,
            |delivery| delivery.message.size() as usize,
        )
        .await
    }

    async fn record_attempt(&self, id: i64, outcome: &AttemptOutcome) -> Result<bool, StoreError> {
        let now = Utc::now();
        let query = match outcome {
            AttemptOutcome::Delivered => sqlx::query(
                "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1,
                     last_error = NULL, finished_at = ?2
                 WHERE id = ?1 AND status = 'pending'",
            )
            .bind(id)
            .bind(now),
            AttemptOutcome::Retry { error, at } => sqlx::query(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?2,
                     next_attempt_at = ?3
                 WHERE id = ?1 AND status = 'pending'",
            )
            .bind(id)
            .bind(error)
            .bind(*at),
            AttemptOutcome::Dead { error } => sqlx::query(
                "UPDATE deliveries SET status = 'dead', attempts = attempts + 1,
                     last_error = ?2, finished_at = ?3
                 WHERE id = ?1 AND status = 'pending'",
            )
            .bind(id)
            .bind(error)
            .bind(now),
        };
        Ok(query.execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn record_delivered(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let ids = serde_json::to_string(ids)
            .map_err(|error| StoreError::Invalid(format!("delivery ids: {error}")))?;
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1,
                 last_error = NULL, finished_at = ?2
             WHERE id IN (SELECT value FROM json_each(?1)) AND status = 'pending'",
        )
        .bind(ids)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        let mut sql = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            columns!(),
            " FROM deliveries WHERE 1 = 1"
        ));
        if let Some(sink) = &query.sink {
            sql.push(" AND sink = ").push_bind(sink.clone());
        }
        if let Some(status) = query.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .push_bind(sql_limit(query.limit));
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn retry_deliveries(&self, selection: DeliverySelection<'_>) -> Result<u64, StoreError> {
        let mut sql = QueryBuilder::<Sqlite>::new(
            "UPDATE deliveries SET status = 'pending', attempts = 0, finished_at = NULL, next_attempt_at = ",
        );
        sql.push_bind(Utc::now());
        push_selection(
            &mut sql,
            selection,
            &[DeliveryStatus::Dead, DeliveryStatus::Skipped],
        );
        let done = sql.build().execute(&self.pool).await?.rows_affected();
        if done > 0 {
            self.signal_enqueued();
        }
        Ok(done)
    }

    async fn skip_deliveries(&self, selection: DeliverySelection<'_>) -> Result<u64, StoreError> {
        let mut sql =
            QueryBuilder::<Sqlite>::new("UPDATE deliveries SET status = 'skipped', finished_at = ");
        sql.push_bind(Utc::now());
        push_selection(
            &mut sql,
            selection,
            &[DeliveryStatus::Pending, DeliveryStatus::Dead],
        );
        Ok(sql.build().execute(&self.pool).await?.rows_affected())
    }

    async fn prune_deliveries(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM deliveries WHERE status = 'delivered' AND finished_at < ?1")
                .bind(before)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}
