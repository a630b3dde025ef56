//! Members and subscription leases on PostgreSQL: see `store::leases` and
//! `migrations/postgres/0009_leases.sql`.

use std::time::Duration;

use sqlx::Row;
use sqlx::types::Json;
use uuid::Uuid;

use super::PgStore;
use crate::leases::{DaemonRecord, Lease, Member, Peer, Plugins, Renewal};
use crate::{Checkpoint, StoreError, from_sql_int};

/// Whether the lease of subscription row `s` is free: never held, released, expired, running
/// longer than any daemon takes a lease for (`--lease-ttl` is at most 3600 s: such a lease
/// was edited by hand, or the server's clock was set back), or held by an owner that is no
/// live member (a row edited by hand; a daemon renews its membership with its leases).
macro_rules! free_lease {
    () => {
        "(s.lease_expires_at IS NULL OR s.lease_expires_at <= now()
          OR s.lease_expires_at > now() + make_interval(secs => 3600)
          OR NOT EXISTS (SELECT 1 FROM eventhost.daemons d
                         WHERE d.id = s.owner AND d.expires_at > now()))"
    };
}

impl PgStore {
    /// Joins or stays a member for `ttl` more, running `plugins`; frees the leases of peers
    /// that ran on this machine and whose process `is_alive` says is gone, and renews the
    /// leases this daemon still holds: those that expired meanwhile are not renewed, whoever
    /// holds them now.
    pub async fn renew_leases(
        &self,
        member: &Member,
        plugins: &Plugins,
        ttl: Duration,
        is_alive: impl Fn(u32) -> bool,
    ) -> Result<Renewal, StoreError> {
        let mut tx = self.pool().begin().await?;
        // A peer frozen inside a transaction (a paused process) holds its row locks until the
        // server ends its session: never wait for them longer than this, and skip them where
        // another pass will do.
        sqlx::query("SET LOCAL lock_timeout = '1s'")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO eventhost.daemons (id, host, boot_id, pid, version, expires_at, plugins)
             VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7)
             ON CONFLICT (id) DO UPDATE
                 SET expires_at = excluded.expires_at, plugins = excluded.plugins",
        )
        .bind(member.id)
        .bind(&member.host)
        .bind(&member.boot_id)
        .bind(i64::from(member.pid))
        .bind(&member.version)
        .bind(ttl.as_secs_f64())
        .bind(Json(plugins))
        .execute(&mut *tx)
        .await?;
        let mut gone = Vec::new();
        if member.boot_id.is_some() {
            let peers = sqlx::query(
                "SELECT id, host, boot_id, pid, version FROM eventhost.daemons
                 WHERE id <> $1 AND host = $2 AND boot_id = $3 AND expires_at > now()",
            )
            .bind(member.id)
            .bind(&member.host)
            .bind(&member.boot_id)
            .fetch_all(&mut *tx)
            .await?;
            for peer in &peers {
                let pid = u32::try_from(peer.try_get::<i64, _>("pid")?).unwrap_or(0);
                if !is_alive(pid) {
                    gone.push(Member {
                        id: peer.try_get("id")?,
                        host: peer.try_get("host")?,
                        boot_id: peer.try_get("boot_id")?,
                        pid,
                        version: peer.try_get("version")?,
                    });
                }
            }
            if !gone.is_empty() {
                let ids: Vec<Uuid> = gone.iter().map(|peer| peer.id).collect();
                sqlx::query(
                    "UPDATE eventhost.subscriptions SET lease_expires_at = now()
                     WHERE name IN (SELECT name FROM eventhost.subscriptions
                                    WHERE owner = ANY($1) AND lease_expires_at > now()
                                    FOR UPDATE SKIP LOCKED)",
                )
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "DELETE FROM eventhost.daemons
                     WHERE id IN (SELECT id FROM eventhost.daemons WHERE id = ANY($1)
                                  FOR UPDATE SKIP LOCKED)",
                )
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(
            "DELETE FROM eventhost.daemons
             WHERE id IN (SELECT id FROM eventhost.daemons WHERE expires_at <= now()
                          FOR UPDATE SKIP LOCKED)",
        )
        .execute(&mut *tx)
        .await?;
        let held = sqlx::query_scalar(
            "UPDATE eventhost.subscriptions
             SET lease_expires_at = now() + make_interval(secs => $2)
             WHERE owner = $1 AND lease_expires_at > now()
             RETURNING name",
        )
        .bind(member.id)
        .bind(ttl.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        let peers = sqlx::query(
            "SELECT id, host, pid, plugins FROM eventhost.daemons
             WHERE id <> $1 AND expires_at > now()
             ORDER BY started_at, id",
        )
        .bind(member.id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| {
            Ok(Peer {
                id: row.try_get("id")?,
                host: row.try_get("host")?,
                pid: u32::try_from(row.try_get::<i64, _>("pid")?).unwrap_or(0),
                plugins: row.try_get::<Json<Plugins>, _>("plugins")?.0,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        tx.commit().await?;
        Ok(Renewal { held, gone, peers })
    }

    /// Takes up to `limit` of the `wanted` subscriptions whose leases nobody holds (never
    /// held, released, or expired), for `ttl`. Each take raises the subscription's epoch and
    /// revision. Subscriptions another daemon is taking at the same instant are skipped,
    /// not waited for.
    pub async fn acquire_leases(
        &self,
        owner: Uuid,
        wanted: &[String],
        limit: usize,
        ttl: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        if wanted.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(concat!(
            "UPDATE eventhost.subscriptions s
             SET owner = $1, epoch = epoch + 1, revision = revision + 1,
                 lease_expires_at = now() + make_interval(secs => $4), status = 'running',
                 updated_at = now()
             WHERE name IN (
                     SELECT name FROM eventhost.subscriptions s
                     WHERE name = ANY($2) AND ",
            free_lease!(),
            "
                     ORDER BY random()
                     LIMIT $3
                     FOR UPDATE SKIP LOCKED)
               AND ",
            free_lease!(),
            "
             RETURNING name, epoch, checkpoint_tx, checkpoint_position, revision",
        ))
        .bind(owner)
        .bind(wanted)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(ttl.as_secs_f64())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Lease {
                    subscription: row.try_get("name")?,
                    epoch: from_sql_int(row.try_get("epoch")?),
                    checkpoint: Checkpoint::new(
                        from_sql_int(row.try_get("checkpoint_tx")?),
                        from_sql_int(row.try_get("checkpoint_position")?),
                    ),
                    revision: from_sql_int(row.try_get("revision")?),
                })
            })
            .collect()
    }

    /// Gives up `owner`'s leases of `subscriptions` at once (their workers have stopped),
    /// for any member to take.
    pub async fn release_leases(
        &self,
        owner: Uuid,
        subscriptions: &[String],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE eventhost.subscriptions SET owner = NULL, lease_expires_at = NULL
             WHERE owner = $1 AND name = ANY($2)",
        )
        .bind(owner)
        .bind(subscriptions)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Leaves: gives up every lease `owner` holds and its membership.
    pub async fn leave(&self, owner: Uuid) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "UPDATE eventhost.subscriptions SET owner = NULL, lease_expires_at = NULL
             WHERE owner = $1",
        )
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM eventhost.daemons WHERE id = $1")
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live members, oldest first, each with the subscriptions it holds.
    pub async fn daemons(&self) -> Result<Vec<DaemonRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.host, d.pid, d.version, d.started_at, d.expires_at, d.plugins,
                    COALESCE(array_agg(s.name ORDER BY s.name) FILTER (WHERE s.name IS NOT NULL),
                             '{}') AS subscriptions
             FROM eventhost.daemons d
             LEFT JOIN eventhost.subscriptions s
                    ON s.owner = d.id AND s.lease_expires_at > now()
             WHERE d.expires_at > now()
             GROUP BY d.id
             ORDER BY d.started_at, d.id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DaemonRecord {
                    id: row.try_get("id")?,
                    host: row.try_get("host")?,
                    pid: u32::try_from(row.try_get::<i64, _>("pid")?).unwrap_or(0),
                    version: row.try_get("version")?,
                    started_at: row.try_get("started_at")?,
                    expires_at: row.try_get("expires_at")?,
                    subscriptions: row.try_get("subscriptions")?,
                    plugins: row.try_get::<Json<Plugins>, _>("plugins")?.0,
                })
            })
            .collect()
    }
}
