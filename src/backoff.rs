//! Reconnect delays: capped exponential backoff with jitter.
//!
//! rumqttc retries immediately when polled after an error (about 25,000 connects
//! per second here), so the connection task sleeps for [`Backoff::next_delay`]
//! between attempts. Jitter keeps a fleet of bridges from reconnecting in lockstep
//! after a broker restart.

use std::time::Duration;

pub const INITIAL_DELAY: Duration = Duration::from_secs(1);
pub const MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
}

impl Backoff {
    pub fn new() -> Self {
        Backoff {
            base: INITIAL_DELAY,
        }
    }

    /// The delay before the next attempt; doubles the one after, up to the cap.
    /// `jitter` in `[0, 1)` spreads it over 75 %–125 % of the base.
    pub fn next_delay_with(&mut self, jitter: f64) -> Duration {
        let delay = self
            .base
            .mul_f64(0.75 + jitter.clamp(0.0, 1.0) * 0.5)
            .min(MAX_DELAY);
        self.base = (self.base * 2).min(MAX_DELAY);
        delay
    }

    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(rand::random::<f64>())
    }

    /// After a successful connection the next failure starts from the beginning.
    pub fn reset(&mut self) {
        self.base = INITIAL_DELAY;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..8)
            .map(|_| backoff.next_delay_with(0.5).as_secs())
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        backoff.reset();
        assert_eq!(backoff.next_delay_with(0.5), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_a_quarter_and_under_the_cap() {
        let mut backoff = Backoff::new();
        assert_eq!(backoff.next_delay_with(0.0), Duration::from_millis(750));
        let mut backoff = Backoff::new();
        assert_eq!(backoff.next_delay_with(0.999_999).as_millis(), 1249);
        for _ in 0..20 {
            assert!(backoff.next_delay() <= MAX_DELAY);
        }
    }
}
