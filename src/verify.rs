//! Checking codes typed on a keypad or dashboard: RFC 6238 with a step window,
//! replay protection (section 5.2) and throttling (RFC 4226 section 7.3).
//!
//! Pure: the time is passed in, so lockouts and windows are tested without waiting.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{Value, json};

use crate::schedule::{Step, UnixTime};
use crate::sensor::Sensor;

/// Largest payload looked at; anything longer is `malformed` without parsing.
pub const MAX_PAYLOAD: usize = 1024;

/// A sensor's verification settings (`verify:` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// Steps of tolerance either side of the current one.
    pub window: u8,
    /// Failed attempts allowed within `lockout` before everything is refused.
    pub max_failures: u32,
    pub lockout: Duration,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        VerifyPolicy {
            window: 1,
            max_failures: 5,
            lockout: Duration::from_secs(300),
        }
    }
}

/// Why an attempt got its answer; also the Home Assistant event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Ok,
    Invalid,
    Replayed,
    LockedOut,
    Malformed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Invalid => "invalid",
            Reason::Replayed => "replayed",
            Reason::LockedOut => "locked_out",
            Reason::Malformed => "malformed",
        }
    }

    /// The `event` entity's type for this outcome. Garbage typed on a keypad is
    /// an invalid entry to the person watching the door.
    pub fn event_type(self) -> &'static str {
        match self {
            Reason::Ok => "valid",
            Reason::Invalid | Reason::Malformed => "invalid",
            Reason::Replayed => "replayed",
            Reason::LockedOut => "locked_out",
        }
    }
}

/// Event types announced to Home Assistant.
pub const EVENT_TYPES: [&str; 4] = ["valid", "invalid", "replayed", "locked_out"];

/// The answer to one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The request id the caller sent, echoed back.
    pub id: Option<Value>,
    pub reason: Reason,
    /// Steps between the accepted code and the current one (only when valid).
    pub drift: Option<i64>,
    /// Set when this attempt started a lockout, for a warning in the log.
    pub lockout_started: bool,
}

impl Outcome {
    pub fn valid(&self) -> bool {
        self.reason == Reason::Ok
    }

    /// The JSON answer on the result topic. Holds no code.
    pub fn result_payload(&self) -> Vec<u8> {
        let mut result = json!({ "valid": self.valid(), "reason": self.reason.as_str() });
        if let Some(id) = &self.id {
            result["id"] = id.clone();
        }
        if let Some(drift) = self.drift {
            result["drift"] = json!(drift);
        }
        result.to_string().into_bytes()
    }

    /// The payload for Home Assistant's `event` entity.
    pub fn event_payload(&self) -> Vec<u8> {
        let mut event = json!({ "event_type": self.reason.event_type() });
        if let Some(drift) = self.drift {
            event["drift"] = json!(drift);
        }
        event.to_string().into_bytes()
    }
}

/// Per-sensor verification state.
#[derive(Debug)]
pub struct Verifier {
    policy: VerifyPolicy,
    /// The newest step whose code was accepted: it and older ones are spent.
    last_accepted: Option<Step>,
    /// Times of recent failures, oldest first, within one lockout period.
    failures: VecDeque<UnixTime>,
    locked_until: Option<UnixTime>,
}

impl Verifier {
    pub fn new(policy: VerifyPolicy) -> Self {
        Verifier {
            policy,
            last_accepted: None,
            failures: VecDeque::new(),
            locked_until: None,
        }
    }

    /// Judges one payload received at `now`.
    pub fn attempt(&mut self, sensor: &Sensor, payload: &[u8], now: UnixTime) -> Outcome {
        let (id, code) = parse_payload(payload);
        let outcome = |reason, drift, lockout_started| Outcome {
            id: id.clone(),
            reason,
            drift,
            lockout_started,
        };
        if let Some(until) = self.locked_until {
            if now < until {
                return outcome(Reason::LockedOut, None, false);
            }
            self.locked_until = None;
            self.failures.clear();
        }
        let Some(code) = code.filter(|code| code.len() == usize::from(sensor.digits)) else {
            return outcome(Reason::Malformed, None, false);
        };
        let current = now.step(sensor.period);
        let window = i64::from(self.policy.window);
        // Every candidate is compared, without stopping at a match, so the time
        // taken says nothing about which step (if any) matched.
        let mut matched: Option<i64> = None;
        for drift in -window..=window {
            let Some(step) = current.0.checked_add_signed(drift) else {
                continue;
            };
            let expected = sensor.code_for_step(Step(step));
            if constant_time_eq(expected.as_bytes(), code.as_bytes()) && matched.is_none() {
                matched = Some(drift);
            }
        }
        let reason = match matched {
            Some(drift) => {
                let step = Step(current.0.saturating_add_signed(drift));
                if self.last_accepted.is_some_and(|spent| step <= spent) {
                    Reason::Replayed
                } else {
                    self.last_accepted = Some(step);
                    return outcome(Reason::Ok, Some(drift), false);
                }
            }
            None => Reason::Invalid,
        };
        // A replay counts as a failure too: whoever sends spent codes is probing.
        let lockout_started = self.record_failure(now);
        outcome(reason, None, lockout_started)
    }

    /// Returns true when this failure starts a lockout.
    fn record_failure(&mut self, now: UnixTime) -> bool {
        while self
            .failures
            .front()
            .is_some_and(|at| now.0.saturating_sub(at.0) >= self.policy.lockout)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        if self.failures.len() as u64 >= u64::from(self.policy.max_failures) {
            self.locked_until = Some(UnixTime(now.0 + self.policy.lockout));
            self.failures.clear();
            return true;
        }
        false
    }
}

/// `123456`, or `{"code": "123456", "id": …}`. Returns the request id (if any)
/// and the code, if it is all digits.
fn parse_payload(payload: &[u8]) -> (Option<Value>, Option<String>) {
    if payload.len() > MAX_PAYLOAD {
        return (None, None);
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        return (None, None);
    };
    let text = text.trim();
    let (id, code) = if text.starts_with('{') {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(mut object)) => {
                let id = object.remove("id").filter(|id| !id.is_null());
                let code = match object.remove("code") {
                    Some(Value::String(code)) => Some(code.trim().to_string()),
                    _ => None,
                };
                (id, code)
            }
            _ => (None, None),
        }
    } else {
        (None, Some(text.to_string()))
    };
    let code = code.filter(|code| !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()));
    (id, code)
}

/// Equal-length byte strings compared without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter()
        .zip(b)
        .fold(0u8, |difference, (x, y)| difference | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::decode_base32_secret;
    use crate::sensor::Algorithm;

    fn sensor() -> Sensor {
        let secret = decode_base32_secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        Sensor::new(
            "door".into(),
            "Door".into(),
            &secret,
            6,
            30,
            Algorithm::Sha1,
        )
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::from_secs(secs)
    }

    const NOW: u64 = 1_700_000_010; // 10 s into a 30 s window

    fn code(sensor: &Sensor, drift: i64) -> String {
        sensor.code_for_step(Step(at(NOW).step(30).0.saturating_add_signed(drift)))
    }

    #[test]
    fn current_code_is_accepted_with_drift_zero() {
        let sensor = sensor();
        let mut verifier = Verifier::new(VerifyPolicy::default());
        let outcome = verifier.attempt(&sensor, code(&sensor, 0).as_bytes(), at(NOW));
        assert_eq!((outcome.reason, outcome.drift), (Reason::Ok, Some(0)));
        assert_eq!(
            serde_json::from_slice::<Value>(&outcome.result_payload()).unwrap(),
            json!({"valid": true, "reason": "ok", "drift": 0})
        );
    }

    #[test]
    fn window_one_accepts_neighbours_and_window_zero_does_not() {
        let sensor = sensor();
        let mut wide = Verifier::new(VerifyPolicy::default());
        assert_eq!(
            wide.attempt(&sensor, code(&sensor, -1).as_bytes(), at(NOW))
                .drift,
            Some(-1)
        );
        assert_eq!(
            wide.attempt(&sensor, code(&sensor, 1).as_bytes(), at(NOW))
                .drift,
            Some(1)
        );
        let mut narrow = Verifier::new(VerifyPolicy {
            window: 0,
            ..VerifyPolicy::default()
        });
        assert_eq!(
            narrow
                .attempt(&sensor, code(&sensor, -1).as_bytes(), at(NOW))
                .reason,
            Reason::Invalid
        );
        let mut fresh = Verifier::new(VerifyPolicy::default());
        assert_eq!(
            fresh
                .attempt(&sensor, code(&sensor, -2).as_bytes(), at(NOW))
                .reason,
            Reason::Invalid
        );
    }

    #[test]
    fn spent_codes_and_older_ones_are_replays() {
        let sensor = sensor();
        let mut verifier = Verifier::new(VerifyPolicy::default());
        assert!(
            verifier
                .attempt(&sensor, code(&sensor, 0).as_bytes(), at(NOW))
                .valid()
        );
        assert_eq!(
            verifier
                .attempt(&sensor, code(&sensor, 0).as_bytes(), at(NOW + 1))
                .reason,
            Reason::Replayed
        );
        assert_eq!(
            verifier
                .attempt(&sensor, code(&sensor, -1).as_bytes(), at(NOW + 1))
                .reason,
            Reason::Replayed
        );
        // The next window's code is fresh.
        assert!(
            verifier
                .attempt(&sensor, code(&sensor, 1).as_bytes(), at(NOW + 30))
                .valid()
        );
    }

    #[test]
    fn lockout_after_max_failures_refuses_even_good_codes_until_it_expires() {
        let sensor = sensor();
        let policy = VerifyPolicy {
            window: 1,
            max_failures: 3,
            lockout: Duration::from_secs(300),
        };
        let mut verifier = Verifier::new(policy);
        let wrong = if code(&sensor, 0) == "000000" {
            "111111"
        } else {
            "000000"
        };
        assert_eq!(
            verifier.attempt(&sensor, wrong.as_bytes(), at(NOW)).reason,
            Reason::Invalid
        );
        assert!(
            !verifier
                .attempt(&sensor, wrong.as_bytes(), at(NOW + 1))
                .lockout_started
        );
        let third = verifier.attempt(&sensor, wrong.as_bytes(), at(NOW + 2));
        assert_eq!(
            (third.reason, third.lockout_started),
            (Reason::Invalid, true)
        );
        let good = code(&sensor, 0);
        assert_eq!(
            verifier
                .attempt(&sensor, good.as_bytes(), at(NOW + 3))
                .reason,
            Reason::LockedOut
        );
        let later = NOW + 2 + 300;
        let fresh = sensor.code_at(at(later));
        assert_eq!(
            verifier
                .attempt(&sensor, fresh.as_bytes(), at(later - 1))
                .reason,
            Reason::LockedOut
        );
        assert!(
            verifier
                .attempt(&sensor, fresh.as_bytes(), at(later))
                .valid()
        );
    }

    #[test]
    fn failures_spread_wider_than_the_lockout_period_never_lock() {
        let sensor = sensor();
        let policy = VerifyPolicy {
            window: 1,
            max_failures: 3,
            lockout: Duration::from_secs(60),
        };
        let mut verifier = Verifier::new(policy);
        for minute in 0..10 {
            let outcome = verifier.attempt(&sensor, b"000001", at(NOW + minute * 31));
            assert_ne!(outcome.reason, Reason::LockedOut);
        }
    }

    #[test]
    fn json_payloads_echo_their_id_and_garbage_is_malformed() {
        let sensor = sensor();
        let mut verifier = Verifier::new(VerifyPolicy::default());
        let payload = format!(r#"{{"code": "{}", "id": "kitchen-42"}}"#, code(&sensor, 0));
        let outcome = verifier.attempt(&sensor, payload.as_bytes(), at(NOW));
        assert_eq!(outcome.id, Some(json!("kitchen-42")));
        assert!(outcome.valid());
        for garbage in [
            &b"abcdef"[..],
            b"12345",
            b"1234567",
            b"{\"code\": 123456}",
            b"{not json",
            b"",
            &[0xff, 0xfe],
            &vec![b'1'; 100_000],
        ] {
            let outcome = verifier.attempt(&sensor, garbage, at(NOW));
            assert_eq!(
                outcome.reason,
                Reason::Malformed,
                "{:?}",
                String::from_utf8_lossy(&garbage[..garbage.len().min(20)])
            );
            assert!(
                !String::from_utf8(outcome.result_payload())
                    .unwrap()
                    .contains("123456")
            );
        }
        let outcome = verifier.attempt(&sensor, br#"{"code": "x", "id": 7}"#, at(NOW));
        assert_eq!(
            (outcome.reason, &outcome.id),
            (Reason::Malformed, &Some(json!(7)))
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&outcome.result_payload()).unwrap(),
            json!({"id": 7, "valid": false, "reason": "malformed"})
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&outcome.event_payload()).unwrap(),
            json!({"event_type": "invalid"})
        );
    }

    #[test]
    fn comparison_needs_equal_length() {
        assert!(constant_time_eq(b"123456", b"123456"));
        assert!(!constant_time_eq(b"123456", b"123457"));
        assert!(!constant_time_eq(b"123456", b"1234567"));
    }
}
