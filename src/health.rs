//! Health reporting for container and Kubernetes probes: `run` keeps a small
//! status file fresh, and `otp2mqtt healthcheck` judges it.
//!
//! Why a file rather than a probe that connects to the broker: it tells whether
//! *this* process is connected and publishing (a broker probe would see another
//! replica's `online`), needs no credentials or network in the probe, costs the
//! broker nothing, and works in a distroless image with no shell.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::schedule::UnixTime;

/// Slack beyond the shortest period before a silent bridge counts as unhealthy:
/// covers a broker hiccup and the probe's own timing.
pub const STALE_SLACK: Duration = Duration::from_secs(10);

/// What `run` writes to `health_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// Connected to the broker (between a ConnAck and the next error).
    pub connected: bool,
    /// Unix seconds of the last batch of codes handed to the broker.
    pub last_publish: Option<u64>,
    /// Unix seconds after which, with no new publish, the bridge is stuck.
    pub stale_after: Option<u64>,
    pub pid: u32,
}

impl HealthStatus {
    /// Healthy means connected and publishing on schedule at `now`.
    pub fn verdict(&self, now: UnixTime) -> Result<(), String> {
        if !self.connected {
            return Err("not connected to the MQTT broker".into());
        }
        match self.stale_after {
            None => Err("connected, but no code published yet".into()),
            Some(stale_after) if now.whole_seconds() > stale_after => Err(format!(
                "no code published for {} s (last at unix time {})",
                now.whole_seconds()
                    .saturating_sub(self.last_publish.unwrap_or(0)),
                self.last_publish.unwrap_or(0)
            )),
            Some(_) => Ok(()),
        }
    }
}

/// Keeps the status file of a running bridge up to date.
#[derive(Debug)]
pub struct HealthReporter {
    path: std::path::PathBuf,
    /// The shortest sensor period: codes go out at least this often.
    min_period: u64,
    status: HealthStatus,
    /// Whether the last write failed, so a broken path is reported once.
    failing: bool,
}

impl HealthReporter {
    pub fn new(path: std::path::PathBuf, min_period: u64) -> Self {
        HealthReporter {
            path,
            min_period,
            status: HealthStatus {
                connected: false,
                last_publish: None,
                stale_after: None,
                pid: std::process::id(),
            },
            failing: false,
        }
    }

    pub fn set_connected(&mut self, connected: bool) {
        self.status.connected = connected;
        self.write();
    }

    pub fn published(&mut self, now: UnixTime) {
        let now = now.whole_seconds();
        self.status.last_publish = Some(now);
        self.status.stale_after = Some(now + self.min_period + STALE_SLACK.as_secs());
        self.write();
    }

    // A few hundred bytes on a tmpfs at most once per period: cheap enough to
    // do inline rather than on a blocking thread.
    fn write(&mut self) {
        match write_status(&self.path, &self.status) {
            Ok(()) => self.failing = false,
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::warn!(path = %self.path.display(), %error, "cannot write the health file; `otp2mqtt healthcheck` will fail");
            }
            Err(_) => {}
        }
    }
}

/// Writes `status` atomically (temp file + rename), so a probe never reads half a file.
pub fn write_status(path: &Path, status: &HealthStatus) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let json = serde_json::to_vec(status).map_err(std::io::Error::other)?;
    std::fs::write(&temporary, json)?;
    std::fs::rename(&temporary, path)
}

/// Reads and judges the status file.
pub fn check(path: &Path, now: UnixTime) -> Result<(), String> {
    let text = std::fs::read(path).map_err(|error| {
        format!(
            "cannot read the health file {}: {error} (is `otp2mqtt run` running with the same health_file?)",
            path.display()
        )
    })?;
    let status: HealthStatus = serde_json::from_slice(&text)
        .map_err(|error| format!("the health file {} is not valid: {error}", path.display()))?;
    status.verdict(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(connected: bool, last_publish: Option<u64>) -> HealthStatus {
        HealthStatus {
            connected,
            last_publish,
            stale_after: last_publish.map(|at| at + 40),
            pid: 1,
        }
    }

    #[test]
    fn verdicts() {
        let now = UnixTime::from_secs(1_000);
        assert_eq!(status(true, Some(990)).verdict(now), Ok(()));
        assert_eq!(status(true, Some(960)).verdict(now), Ok(()));
        assert!(
            status(true, Some(959))
                .verdict(now)
                .unwrap_err()
                .contains("41 s")
        );
        assert!(
            status(false, Some(999))
                .verdict(now)
                .unwrap_err()
                .contains("not connected")
        );
        assert!(
            status(true, None)
                .verdict(now)
                .unwrap_err()
                .contains("no code published yet")
        );
    }

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("health.json");
        assert!(
            check(&path, UnixTime::from_secs(0))
                .unwrap_err()
                .contains("cannot read")
        );
        write_status(&path, &status(true, Some(100))).unwrap();
        assert_eq!(check(&path, UnixTime::from_secs(101)), Ok(()));
        std::fs::write(&path, "garbage").unwrap();
        assert!(
            check(&path, UnixTime::from_secs(101))
                .unwrap_err()
                .contains("not valid")
        );
    }
}
