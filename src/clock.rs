//! The only place that reads the real clocks. Everything else is handed a
//! [`Clock`], so tests can move time (and make it jump) at will.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::schedule::{ClockReading, UnixTime};

/// A source of paired wall-clock and monotonic readings.
pub trait Clock: Send + Sync + 'static {
    fn read(&self) -> ClockReading;
}

/// The system's clocks.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn read(&self) -> ClockReading {
        ClockReading {
            monotonic: self.origin.elapsed(),
            // A clock before 1970 is broken beyond repair; reading it as the epoch
            // keeps the arithmetic total, and `check` reports unsynchronised clocks.
            wall: UnixTime(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO),
            ),
        }
    }
}
