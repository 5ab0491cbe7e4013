//! Whether the system clock is kept right by NTP, as the kernel sees it.
//!
//! A TOTP code is a function of the time, so a clock that drifts is the number
//! one cause of "the codes don't match". On Linux the kernel knows: `adjtimex`
//! with no modes set only reads, needs no privilege, and reports `STA_UNSYNC`
//! until a time daemon (chrony, ntpd, systemd-timesyncd) has disciplined the
//! clock, plus the daemon's estimate of the remaining error. In a container the
//! answer is the host's, which is the clock the container uses.

use std::fmt;
use std::time::Duration;

/// What the kernel says about the system clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSync {
    /// A time daemon keeps the clock synchronised.
    Synchronised {
        /// The daemon's estimate of the clock's error.
        estimated_error: Duration,
        /// The kernel's upper bound on the error.
        maximum_error: Duration,
    },
    /// Nothing disciplines the clock (`STA_UNSYNC`): it may be seconds or
    /// minutes off, and drifts.
    Unsynchronised,
    /// The state cannot be read here (not Linux, or the call was refused).
    Unknown { reason: UnknownReason },
}

/// Why [`ClockSync::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownReason {
    /// Only Linux is asked; other systems report no such state to programs.
    UnsupportedSystem,
    /// `adjtimex` failed with this `errno` (a seccomp filter, for instance).
    CallFailed { errno: i32 },
}

impl ClockSync {
    /// True only when the kernel positively says the clock is unsynchronised.
    pub fn is_unsynchronised(self) -> bool {
        matches!(self, ClockSync::Unsynchronised)
    }
}

impl fmt::Display for ClockSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockSync::Synchronised {
                estimated_error,
                maximum_error,
            } => write!(
                f,
                "synchronised (estimated error {}, maximum {})",
                format_error(*estimated_error),
                format_error(*maximum_error)
            ),
            ClockSync::Unsynchronised => f.write_str(
                "NOT synchronised (the kernel reports STA_UNSYNC: no time daemon keeps the clock right); enable NTP (chrony, ntpd or `timedatectl set-ntp true`)",
            ),
            ClockSync::Unknown {
                reason: UnknownReason::UnsupportedSystem,
            } => f.write_str("unknown (only Linux reports it); make sure NTP runs on this host"),
            ClockSync::Unknown {
                reason: UnknownReason::CallFailed { errno },
            } => write!(
                f,
                "unknown (adjtimex failed: {}); make sure NTP runs on this host",
                std::io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

/// Microseconds as milliseconds with one decimal, or seconds when large.
fn format_error(error: Duration) -> String {
    if error >= Duration::from_secs(1) {
        format!("{:.1} s", error.as_secs_f64())
    } else {
        format!("{:.1} ms", error.as_secs_f64() * 1000.0)
    }
}

/// The kernel's `STA_UNSYNC` status bit (the same value on every Linux
/// architecture; kept here so the interpretation is testable anywhere).
pub const STA_UNSYNC: i32 = 0x0040;

/// Interprets the fields `adjtimex` returns: `status` flags and the two error
/// estimates in microseconds (negative values, which the kernel never reports,
/// read as zero).
pub fn interpret(status: i32, estimated_error_us: i64, maximum_error_us: i64) -> ClockSync {
    if status & STA_UNSYNC != 0 {
        return ClockSync::Unsynchronised;
    }
    let micros = |value: i64| Duration::from_micros(u64::try_from(value).unwrap_or(0));
    ClockSync::Synchronised {
        estimated_error: micros(estimated_error_us),
        maximum_error: micros(maximum_error_us),
    }
}

/// Asks the kernel now.
#[cfg(target_os = "linux")]
pub fn read() -> ClockSync {
    // SAFETY: `timex` is plain old data for which all-zero is a valid value;
    // `modes == 0` makes adjtimex read-only, and it writes only into the struct
    // we own for the duration of the call.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::adjtimex(&mut timex) };
    if result == -1 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return ClockSync::Unknown {
            reason: UnknownReason::CallFailed { errno },
        };
    }
    // The field widths differ between targets (c_long or i64); both fit in i64.
    #[allow(clippy::unnecessary_cast)]
    let (estimated, maximum) = (timex.esterror as i64, timex.maxerror as i64);
    interpret(timex.status, estimated, maximum)
}

/// Asks the kernel now (only Linux answers).
#[cfg(not(target_os = "linux"))]
pub fn read() -> ClockSync {
    ClockSync::Unknown {
        reason: UnknownReason::UnsupportedSystem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsync_bit_wins_over_error_estimates() {
        assert_eq!(
            interpret(STA_UNSYNC | 0x0001, 0, 0),
            ClockSync::Unsynchronised
        );
        assert!(interpret(STA_UNSYNC, 5, 5).is_unsynchronised());
    }

    #[test]
    fn synchronised_clock_reports_its_errors() {
        let sync = interpret(0x2001, 1_234, 16_000_000);
        assert_eq!(
            sync,
            ClockSync::Synchronised {
                estimated_error: Duration::from_micros(1_234),
                maximum_error: Duration::from_secs(16),
            }
        );
        assert_eq!(
            sync.to_string(),
            "synchronised (estimated error 1.2 ms, maximum 16.0 s)"
        );
        assert!(!sync.is_unsynchronised());
        assert_eq!(
            interpret(0, -1, -1),
            ClockSync::Synchronised {
                estimated_error: Duration::ZERO,
                maximum_error: Duration::ZERO
            }
        );
    }

    #[test]
    fn messages_tell_what_to_do() {
        assert!(ClockSync::Unsynchronised.to_string().contains("enable NTP"));
        let unknown = ClockSync::Unknown {
            reason: UnknownReason::CallFailed { errno: 1 },
        };
        assert!(unknown.to_string().starts_with("unknown (adjtimex failed"));
        assert!(!unknown.is_unsynchronised());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn our_status_bit_is_the_kernels() {
        assert_eq!(STA_UNSYNC, libc::STA_UNSYNC);
    }

    #[test]
    fn the_kernel_answers_on_linux() {
        let sync = read();
        if cfg!(target_os = "linux") {
            assert!(
                !matches!(
                    sync,
                    ClockSync::Unknown {
                        reason: UnknownReason::UnsupportedSystem
                    }
                ),
                "{sync}"
            );
        }
    }
}
