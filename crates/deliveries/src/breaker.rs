//! A sink's circuit breaker: after a run of failed attempts the sink gets a rest instead of a
//! retry per message, then one message tests it.
//!
//! Closed, it lets everything through and counts consecutive retryable failures; at the
//! threshold it opens for the cooldown. Then one attempt goes (half-open): success closes
//! it, failure opens it again for another cooldown. A fixed rest, not a growing one: a
//! receiver back after an outage gets its messages within one cooldown, however long the
//! outage was (each message still waits out its own backoff). A permanent refusal (a 4xx) is
//! an answer, so it counts as the sink being up.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One attempt is testing the sink.
    HalfOpen,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Whether an attempt may start now; the one that reopens a rested sink is its test.
    pub(crate) fn allow(&self) -> bool {
        let mut state = self.state();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    /// When an open breaker lets a test through; `None` when it is not open.
    pub(crate) fn open_until(&self) -> Option<Instant> {
        match *self.state() {
            State::Open { until } => Some(until),
            State::Closed { .. } | State::HalfOpen => None,
        }
    }

    pub(crate) fn succeeded(&self) {
        *self.state() = State::Closed { failures: 0 };
    }

    /// Records a retryable failure; returns whether it opened the breaker.
    pub(crate) fn failed(&self) -> bool {
        let mut state = self.state();
        match *state {
            State::Closed { failures } if failures + 1 < self.threshold => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::Closed { .. } | State::HalfOpen => {
                *state = State::Open {
                    until: Instant::now() + self.cooldown,
                };
                true
            }
            State::Open { .. } => false,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value, consistent even if a holder panicked.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failures_open_it_and_after_each_rest_one_test_goes_through() {
        let breaker = Breaker::new(3, Duration::from_secs(10));
        assert!(!breaker.failed());
        assert!(!breaker.failed());
        assert!(breaker.failed(), "the third failure opens it");
        assert!(!breaker.allow());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(breaker.allow(), "the test");
        assert!(!breaker.allow(), "one test at a time");
        assert!(breaker.failed(), "a failed test opens it again");
        let rest = breaker.open_until().unwrap() - Instant::now();
        assert_eq!(rest, Duration::from_secs(10), "for the same rest");
        tokio::time::advance(rest).await;
        assert!(breaker.allow());
        breaker.succeeded();
        assert!(breaker.allow() && breaker.allow(), "closed again");
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = Breaker::new(2, Duration::from_secs(1));
        assert!(!breaker.failed());
        breaker.succeeded();
        assert!(!breaker.failed(), "counting from zero again");
    }
}
