//! `otp2mqtt code`: each sensor's current code and how long it stays valid,
//! computed locally (no broker), so a user can hold the phone next to the screen
//! and see that both agree. `--watch` redraws at every code change.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Settings;
use crate::schedule::{Schedule, UnixTime, distinct_periods, until_next_boundary};
use crate::sensor::Sensor;

/// ANSI: cursor home, then clear the screen, so `--watch` redraws in place.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// Prints the codes once, or with `watch` at every step boundary until
/// `shutdown` is cancelled (Ctrl-C).
pub async fn run(
    settings: &Settings,
    watch: bool,
    clock: &dyn Clock,
    shutdown: CancellationToken,
) -> ExitCode {
    if !watch {
        return print(&render(&settings.sensors, clock.read().wall));
    }
    let redraw_in_place = std::io::stdout().is_terminal();
    let periods = distinct_periods(settings.sensors.iter().map(|sensor| sensor.period));
    // The bridge's own schedule: wakes at least once a second, notices clock
    // jumps, and says when any sensor's step changed.
    let mut schedule = Schedule::new(periods);
    loop {
        let tick = schedule.tick(clock.read());
        if !tick.due.is_empty() {
            let now = clock.read().wall;
            let screen = if redraw_in_place {
                format!(
                    "{CLEAR_SCREEN}{}\nRedrawn at every change; Ctrl-C to stop.\n",
                    render(&settings.sensors, now)
                )
            } else {
                format!("{}\n", render(&settings.sensors, now))
            };
            if print(&screen) != ExitCode::SUCCESS {
                return ExitCode::FAILURE;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return ExitCode::SUCCESS,
            () = tokio::time::sleep(tick.sleep) => {}
        }
    }
}

/// Writes and flushes; a closed pipe (`| head`) ends the command quietly.
fn print(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("otp2mqtt: error: cannot write to standard output: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The table of codes at `now`: name, code, seconds left in its window.
pub fn render(sensors: &[Sensor], now: UnixTime) -> String {
    let name_width = sensors
        .iter()
        .map(|sensor| sensor.name.chars().count())
        .chain(std::iter::once("NAME".len()))
        .max()
        .unwrap_or(0);
    let code_width = sensors
        .iter()
        .map(|sensor| usize::from(sensor.digits))
        .chain(std::iter::once("CODE".len()))
        .max()
        .unwrap_or(0);
    let mut table = format!(
        "Codes at {} (UTC)\n{:name_width$}  {:code_width$}  VALID FOR\n",
        humantime::format_rfc3339_seconds(UNIX_EPOCH + now.0),
        "NAME",
        "CODE"
    );
    for sensor in sensors {
        table.push_str(&format!(
            "{:name_width$}  {:code_width$}  {} s\n",
            sensor.name,
            sensor.code_at(now),
            seconds_left(now, sensor.period)
        ));
    }
    table
}

/// Whole seconds left in the window, rounded up the way phone apps count down:
/// 17.3 s left shows as 18, and a code fresh at the boundary shows the full period.
pub fn seconds_left(now: UnixTime, period: u64) -> u64 {
    let left = until_next_boundary(now, period);
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::secret::decode_base32_secret;
    use crate::sensor::Algorithm;

    fn sensor(name: &str, digits: u8, period: u64) -> Sensor {
        // RFC 6238's SHA1 seed.
        let secret = decode_base32_secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        Sensor::new(
            "id".into(),
            name.into(),
            &secret,
            digits,
            period,
            Algorithm::Sha1,
        )
    }

    #[test]
    fn table_shows_rfc_codes_and_time_left() {
        let sensors = [sensor("OTP Sensor", 8, 30), sensor("Garage", 6, 30)];
        // RFC 6238 Appendix B: 59 s gives 94287082 (SHA1, 8 digits).
        let table = render(&sensors, UnixTime(Duration::from_millis(59_250)));
        assert_eq!(
            table,
            "Codes at 1970-01-01T00:00:59Z (UTC)\n\
             NAME        CODE      VALID FOR\n\
             OTP Sensor  94287082  1 s\n\
             Garage      287082    1 s\n"
        );
    }

    #[test]
    fn countdown_rounds_up_like_phone_apps() {
        assert_eq!(
            seconds_left(UnixTime(Duration::from_millis(12_700)), 30),
            18
        );
        assert_eq!(seconds_left(UnixTime::from_secs(30), 30), 30);
        assert_eq!(seconds_left(UnixTime::from_secs(29), 30), 1);
    }
}
