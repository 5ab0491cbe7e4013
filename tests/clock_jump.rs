//! Clock jumps, with an injected clock driving the real bridge against a real
//! broker: the wall clock is shifted while the monotonic clock runs on, as when
//! NTP steps the clock or a VM resumes.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use otp2mqtt::clock::Clock;
use otp2mqtt::schedule::{ClockReading, UnixTime};
use support::*;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// The system clock shifted by an adjustable number of milliseconds.
struct ShiftedClock {
    origin: Instant,
    offset_ms: AtomicI64,
}

impl ShiftedClock {
    fn wall(&self, real: SystemTime) -> SystemTime {
        let offset = self.offset_ms.load(Ordering::SeqCst);
        if offset >= 0 {
            real + Duration::from_millis(offset as u64)
        } else {
            real - Duration::from_millis(offset.unsigned_abs())
        }
    }
}

impl Clock for ShiftedClock {
    fn read(&self) -> ClockReading {
        ClockReading {
            wall: UnixTime(
                self.wall(SystemTime::now())
                    .duration_since(UNIX_EPOCH)
                    .unwrap(),
            ),
            monotonic: self.origin.elapsed(),
        }
    }
}

#[test]
fn jumps_forward_and_backward_publish_the_code_of_the_new_time_at_once() {
    let broker = Broker::start();
    let path = broker.dir().join("c.yaml");
    std::fs::write(
        &path,
        format!(
            "mqtt:\n  host: 127.0.0.1\n  port: {}\nsensors:\n  - name: Door\n    token: {SECRET}\n",
            broker.port
        ),
    )
    .unwrap();
    let settings =
        otp2mqtt::config::load_with_environment(&path, Some(Default::default())).unwrap();
    let clock = Arc::new(ShiftedClock {
        origin: Instant::now(),
        offset_ms: AtomicI64::new(0),
    });
    let observer = Observer::connect(broker.port, &["otp2mqtt/door/state"]);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let shutdown = CancellationToken::new();
    let bridge = runtime.spawn(otp2mqtt::bridge::run(
        settings,
        clock.clone(),
        shutdown.clone(),
    ));
    observer.wait_until(Duration::from_secs(10), &String::new, |m| !m.is_empty());
    // Let the announce's code re-sends pass, so that what follows is the jump's doing.
    std::thread::sleep(Duration::from_millis(3_500));

    let secret = base32_decode(SECRET);
    // 30 s periods: without jump handling the next code would come at the next
    // real boundary, up to 30 s later, and the attributes would lie until then.
    for offset_ms in [607_000i64, -3_600_000 - 11_000, 0] {
        observer.clear();
        clock.offset_ms.store(offset_ms, Ordering::SeqCst);
        let messages = observer.wait_until(
            Duration::from_secs(5),
            &|| format!("offset {offset_ms} ms"),
            |m| {
                m.iter().any(|r| {
                    r.text()
                        == independent_totp(&secret, "SHA1", 6, 30, unix_seconds(clock.wall(r.at)))
                })
            },
        );
        for state in &messages {
            assert!(
                code_fits(&state.text(), &secret, "SHA1", 6, 30, clock.wall(state.at)),
                "offset {offset_ms} ms: code {} after the jump belongs to another window",
                state.text()
            );
        }
    }

    shutdown.cancel();
    runtime.block_on(bridge).unwrap().unwrap();
    assert_eq!(
        retained(broker.port, "otp2mqtt/status")[0].text(),
        "offline"
    );
}
