//! The outbox on PostgreSQL: see `store::deliveries` for the contract and
//! `migrations/postgres/0007_deliveries.sql` for the table.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use super::PgStore;
use crate::deliveries::headers_json;
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

fn delivery_from_row(row: &PgRow) -> Result<Delivery, StoreError> {
    let Json(headers): Json<Vec<(String, String)>> = row.try_get("headers")?;
    let status: String = row.try_get("status")?;
    Ok(Delivery {
        id: row.try_get("id")?,
        message: Message {
            id: row.try_get("message_id")?,
            sink: row.try_get("sink")?,
            key: row.try_get("ordering_key")?,
            headers,
            body: row.try_get("body")?,
        },
        subscription: row.try_get("subscription")?,
        status: DeliveryStatus::parse(&status)?,
        attempts: u32::try_from(row.try_get::<i32, _>("attempts")?).unwrap_or(0),
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// Enqueues a batch's messages inside its transaction, in one statement; a message its sink
/// already holds is the same message (a batch committed once asks for it once) and is left
/// as it is. `WITH ORDINALITY` keeps the batch's order in the ids.
pub(super) async fn enqueue_in(
    tx: &mut Transaction<'static, Postgres>,
    subscription: &str,
    messages: &[Message],
) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let sinks: Vec<&str> = messages.iter().map(|m| m.sink.as_str()).collect();
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    let keys: Vec<Option<&str>> = messages.iter().map(|m| m.key.as_deref()).collect();
    let headers = messages
        .iter()
        .map(|m| headers_json(&m.headers))
        .collect::<Result<Vec<String>, StoreError>>()?;
    let bodies: Vec<&[u8]> = messages.iter().map(|m| m.body.as_slice()).collect();
    sqlx::query(
        "INSERT INTO eventhost.deliveries (sink, message_id, subscription, ordering_key, headers, body)
         SELECT sink, message_id, $1, ordering_key, headers::jsonb, body
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[])
              WITH ORDINALITY AS m(sink, message_id, ordering_key, headers, body, n)
         ORDER BY n
         ON CONFLICT (sink, message_id) DO NOTHING",
    )
    .bind(subscription)
    .bind(sinks)
    .bind(ids)
    .bind(keys)
    .bind(headers)
    .bind(bodies)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `WHERE` conditions selecting `selection` among rows whose status is one of `statuses`.
fn push_selection(
    query: &mut QueryBuilder<Postgres>,
    selection: DeliverySelection<'_>,
    statuses: &[DeliveryStatus],
) {
    let statuses: Vec<&'static str> = statuses.iter().map(|status| status.as_str()).collect();
    query
        .push(" WHERE status = ANY(")
        .push_bind(statuses)
        .push(")");
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

impl DeliveryStore for PgStore {
    async fn pending_deliveries(
        &self,
        sink: &str,
        limit: usize,
        bytes: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM eventhost.deliveries WHERE sink = $1 AND status = 'pending' ORDER BY id LIMIT $2"
        ))
        .bind(sink)
        .bind(sql_limit(limit));
        collect_until(
            query.fetch(self.pool()),
            bytes,
            delivery_from_row,
            |delivery| delivery.message.size() as usize,
        )
        .await
    }

    async fn record_attempt(&self, id: i64, outcome: &AttemptOutcome) -> Result<bool, StoreError> {
        let query = match outcome {
            AttemptOutcome::Delivered => sqlx::query(
                "UPDATE eventhost.deliveries SET status = 'delivered', attempts = attempts + 1,
                     last_error = NULL, finished_at = now()
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(id),
            AttemptOutcome::Retry { error, at } => sqlx::query(
                "UPDATE eventhost.deliveries SET attempts = attempts + 1, last_error = $2,
                     next_attempt_at = $3
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(id)
            .bind(error)
            .bind(*at),
            AttemptOutcome::Dead { error } => sqlx::query(
                "UPDATE eventhost.deliveries SET status = 'dead', attempts = attempts + 1,
                     last_error = $2, finished_at = now()
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(id)
            .bind(error),
        };
        Ok(query.execute(self.pool()).await?.rows_affected() == 1)
    }

    async fn record_delivered(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE eventhost.deliveries SET status = 'delivered', attempts = attempts + 1,
                 last_error = NULL, finished_at = now()
             WHERE id = ANY($1) AND status = 'pending'",
        )
        .bind(ids)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        let mut sql = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            columns!(),
            " FROM eventhost.deliveries WHERE true"
        ));
        if let Some(sink) = &query.sink {
            sql.push(" AND sink = ").push_bind(sink.clone());
        }
        if let Some(status) = query.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .push_bind(sql_limit(query.limit));
        let rows = sql.build().fetch_all(self.pool()).await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn retry_deliveries(&self, selection: DeliverySelection<'_>) -> Result<u64, StoreError> {
        let mut sql = QueryBuilder::<Postgres>::new(
            "UPDATE eventhost.deliveries
             SET status = 'pending', attempts = 0, finished_at = NULL, next_attempt_at = now()",
        );
        push_selection(
            &mut sql,
            selection,
            &[DeliveryStatus::Dead, DeliveryStatus::Skipped],
        );
        let done = sql.build().execute(self.pool()).await?.rows_affected();
        if done > 0 {
            self.signal_enqueued();
        }
        Ok(done)
    }

    async fn skip_deliveries(&self, selection: DeliverySelection<'_>) -> Result<u64, StoreError> {
        let mut sql = QueryBuilder::<Postgres>::new(
            "UPDATE eventhost.deliveries SET status = 'skipped', finished_at = now()",
        );
        push_selection(
            &mut sql,
            selection,
            &[DeliveryStatus::Pending, DeliveryStatus::Dead],
        );
        Ok(sql.build().execute(self.pool()).await?.rows_affected())
    }

    async fn prune_deliveries(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM eventhost.deliveries WHERE status = 'delivered' AND finished_at < $1",
        )
        .bind(before)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}
