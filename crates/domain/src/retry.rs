//! Pauses between retries.

use std::time::Duration;

use rand::Rng;

/// The pause after failed attempt `attempt` (1-based): `base` doubling up to `max`, then a
/// random part of its second half taken off, so that what failed together does not all come
/// back together.
pub fn jittered_backoff(base: Duration, attempt: u32, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    let full = base.saturating_mul(factor).min(max);
    let half = full / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_with_jitter_in_the_second_half() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            for _ in 0..50 {
                let pause = jittered_backoff(base, attempt, max).as_millis();
                assert!(
                    (full / 2..=full).contains(&pause),
                    "attempt {attempt}: {pause} ms"
                );
            }
        }
        let draws: std::collections::HashSet<Duration> =
            (0..20).map(|_| jittered_backoff(base, 10, max)).collect();
        assert!(draws.len() > 1, "the pauses are jittered");
    }
}
