//! What wakes an idle subscription. One task per dispatcher, whatever the number of
//! subscriptions, looks at the store ([`Store::pulse`]: the head of the log and the operators'
//! control counter, one query) once a poll interval and whenever a PostgreSQL notification
//! hints that something changed, and wakes the subscriptions only when the pulse did change.
//! Appends made by this process to SQLite wake them directly. An idle subscription waits on
//! the wake-ups alone, so idle costs nothing per subscription.
//!
//! A notification is only a hint: any role may `NOTIFY eventhost`. Hints that arrive while
//! the task looks are taken together, and hint-driven looks are at least [`HINT_GAP`] apart,
//! so a flood of them costs one query at a time; hints that arrive while a look waits for
//! its turn are answered by it. While hints prove true, a hint with no look pending wakes
//! the subscriptions at once and the look follows (an append's latency waits neither for
//! the look nor for the gap; a change the look sees wakes them again, see
//! [`Watcher::look`]); this process's own appends always wake them at once;
//! once [`FALSE_ALARMS`] hints in one [`ALARM_WINDOW`] found nothing new, hints wake no one
//! until their look confirms a change, for the rest of that window. So a flood of forged
//! notifications reaches the subscriptions at most [`FALSE_ALARMS`] times a window. When a
//! hint finds nothing new (on PostgreSQL an older transaction may still hold committed events
//! back), the task looks again at growing intervals up to [`MAX_RECHECK_DELAY`].
//!
//! Notifications sent while the listening connection is down are lost: once it listens
//! again (it tries after a short pause that grows, up to [`MAX_LISTEN_DELAY`], while the
//! store is unreachable), and whenever an outage ends (see `outage`), every subscription is
//! woken to look for itself.
//!
//! Wake-ups are watch channels' version counters: a receiver never misses that something
//! changed, and however many changes come meanwhile it wakes once.

use std::time::Duration;

use eventhost_store::{Notifications, Pulse, Received, Store, StoreError};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::held_back::HeldBack;
use crate::outage::{self, Outages};
use crate::shutdown::Shutdown;

/// The least time between two looks prompted by notifications.
const HINT_GAP: Duration = Duration::from_millis(2);

/// Hints that may find nothing new in one [`ALARM_WINDOW`] before hints must be confirmed
/// by a look before they wake anyone.
const FALSE_ALARMS: u32 = 2;

/// See [`FALSE_ALARMS`].
const ALARM_WINDOW: Duration = Duration::from_secs(2);

/// The longest pause between looks after a hint that found nothing new; then the poll
/// takes over.
const MAX_RECHECK_DELAY: Duration = Duration::from_millis(256);

/// The longest pause before listening again after the listening connection failed.
const MAX_LISTEN_DELAY: Duration = Duration::from_secs(1);

/// What a subscription waits on.
#[derive(Clone)]
pub(crate) struct Wakeups {
    /// Changes whenever events may be readable or a checkpoint may have moved.
    pub(crate) any: watch::Receiver<u64>,
    /// Changes after an operator's request (a reset, a replay), and whenever notifications
    /// may have been lost.
    pub(crate) control: watch::Receiver<u64>,
    /// Whether the store is reachable.
    pub(crate) outages: Outages,
}

/// Starts listening and polling every `poll`, until `shutdown`; each poll also looks for
/// events `held_back`.
pub(crate) async fn listen(
    store: &Store,
    poll: Duration,
    held_back: HeldBack,
    shutdown: Shutdown,
) -> Result<Wakeups, StoreError> {
    let source = match store {
        Store::Sqlite(store) => Source::Appends(store.appends()),
        Store::Postgres(store) => {
            Source::Listener(store.notifications().await?, Some(store.appends()))
        }
    };
    let last = store.pulse().await?;
    let (any, any_receiver) = watch::channel(0);
    let (control, control_receiver) = watch::channel(0);
    let outages = Outages::new();
    let watcher = Watcher {
        store: store.clone(),
        last,
        signals: Signals { any, control },
        trust: Trust::new(),
        held_back,
        outages: outages.clone(),
    };
    tokio::spawn(watcher.run(source, poll, shutdown));
    Ok(Wakeups {
        any: any_receiver,
        control: control_receiver,
        outages,
    })
}

/// Where this process hears of changes without polling.
enum Source {
    /// Appends made by this process to SQLite: certain, readable at once.
    Appends(watch::Receiver<u64>),
    /// PostgreSQL notifications, from any process: hints; and the appends this process
    /// made, heard before their notification (certain, but maybe not readable yet).
    Listener(Notifications, Option<watch::Receiver<u64>>),
    /// Nothing more to hear: the poll alone finds changes.
    Closed,
}

enum Heard {
    Appended,
    AppendedHere,
    Hint,
    /// The listener lost its connection: notifications are lost until it listens again.
    Disconnected,
    /// The listener listens again, on a new connection.
    Listening,
    Lost(StoreError),
    Closed,
}

impl Source {
    async fn next(&mut self) -> Heard {
        match self {
            Source::Appends(appends) => match appends.changed().await {
                Ok(()) => Heard::Appended,
                Err(_) => Heard::Closed,
            },
            Source::Listener(listener, appends) => {
                let appended = async {
                    match appends {
                        Some(receiver) => receiver.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    received = listener.recv() => match received {
                        Ok(Received::Notification) => {
                            listener.drain();
                            Heard::Hint
                        }
                        Ok(Received::Disconnected) => Heard::Disconnected,
                        Ok(Received::Listening) => Heard::Listening,
                        Err(error) => Heard::Lost(error),
                    },
                    open = appended => {
                        if open {
                            Heard::AppendedHere
                        } else {
                            *appends = None;
                            Heard::Hint
                        }
                    }
                }
            }
            Source::Closed => std::future::pending().await,
        }
    }
}

struct Signals {
    any: watch::Sender<u64>,
    control: watch::Sender<u64>,
}

impl Signals {
    fn bump(sender: &watch::Sender<u64>) {
        sender.send_modify(|count| *count = count.wrapping_add(1));
    }

    fn events(&self) {
        Self::bump(&self.any);
    }

    fn control(&self) {
        Self::bump(&self.control);
        Self::bump(&self.any);
    }
}

/// The one task that looks at the store for every subscription.
struct Watcher {
    store: Store,
    last: Pulse,
    signals: Signals,
    trust: Trust,
    held_back: HeldBack,
    outages: Outages,
}

/// Whether hints may wake the subscriptions before a look confirms them: until
/// [`FALSE_ALARMS`] of them found nothing in the current [`ALARM_WINDOW`].
struct Trust {
    window: Instant,
    false_alarms: u32,
}

impl Trust {
    fn new() -> Self {
        Self {
            window: Instant::now(),
            false_alarms: 0,
        }
    }

    fn hints_trusted(&mut self) -> bool {
        if self.window.elapsed() >= ALARM_WINDOW {
            *self = Self::new();
        }
        self.false_alarms < FALSE_ALARMS
    }

    fn false_alarm(&mut self) {
        self.false_alarms += 1;
    }
}

impl Watcher {
    async fn run(mut self, mut source: Source, poll: Duration, mut shutdown: Shutdown) {
        let mut ticks = tokio::time::interval(poll);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // After a hint that found nothing new: when to look again, and the delay after that.
        let mut recheck: Option<(Instant, Duration)> = None;
        // The look hints asked for: when it may run (HINT_GAP after the last one), and
        // whether a notification woke the subscriptions before it (it was a false alarm if
        // the look finds nothing new).
        let mut hinted: Option<Hinted> = None;
        let mut last_hinted_look: Option<Instant> = None;
        // After the listener failed to connect: how many times in a row, and when to try
        // again (it is not listened to until then).
        let mut listen_failures = 0;
        let mut listen_again: Option<Instant> = None;
        let mut outage_ends = self.outages.ends();
        loop {
            let recheck_at = recheck.map(|(at, _)| at);
            tokio::select! {
                _ = shutdown.requested() => return,
                _ = ticks.tick() => {
                    self.look().await;
                    if !self.outages.is_down() {
                        self.held_back.check(&self.store).await;
                    }
                }
                () = sleep_until(listen_again) => listen_again = None,
                _ = outage_ends.changed() => {
                    // Whatever the outage hid (notifications, operators' requests),
                    // everyone looks for themselves.
                    self.signals.control();
                }
                () = sleep_until(hinted.as_ref().map(|hinted| hinted.at)) => {
                    let woke_on_notification = hinted.take().is_some_and(|h| h.woke_on_notification);
                    last_hinted_look = Some(Instant::now());
                    recheck = if self.look().await {
                        None
                    } else {
                        if woke_on_notification {
                            self.trust.false_alarm();
                        }
                        let delay = Duration::from_millis(1);
                        Some((Instant::now() + delay, delay))
                    };
                }
                () = sleep_until(recheck_at) => {
                    recheck = match (self.look().await, recheck) {
                        (false, Some((_, delay))) if delay < MAX_RECHECK_DELAY => {
                            Some((Instant::now() + delay * 2, delay * 2))
                        }
                        _ => None,
                    };
                }
                heard = source.next(), if listen_again.is_none() => match heard {
                    Heard::Appended => self.signals.events(),
                    Heard::AppendedHere => {
                        // Committed, but an older transaction may hold it back: wake at
                        // once, and look (again until the look sees it).
                        self.signals.events();
                        Hinted::ask(&mut hinted, last_hinted_look, false);
                    }
                    Heard::Hint => {
                        // While a look is pending, it answers this hint too: one wake-up
                        // per look at most, so forged notifications wake no one more
                        // often than the looks that find them false.
                        if hinted.is_none() && self.trust.hints_trusted() {
                            self.signals.events();
                            Hinted::ask(&mut hinted, last_hinted_look, true);
                        } else {
                            Hinted::ask(&mut hinted, last_hinted_look, false);
                        }
                    }
                    Heard::Listening => {
                        // Notifications sent while it was away are lost: everyone looks
                        // for themselves (for events and for operators' requests).
                        debug!("listening again after a lost connection");
                        listen_failures = 0;
                        self.signals.control();
                        self.look().await;
                    }
                    Heard::Disconnected => self.connection_lost(None).await,
                    Heard::Lost(error) => {
                        // The listener connects again on its next recv, after a pause.
                        if listen_failures == 0 {
                            self.connection_lost(Some(error)).await;
                        } else {
                            self.outages.failed(&error);
                        }
                        listen_failures += 1;
                        let delay = outage::retry_delay(listen_failures, poll.min(MAX_LISTEN_DELAY));
                        listen_again = Some(Instant::now() + delay);
                    }
                    Heard::Closed => {
                        // Appends in this process no longer signal: the poll still finds them.
                        source = Source::Closed;
                    }
                },
            }
        }
    }

    /// The listening connection was lost (with `cause`, when the server said why): a
    /// connection made outside the pool tells at once whether the server is down (an outage,
    /// with the true cause, where the pool would only time out) or only this session ended.
    async fn connection_lost(&mut self, cause: Option<StoreError>) {
        let cause = cause.map_or_else(|| "the connection closed".to_owned(), |e| e.to_string());
        match self.store.probe().await {
            Ok(()) => info!(
                %cause,
                "the listening connection was lost (its session ended); listening again, and looking for what was missed"
            ),
            Err(error) => {
                if !self.outages.failed(&error) {
                    warn!(%error, %cause, "the listening connection was lost, and a new one fails");
                }
            }
        }
    }

    /// Reads the pulse and wakes the subscriptions if it changed; whether it changed.
    ///
    /// It wakes them even when a hint woke them just before: they may have read before the
    /// change this look sees (an older transaction held the events back, and ended between
    /// their read and this look). The look records the change as seen, so without a wake-up
    /// of its own they would wait for the next append. The cost is one more read per
    /// subscription, on the way out of the batch the first wake-up brought in.
    async fn look(&mut self) -> bool {
        let pulse = match self.store.pulse().await {
            Ok(pulse) => pulse,
            Err(error) => {
                if !self.outages.failed(&error) {
                    debug!(%error, "cannot poll the store; trying again at the next look");
                }
                return false;
            }
        };
        self.outages.reached(false);
        let changed = pulse != self.last;
        if pulse.control != self.last.control {
            self.signals.control();
        } else if changed {
            self.signals.events();
        }
        self.last = pulse;
        changed
    }
}

/// A look that appends or notifications asked for.
struct Hinted {
    /// When it runs: at once, or [`HINT_GAP`] after the last such look.
    at: Instant,
    /// Whether a notification woke the subscriptions before it.
    woke_on_notification: bool,
}

impl Hinted {
    /// Asks for a look, unless one is pending; `woke_on_notification` when the asking
    /// notification woke the subscriptions.
    fn ask(pending: &mut Option<Hinted>, last: Option<Instant>, woke_on_notification: bool) {
        let now = Instant::now();
        let at = last.map_or(now, |last| (last + HINT_GAP).max(now));
        let hinted = pending.get_or_insert(Hinted {
            at,
            woke_on_notification: false,
        });
        hinted.woke_on_notification |= woke_on_notification;
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use eventhost_domain::{ExpectedVersion, NewEvent, StreamId};
    use eventhost_store::{EventStore, SubscriptionDefinition, SubscriptionStore};
    use sqlx::{Connection, PgConnection};

    use super::*;
    use crate::shutdown::ShutdownTrigger;

    /// A PostgreSQL database of its own, made on the server `DATABASE_URL` names (default
    /// `postgres://root@127.0.0.1:5432/test`); left behind for the server's clean-up when
    /// the test fails.
    async fn postgres_database() -> (String, String, String) {
        let admin_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|error| panic!("this test needs PostgreSQL at {admin_url}: {error}"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let name = format!("eventhost_wakeup_{}_{nanos}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("DATABASE_URL ends with a database name");
        (format!("{base}/{name}"), admin_url, name)
    }

    async fn drop_database(admin_url: &str, name: &str) {
        let mut admin = PgConnection::connect(admin_url).await.expect("reconnect");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .expect("drop the test database");
    }

    async fn append_one(store: &Store) {
        let stream = StreamId::new("item", "i-1");
        let event = NewEvent::new("item.added", serde_json::json!({}));
        store
            .append(&stream, ExpectedVersion::Any, &[event])
            .await
            .expect("append");
    }

    /// An operator's request: defines subscription `probe.all`, then resets it.
    async fn define_and_reset(store: &Store) {
        let definition = SubscriptionDefinition {
            name: "probe.all".to_owned(),
            filter: Default::default(),
            start: eventhost_store::Checkpoint::ORIGIN,
        };
        store
            .define_subscriptions("probe", &[definition])
            .await
            .expect("define");
        store.reset("probe.all", 0, false).await.expect("reset");
    }

    /// Waits until `receiver` has changed since it was last marked seen.
    async fn woken(receiver: &mut watch::Receiver<u64>) {
        tokio::time::timeout(Duration::from_secs(5), receiver.changed())
            .await
            .expect("woken within 5 s")
            .expect("the watcher runs");
    }

    #[tokio::test]
    async fn a_flood_of_notifications_wakes_the_subscriptions_a_bounded_number_of_times() {
        let (url, admin_url, name) = postgres_database().await;
        let store = eventhost_store::connect(&url).await.expect("connect");
        let (trigger, shutdown) = ShutdownTrigger::new();
        // A poll too slow to matter: only notifications prompt a look here.
        let held_back = HeldBack::new(Duration::from_secs(5));
        let mut wakeups = listen(&store, Duration::from_secs(3600), held_back, shutdown)
            .await
            .expect("listen");

        let mut flooder = PgConnection::connect(&url).await.expect("connect");
        let started = StdInstant::now();
        sqlx::query("SELECT pg_notify('eventhost', g::text) FROM generate_series(1, 10000) AS g")
            .execute(&mut flooder)
            .await
            .expect("send 10,000 notifications");
        // And thirty more, each on its own, so that each is a hint of its own.
        for _ in 0..30 {
            sqlx::query("NOTIFY eventhost, 'control'")
                .execute(&mut flooder)
                .await
                .expect("send a forged notification");
            tokio::time::sleep(HINT_GAP * 2).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let wakes = *wakeups.any.borrow_and_update();
        let windows = started.elapsed().as_millis() / ALARM_WINDOW.as_millis() + 2;
        assert!(
            u128::from(wakes) <= u128::from(FALSE_ALARMS) * windows,
            "10,030 notifications woke the subscriptions {wakes} times in {:?}",
            started.elapsed()
        );
        assert_eq!(
            *wakeups.control.borrow(),
            0,
            "no replay look-up was asked for"
        );

        append_one(&store).await;
        woken(&mut wakeups.any).await;
        assert!(
            !wakeups.control.has_changed().unwrap_or(true),
            "an append is not an operator's request"
        );

        define_and_reset(&store).await;
        woken(&mut wakeups.control).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the flood was taken in {:?}",
            started.elapsed()
        );

        trigger.trigger();
        drop(store);
        drop_database(&admin_url, &name).await;
    }

    #[tokio::test]
    async fn the_poll_finds_another_process_s_append_and_reset_on_sqlite() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let url = format!("sqlite://{}", dir.path().join("events.db").display());
        let store = eventhost_store::connect(&url).await.expect("connect");
        // Another process: a store of its own, whose appends do not signal this one.
        let other = eventhost_store::connect(&url).await.expect("connect again");
        let (_trigger, shutdown) = ShutdownTrigger::new();
        let held_back = HeldBack::new(Duration::from_secs(5));
        let mut wakeups = listen(&store, Duration::from_millis(20), held_back, shutdown)
            .await
            .expect("listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*wakeups.any.borrow(), 0, "nothing changed, nobody woken");

        append_one(&other).await;
        woken(&mut wakeups.any).await;

        define_and_reset(&other).await;
        woken(&mut wakeups.control).await;
    }
}
