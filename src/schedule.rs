//! Step arithmetic and the publish schedule, as pure functions of the time passed in.
//!
//! Codes change at wall-clock boundaries (`:00` and `:30` for a 30 s period), so the
//! schedule works on wall-clock time. The monotonic clock is only used to notice
//! when the wall clock jumped (NTP step, VM resume, suspend).

use std::time::Duration;

/// Wall-clock time as a duration since the Unix epoch, with sub-second precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub Duration);

impl UnixTime {
    pub fn from_secs(secs: u64) -> Self {
        UnixTime(Duration::from_secs(secs))
    }

    pub fn whole_seconds(self) -> u64 {
        self.0.as_secs()
    }

    /// The step (RFC 6238 `T`, with `T0 = 0`) this instant falls in.
    pub fn step(self, period: u64) -> Step {
        Step(self.0.as_secs() / period)
    }
}

/// A TOTP time step: the number of whole periods since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Step(pub u64);

impl Step {
    /// First second of this step's window.
    pub fn start(self, period: u64) -> UnixTime {
        UnixTime::from_secs(self.0.saturating_mul(period))
    }

    /// First second after this step's window: the next boundary.
    pub fn end(self, period: u64) -> UnixTime {
        UnixTime::from_secs(self.0.saturating_add(1).saturating_mul(period))
    }
}

/// How long until the next step boundary of `period` after `now`.
pub fn until_next_boundary(now: UnixTime, period: u64) -> Duration {
    now.step(period).end(period).0.saturating_sub(now.0)
}

/// The distinct periods among `periods`, shortest first: one schedule group each.
pub fn distinct_periods(periods: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut periods: Vec<u64> = periods.into_iter().collect();
    periods.sort_unstable();
    periods.dedup();
    periods
}

/// The longest the publisher sleeps in one go. tokio sleeps on the monotonic clock,
/// which ignores wall-clock steps and stands still during suspend: waking at least
/// this often bounds how late a jump is noticed.
pub const MAX_SLEEP: Duration = Duration::from_secs(1);

/// A wall clock that moved this much more or less than the monotonic clock between
/// two readings has jumped. Well above timer jitter and NTP slewing (at most
/// 500 ppm, i.e. 0.5 ms per second).
pub const JUMP_THRESHOLD: Duration = Duration::from_millis(500);

/// One reading of both clocks, taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReading {
    pub wall: UnixTime,
    /// Monotonic time since an arbitrary origin.
    pub monotonic: Duration,
}

/// A detected wall-clock jump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockJump {
    /// How far the wall clock moved beyond (forward) or short of (backward) the
    /// monotonic clock.
    pub size: Duration,
    pub forward: bool,
}

/// What to do after a clock reading: publish these period groups now, and wake up
/// again after `sleep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// Indexes into the periods given to [`Schedule::new`] whose step changed.
    pub due: Vec<usize>,
    pub jump: Option<ClockJump>,
    pub sleep: Duration,
}

/// Tracks, per distinct period, which step was last published, and detects jumps.
///
/// A group is due whenever the current step differs from the last one published,
/// in either direction: after a backward jump the right code is the older one.
/// Comparing with `!=` also makes an early wake-up (still in the old step) a no-op,
/// so each step is published at most once.
#[derive(Debug)]
pub struct Schedule {
    periods: Vec<u64>,
    published: Vec<Option<Step>>,
    previous: Option<ClockReading>,
}

impl Schedule {
    pub fn new(periods: Vec<u64>) -> Self {
        let published = vec![None; periods.len()];
        Schedule {
            periods,
            published,
            previous: None,
        }
    }

    pub fn periods(&self) -> &[u64] {
        &self.periods
    }

    /// Feeds a clock reading; returns what is due, any jump, and how long to sleep.
    pub fn tick(&mut self, now: ClockReading) -> Tick {
        let jump = self
            .previous
            .and_then(|previous| detect_jump(previous, now));
        self.previous = Some(now);
        let mut due = Vec::new();
        for (index, period) in self.periods.iter().enumerate() {
            let step = now.wall.step(*period);
            if self.published[index] != Some(step) {
                self.published[index] = Some(step);
                due.push(index);
            }
        }
        Tick {
            due,
            jump,
            sleep: self.sleep_after(now.wall),
        }
    }

    /// Time until the earliest next boundary of any period, capped at [`MAX_SLEEP`].
    pub fn sleep_after(&self, now: UnixTime) -> Duration {
        self.periods
            .iter()
            .map(|period| until_next_boundary(now, *period))
            .min()
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP)
    }
}

fn detect_jump(previous: ClockReading, now: ClockReading) -> Option<ClockJump> {
    let monotonic_elapsed = now.monotonic.saturating_sub(previous.monotonic);
    let (wall_elapsed, wall_went_back) = match now.wall.0.checked_sub(previous.wall.0) {
        Some(elapsed) => (elapsed, false),
        None => (previous.wall.0 - now.wall.0, true),
    };
    let jump = if wall_went_back {
        ClockJump {
            size: wall_elapsed + monotonic_elapsed,
            forward: false,
        }
    } else if wall_elapsed >= monotonic_elapsed {
        ClockJump {
            size: wall_elapsed - monotonic_elapsed,
            forward: true,
        }
    } else {
        ClockJump {
            size: monotonic_elapsed - wall_elapsed,
            forward: false,
        }
    };
    (jump.size >= JUMP_THRESHOLD).then_some(jump)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(wall_ms: u64, monotonic_ms: u64) -> ClockReading {
        ClockReading {
            wall: UnixTime(Duration::from_millis(wall_ms)),
            monotonic: Duration::from_millis(monotonic_ms),
        }
    }

    #[test]
    fn step_windows_and_boundaries() {
        let now = UnixTime(Duration::from_millis(1_111_111_109_250));
        let step = now.step(30);
        assert_eq!(step, Step(37_037_036));
        assert_eq!(step.start(30), UnixTime::from_secs(1_111_111_080));
        assert_eq!(step.end(30), UnixTime::from_secs(1_111_111_110));
        assert_eq!(until_next_boundary(now, 30), Duration::from_millis(750));
        // Exactly on a boundary: a whole period to the next one.
        assert_eq!(
            until_next_boundary(UnixTime::from_secs(60), 30),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn first_tick_publishes_every_group_then_only_at_boundaries() {
        let mut schedule = Schedule::new(vec![30, 5]);
        let tick = schedule.tick(at(1_000_000_010_000, 0));
        assert_eq!(tick.due, vec![0, 1]);
        assert_eq!(tick.sleep, MAX_SLEEP);

        // Half a second later nothing changed: an early or spurious wake is a no-op.
        assert_eq!(
            schedule.tick(at(1_000_000_010_500, 500)).due,
            Vec::<usize>::new()
        );
        // 1 000 000 015 is a 5 s boundary but not a 30 s one.
        assert_eq!(schedule.tick(at(1_000_000_015_001, 5_001)).due, vec![1]);
        // 1 000 000 020 is both.
        let tick = schedule.tick(at(1_000_000_020_002, 10_002));
        assert_eq!(tick.due, vec![0, 1]);
        assert_eq!(tick.jump, None);
    }

    #[test]
    fn sleeps_to_the_nearest_boundary_but_never_longer_than_the_cap() {
        let schedule = Schedule::new(vec![30, 11]);
        // 1 000 000 049.4: the 30 s boundary is 0.6 s away, the 11 s one (…056) further.
        assert_eq!(
            schedule.sleep_after(UnixTime(Duration::from_millis(1_000_000_049_400))),
            Duration::from_millis(600)
        );
        assert_eq!(
            schedule.sleep_after(UnixTime(Duration::from_millis(1_000_000_021_000))),
            MAX_SLEEP
        );
    }

    #[test]
    fn forward_jump_is_detected_and_realigns_at_once() {
        let mut schedule = Schedule::new(vec![30]);
        schedule.tick(at(1_000_000_010_000, 0));
        // One second of real time, but the wall clock moved ten minutes.
        let tick = schedule.tick(at(1_000_000_611_000, 1_000));
        assert_eq!(
            tick.jump,
            Some(ClockJump {
                size: Duration::from_secs(600),
                forward: true
            })
        );
        assert_eq!(tick.due, vec![0]);
    }

    #[test]
    fn backward_jump_across_a_boundary_publishes_the_older_code() {
        let mut schedule = Schedule::new(vec![30]);
        schedule.tick(at(1_000_000_051_000, 0));
        // The clock is stepped back 2 s: 1 000 000 050.0 is still the same step.
        let tick = schedule.tick(at(1_000_000_050_000, 1_000));
        assert_eq!(
            tick.jump,
            Some(ClockJump {
                size: Duration::from_secs(2),
                forward: false
            })
        );
        assert!(tick.due.is_empty());
        // Stepped back across the boundary: the previous window's code is the right one.
        let tick = schedule.tick(at(1_000_000_045_000, 2_000));
        assert!(tick.jump.is_some_and(|jump| !jump.forward));
        assert_eq!(tick.due, vec![0]);
    }

    #[test]
    fn suspend_shows_as_a_forward_jump() {
        // The monotonic clock stood still while the wall clock ran for an hour.
        let mut schedule = Schedule::new(vec![30]);
        schedule.tick(at(1_000_000_010_000, 50_000));
        let tick = schedule.tick(at(1_000_003_610_000, 50_010));
        assert!(tick.jump.is_some_and(|jump| jump.forward));
        assert_eq!(tick.due, vec![0]);
    }

    #[test]
    fn timer_jitter_and_slewing_are_not_jumps() {
        let mut schedule = Schedule::new(vec![30]);
        schedule.tick(at(1_000_000_010_000, 0));
        assert_eq!(schedule.tick(at(1_000_000_011_002, 1_000)).jump, None);
        assert_eq!(schedule.tick(at(1_000_000_011_990, 2_000)).jump, None);
    }

    #[test]
    fn a_thousand_virtual_periods_publish_each_step_exactly_once() {
        let mut schedule = Schedule::new(vec![30]);
        let start_ms = 1_700_000_000_000u64;
        let mut published = Vec::new();
        let mut wall = start_ms;
        let mut monotonic = 0;
        while wall < start_ms + 1_000 * 30_000 {
            let tick = schedule.tick(at(wall, monotonic));
            assert!(tick.jump.is_none());
            if !tick.due.is_empty() {
                published.push(wall / 30_000);
            }
            // Wake 1.3 ms late, as tokio does here.
            let sleep = tick.sleep.as_millis() as u64 + 1;
            wall += sleep;
            monotonic += sleep;
        }
        let expected: Vec<u64> = (start_ms / 30_000..=(wall - 1) / 30_000).collect();
        assert_eq!(published, expected);
    }
}
