//! Several daemons on one PostgreSQL database: each subscription runs on the one daemon that
//! holds its lease (`store::leases`).
//!
//! One keeper task per daemon renews its membership and its leases every third of the TTL
//! (one transaction), and hands subscriptions to their workers: each worker waits for a
//! tenure ([`Holding::next`]), works until the tenure ends, and gives the lease back. The
//! keeper takes free leases up to the daemon's fair share, `ceil(subscriptions / members)`,
//! and hands back what passes it, so running daemons share the work and a new one gets its
//! part within a few renewals. A lease it hands back is released only after its worker has
//! stopped, so no subscription ever runs on two daemons at once; and a worker that somehow
//! outlives its lease (a paused process) cannot commit: every commit checks the lease
//! (`BatchCommit::lease`), and a take raises the subscription's revision.
//!
//! A killed daemon's leases expire after the TTL; one that ran on this machine is noticed
//! sooner, as soon as its process is gone ([`process_alive`]), so a restarted daemon resumes
//! at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use eventhost_domain::retry::jittered_backoff;
use eventhost_runtime::PluginInfo;
use eventhost_store::{Member, Peer, PgStore, Plugins, Renewal, StoreError, host_name};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use uuid::Uuid;

use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::worker::{Resume, Worker, record_stopped};

/// The default lease TTL: how long a killed daemon's subscriptions wait for another daemon.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// What a worker may do: wait, or run from where a lease it holds starts.
#[derive(Debug, Clone, Copy)]
enum Tenure {
    Free,
    Held { epoch: u64, resume: Resume },
}

/// The keeper's view of one subscription's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Not this daemon's.
    Free,
    Held,
    /// Being handed back: released once its worker has stopped.
    Releasing,
}

struct Entry {
    /// Tells apart a subscription's successive workers (a changed filter starts a new one).
    registration: u64,
    hold: Hold,
    /// Whether its worker is in a tenure (it may still be finishing one the keeper ended).
    running: bool,
    tenure: watch::Sender<Tenure>,
}

struct Shared {
    store: PgStore,
    member: Member,
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
    registrations: AtomicU64,
    /// What this daemon runs, as its peers see it ([`plugin_label`]).
    plugins: Mutex<Plugins>,
    wake: Notify,
}

impl Shared {
    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The daemon's membership and leases.
pub(crate) struct Leases {
    shared: Arc<Shared>,
    stop: ShutdownTrigger,
    keeper: JoinHandle<()>,
}

impl Leases {
    /// Starts keeping leases for `store`'s subscriptions, as a member that renews every
    /// third of `ttl`.
    pub(crate) fn start(store: PgStore, ttl: Duration) -> Self {
        let member = Member {
            id: Uuid::now_v7(),
            host: host_name(),
            boot_id: boot_id(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        info!(daemon = %member.id, host = %member.host, lease_ttl_seconds = ttl.as_secs_f64(), "joining the daemons on this database");
        let shared = Arc::new(Shared {
            store,
            member,
            ttl,
            entries: Mutex::new(HashMap::new()),
            registrations: AtomicU64::new(0),
            plugins: Mutex::new(Plugins::new()),
            wake: Notify::new(),
        });
        let (stop, stopping) = ShutdownTrigger::new();
        let keeper = tokio::spawn(keep(Arc::clone(&shared), stopping));
        Self {
            shared,
            stop,
            keeper,
        }
    }

    /// This daemon's id, which its commits name.
    pub(crate) fn owner(&self) -> Uuid {
        self.shared.member.id
    }

    /// Tells the peers (at the next renewal) that this daemon runs `info`'s version.
    pub(crate) fn plugin_installed(&self, info: &PluginInfo) {
        self.shared
            .plugins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(info.name.clone(), plugin_label(info));
    }

    /// Tells the peers (at the next renewal) that this daemon no longer runs `plugin`.
    pub(crate) fn plugin_removed(&self, plugin: &str) {
        self.shared
            .plugins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(plugin);
    }

    /// Registers the worker of subscription `name` (durable name): the keeper will try to
    /// take its lease.
    pub(crate) fn holding(&self, name: &str) -> Holding {
        let registration = self.shared.registrations.fetch_add(1, Ordering::Relaxed) + 1;
        let (sender, tenure) = watch::channel(Tenure::Free);
        self.shared.entries().insert(
            name.to_owned(),
            Entry {
                registration,
                hold: Hold::Free,
                running: false,
                tenure: sender,
            },
        );
        self.shared.wake.notify_one();
        Holding {
            shared: Arc::clone(&self.shared),
            name: name.to_owned(),
            registration,
            tenure,
            last_epoch: 0,
        }
    }

    /// Stops the keeper and leaves: every lease still held is released. Called once every
    /// worker has stopped.
    pub(crate) async fn leave(self) {
        self.stop.trigger();
        if let Err(error) = self.keeper.await {
            warn!(%error, "the lease keeper ended abnormally");
        }
        if let Err(error) = self.shared.store.leave(self.shared.member.id).await {
            warn!(%error, "cannot release this daemon's leases: other daemons take them when they expire");
        }
    }
}

/// A worker's side of its subscription's lease.
pub(crate) struct Holding {
    shared: Arc<Shared>,
    name: String,
    registration: u64,
    tenure: watch::Receiver<Tenure>,
    /// The epoch of the last tenure this worker ran.
    last_epoch: u64,
}

impl Holding {
    /// Waits for a new tenure and returns where it starts; `None` at shutdown.
    async fn next(&mut self, shutdown: &mut Shutdown) -> Option<Resume> {
        loop {
            let tenure = *self.tenure.borrow_and_update();
            if let Tenure::Held { epoch, resume } = tenure
                && epoch > self.last_epoch
            {
                // Taken under the keeper's lock, so that the keeper never hands back, as idle,
                // a tenure that starts.
                let mut entries = self.shared.entries();
                if let Some(entry) = self.own_entry(&mut entries)
                    && entry.hold == Hold::Held
                {
                    entry.running = true;
                    drop(entries);
                    self.last_epoch = epoch;
                    return Some(resume);
                }
            }
            tokio::select! {
                changed = self.tenure.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                () = shutdown.requested() => return None,
            }
        }
    }

    /// Completes when the keeper ends the tenure (the lease was lost, or is handed back).
    async fn ended(&mut self) {
        while !matches!(*self.tenure.borrow_and_update(), Tenure::Free) {
            if self.tenure.changed().await.is_err() {
                return;
            }
        }
    }

    /// The worker has stopped: gives the lease back (unless a commit found it gone) so that
    /// any daemon may take it at once.
    async fn stopped(&mut self, lost: bool) {
        let held = self
            .own_entry(&mut self.shared.entries())
            .is_some_and(|entry| entry.hold != Hold::Free);
        if held && !lost {
            let released = self
                .shared
                .store
                .release_leases(self.shared.member.id, std::slice::from_ref(&self.name))
                .await;
            if let Err(error) = released {
                warn!(subscription = %self.name, %error, "cannot release the lease: it expires on its own");
            }
        }
        if let Some(entry) = self.own_entry(&mut self.shared.entries()) {
            entry.hold = Hold::Free;
            entry.running = false;
            entry.tenure.send_replace(Tenure::Free);
        }
        self.tenure.mark_unchanged();
        self.shared.wake.notify_one();
    }

    fn own_entry<'a>(&self, entries: &'a mut HashMap<String, Entry>) -> Option<&'a mut Entry> {
        entries
            .get_mut(&self.name)
            .filter(|entry| entry.registration == self.registration)
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let mut entries = self.shared.entries();
        if entries
            .get(&self.name)
            .is_some_and(|entry| entry.registration == self.registration)
        {
            entries.remove(&self.name);
        }
    }
}

/// Runs `worker` for each tenure `holding` gets, until shutdown; returns where it stopped.
pub(crate) async fn run_leased(mut worker: Worker, mut holding: Holding) -> Resume {
    let mut shutdown = worker.shutdown.clone();
    while let Some(resume) = holding.next(&mut shutdown).await {
        worker.restart_at(resume);
        let (trigger, tenure) = ShutdownTrigger::new();
        worker.shutdown = tenure;
        {
            let work = worker.work();
            tokio::pin!(work);
            let mut asked = false;
            loop {
                tokio::select! {
                    () = &mut work => break,
                    () = shutdown.requested(), if !asked => {
                        asked = true;
                        trigger.trigger();
                    }
                    () = holding.ended(), if !asked => {
                        asked = true;
                        trigger.trigger();
                    }
                }
            }
        }
        if shutdown.is_requested() {
            if !worker.lease_lost {
                record_stopped(&worker.store, &worker.name).await;
            }
            holding.stopped(worker.lease_lost).await;
            break;
        }
        holding.stopped(worker.lease_lost).await;
    }
    worker.shutdown = shutdown;
    worker.resume()
}

/// The keeper: renews, then balances, every third of the TTL (jittered) or when a worker
/// comes or goes.
async fn keep(shared: Arc<Shared>, mut stop: Shutdown) {
    let tick = shared.ttl / 3;
    // When the last renewal that went through was sent: the leases it renewed last until
    // at least then plus the TTL, by the database's clock.
    let mut renewed: Option<Instant> = None;
    let mut failing = false;
    // Differences with peers already told, so that each is told once.
    let mut told = HashSet::new();
    while !stop.is_requested() {
        let sent = Instant::now();
        let plugins = shared
            .plugins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match shared
            .store
            .renew_leases(&shared.member, &plugins, shared.ttl, process_alive)
            .await
        {
            Ok(renewal) => {
                if failing {
                    info!("lease renewal works again");
                    failing = false;
                }
                renewed = Some(sent);
                for difference in differences(&plugins, &renewal.peers) {
                    if told.insert(difference.clone()) {
                        warn!(
                            plugin = %difference.plugin, here = %difference.here,
                            peer = %difference.peer, peer_runs = %difference.theirs,
                            "another daemon runs another version of this plugin: deploy the same file to every daemon (a subscription whose filter differs restarts from its start whenever either version is installed)"
                        );
                    }
                }
                balance(&shared, renewal).await;
            }
            Err(error) => {
                if !failing {
                    warn!(%error, "cannot renew this daemon's leases; retrying");
                    failing = true;
                }
                if renewed.is_none_or(|at| at.elapsed() >= shared.ttl) {
                    end_all(&shared, &error);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(jittered_backoff(tick, 1, tick)) => {}
            () = shared.wake.notified() => {}
            () = stop.requested() => {}
        }
    }
}

/// After a renewal: ends the tenures whose leases were lost, hands back what passes the
/// fair share, and takes free leases up to it.
async fn balance(shared: &Shared, renewal: Renewal) {
    for peer in &renewal.gone {
        info!(daemon = %peer.id, pid = peer.pid, "a daemon on this machine is gone: its leases are free now");
    }
    let (free, room, strays, idle) = {
        let mut entries = shared.entries();
        let held: std::collections::HashSet<&str> =
            renewal.held.iter().map(String::as_str).collect();
        // Leases the database says this daemon holds and it never took (a row edited by
        // hand): nobody would run them, so they go back.
        let strays: Vec<String> = renewal
            .held
            .iter()
            .filter(|name| {
                entries
                    .get(name.as_str())
                    .is_none_or(|entry| entry.hold == Hold::Free)
            })
            .cloned()
            .collect();
        for (name, entry) in entries.iter_mut() {
            if entry.hold != Hold::Free && !held.contains(name.as_str()) {
                info!(subscription = %name, "lease lost (it expired, or another daemon took it): stopping the subscription here");
                entry.hold = Hold::Free;
                entry.tenure.send_replace(Tenure::Free);
            }
        }
        let fair = entries.len().div_ceil(renewal.members() as usize);
        let count = |hold: Hold| entries.values().filter(|entry| entry.hold == hold).count();
        let (kept, releasing) = (count(Hold::Held), count(Hold::Releasing));
        let mut idle = Vec::new();
        for (name, entry) in entries
            .iter_mut()
            .filter(|(_, entry)| entry.hold == Hold::Held)
            .take(kept.saturating_sub(fair))
        {
            info!(subscription = %name, members = renewal.members(), "handing the subscription over to balance the daemons");
            entry.tenure.send_replace(Tenure::Free);
            if entry.running {
                // Released once its worker has stopped (`Holding::stopped`).
                entry.hold = Hold::Releasing;
            } else {
                // Its worker never picked the tenure up: nothing runs, release it now.
                entry.hold = Hold::Free;
                idle.push(name.clone());
            }
        }
        let free: Vec<String> = entries
            .iter()
            .filter(|(_, entry)| entry.hold == Hold::Free && !entry.running)
            .map(|(name, _)| name.clone())
            .collect();
        (free, fair.saturating_sub(kept + releasing), strays, idle)
    };
    if !idle.is_empty()
        && let Err(error) = shared.store.release_leases(shared.member.id, &idle).await
    {
        warn!(%error, "cannot release the leases handed over: they expire on their own");
    }
    if !strays.is_empty() {
        warn!(subscriptions = ?strays, "releasing leases this daemon holds but never took (edited by hand?)");
        if let Err(error) = shared.store.release_leases(shared.member.id, &strays).await {
            warn!(%error, "cannot release them: they expire on their own");
        }
    }
    if free.is_empty() || room == 0 {
        return;
    }
    let leases = match shared
        .store
        .acquire_leases(shared.member.id, &free, room, shared.ttl)
        .await
    {
        Ok(leases) => leases,
        Err(error) => {
            warn!(%error, "cannot take leases; retrying");
            return;
        }
    };
    let mut unwanted = Vec::new();
    {
        let mut entries = shared.entries();
        for lease in leases {
            match entries.get_mut(&lease.subscription) {
                Some(entry) if entry.hold == Hold::Free && !entry.running => {
                    info!(subscription = %lease.subscription, epoch = lease.epoch, "lease taken: running the subscription here");
                    entry.hold = Hold::Held;
                    entry.tenure.send_replace(Tenure::Held {
                        epoch: lease.epoch,
                        resume: Resume {
                            checkpoint: lease.checkpoint,
                            revision: lease.revision,
                        },
                    });
                }
                _ => unwanted.push(lease.subscription),
            }
        }
    }
    if !unwanted.is_empty()
        && let Err(error) = shared
            .store
            .release_leases(shared.member.id, &unwanted)
            .await
    {
        warn!(%error, "cannot release leases no worker wants: they expire on their own");
    }
}

/// The renewals failed for a whole TTL: the leases may have expired and been taken, so every
/// tenure ends (their commits would fail anyway).
fn end_all(shared: &Shared, error: &StoreError) {
    for (name, entry) in shared.entries().iter_mut() {
        if entry.hold != Hold::Free {
            warn!(subscription = %name, %error, "lease not renewed within its TTL: stopping the subscription here");
            entry.hold = Hold::Free;
            entry.tenure.send_replace(Tenure::Free);
        }
    }
}

/// How peers tell versions of a plugin apart: its declared version and a fingerprint of
/// its subscriptions (names, filters, batch sizes, start), which is what two daemons must
/// agree on.
fn plugin_label(info: &PluginInfo) -> String {
    let described = serde_json::to_vec(&info.subscriptions).unwrap_or_default();
    let digest = format!("{:x}", Sha256::digest(described));
    format!("{} #{}", info.version, &digest[..8])
}

/// A plugin that this daemon and a peer both run, in different versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Difference {
    plugin: String,
    here: String,
    /// `<host> pid <pid> (<id>)`.
    peer: String,
    theirs: String,
}

/// The plugins `mine` that a peer runs in another version.
fn differences(mine: &Plugins, peers: &[Peer]) -> Vec<Difference> {
    let mut found = Vec::new();
    for peer in peers {
        for (plugin, here) in mine {
            if let Some(theirs) = peer.plugins.get(plugin)
                && theirs != here
            {
                found.push(Difference {
                    plugin: plugin.clone(),
                    here: here.clone(),
                    peer: format!("{} pid {} ({})", peer.host, peer.pid, peer.id),
                    theirs: theirs.clone(),
                });
            }
        }
    }
    found
}

/// The machine's boot (Linux); `None` where it cannot be told, and then no peer is ever
/// taken for gone before its leases expire.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
}

/// Whether process `pid` of this machine runs (Linux's `/proc`, which `boot_id` needs too).
fn process_alive(pid: u32) -> bool {
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugins(entries: &[(&str, &str)]) -> Plugins {
        entries
            .iter()
            .map(|(name, label)| ((*name).to_owned(), (*label).to_owned()))
            .collect()
    }

    #[test]
    fn only_a_plugin_both_run_in_another_version_is_a_difference() {
        let mine = plugins(&[("counter", "0.1.0 #aaaa"), ("totals", "0.2.0 #bbbb")]);
        let peers = [
            Peer {
                id: Uuid::nil(),
                host: "a".into(),
                pid: 1,
                plugins: plugins(&[("counter", "0.1.0 #aaaa"), ("other", "1.0.0 #cccc")]),
            },
            Peer {
                id: Uuid::nil(),
                host: "b".into(),
                pid: 2,
                plugins: plugins(&[("totals", "0.2.0 #dddd")]),
            },
        ];
        let found = differences(&mine, &peers);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].plugin.as_str(), found[0].theirs.as_str()),
            ("totals", "0.2.0 #dddd")
        );
        assert!(found[0].peer.starts_with("b pid 2"));
    }

    #[test]
    fn a_label_changes_with_the_subscriptions_not_only_the_version() {
        let mut info = PluginInfo {
            name: "p".into(),
            version: "1.0.0".into(),
            subscriptions: vec![eventhost_runtime::SubscriptionSpec {
                name: "all".into(),
                aggregate_types: vec![],
                event_types: vec![],
                batch_size: 100,
                start_from: eventhost_runtime::StartFrom::Beginning,
            }],
        };
        let before = plugin_label(&info);
        assert!(before.starts_with("1.0.0 #"));
        info.subscriptions[0].event_types = vec!["order.paid".into()];
        assert_ne!(plugin_label(&info), before);
    }
}
