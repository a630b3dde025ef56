//! Several daemons on one PostgreSQL database: who is a member, and which daemon runs which
//! subscription (see `migrations/postgres/0009_leases.sql`).
//!
//! A daemon joins by writing its [`Member`] row and stays a member while it renews it; it
//! runs a subscription only while it holds the subscription's lease. Every time is the
//! database's (`now()`): the daemons' own clocks may disagree, jump or stop.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::Checkpoint;

/// A daemon as its peers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Made at start: a restarted daemon is a new member.
    pub id: Uuid,
    /// The machine's host name.
    pub host: String,
    /// The machine's boot (Linux: `/proc/sys/kernel/random/boot_id`): with `host`, tells a
    /// daemon that its peer ran on this very machine, so that a dead process id means a dead
    /// peer.
    pub boot_id: Option<String>,
    pub pid: u32,
    /// The eventhost version it runs.
    pub version: String,
}

/// A subscription lease just taken: where the subscription's worker starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub subscription: String,
    /// Raised by every new owner.
    pub epoch: u64,
    pub checkpoint: Checkpoint,
    /// The subscription's revision after the take (the take raises it).
    pub revision: u64,
}

/// What one renewal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The subscriptions whose leases this daemon still holds, now renewed.
    pub held: Vec<String>,
    /// Members that ran on this machine under a process id that `is_alive` said is gone:
    /// their leases were freed at once instead of at their expiry.
    pub gone: Vec<Member>,
    /// The other live members and the plugins each runs.
    pub peers: Vec<Peer>,
}

impl Renewal {
    /// Live members, this daemon included.
    pub fn members(&self) -> u64 {
        self.peers.len() as u64 + 1
    }
}

/// Plugin name to `<version> #<fingerprint>` (see `dispatch::leases`).
pub type Plugins = BTreeMap<String, String>;

/// Another live member, as one renewal saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: Uuid,
    pub host: String,
    pub pid: u32,
    pub plugins: Plugins,
}

/// A live daemon and what it holds, for `eventhost daemons list`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DaemonRecord {
    #[schema(value_type = String)]
    pub id: Uuid,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started_at: DateTime<Utc>,
    /// When it stops being a member unless it renews.
    pub expires_at: DateTime<Utc>,
    /// The subscriptions whose unexpired leases it holds, by name.
    pub subscriptions: Vec<String>,
    /// The plugins it runs: name to `<version> #<fingerprint of its subscriptions>`.
    #[schema(value_type = Object)]
    pub plugins: Plugins,
}

/// The machine's host name, as daemons name themselves to each other and in lock files.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
