//! Checking typed codes over MQTT, against the real binary and a real broker:
//! windows, replays, lockouts, garbage, and the Home Assistant entities.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::*;

const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn config(port: u16, verify_door: bool) -> String {
    let verify = if verify_door {
        "    verify:\n      window: 1\n      max_failures: 3\n      lockout: 300\n"
    } else {
        ""
    };
    format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {port}\nsensors:\n  - name: Door\n    token: {SECRET}\n{verify}  - name: Strict\n    token: {SECRET}\n    verify:\n      window: 0\n  - name: Gate\n    token: {SECRET}\n    verify: {{}}\n  - name: Plain\n    token: {SECRET}\n"
    )
}

/// The code for `steps` steps from now, after making sure no boundary is near,
/// so the bridge judges it in the same window the test computed it in.
fn code(steps: i64) -> String {
    loop {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        if now.as_secs() % 30 < 27 {
            let unix = (now.as_secs() as i64 + steps * 30) as u64;
            return independent_totp(&base32_decode(SECRET), "SHA1", 6, 30, unix);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Keypad {
    observer: Observer,
    next_id: std::cell::Cell<u32>,
}

impl Keypad {
    fn new(port: u16) -> Keypad {
        Keypad {
            observer: Observer::connect(
                port,
                &["otp2mqtt/+/verify/result", "otp2mqtt/+/verify/event"],
            ),
            next_id: 0.into(),
        }
    }

    /// Sends `payload` (with a fresh request id when `code` is given) and returns the answer.
    fn send(&self, sensor: &str, payload: Vec<u8>, bridge: &BridgeProcess) -> Value {
        let before = self
            .observer
            .on(&format!("otp2mqtt/{sensor}/verify/result"))
            .len();
        self.observer
            .publish(&format!("otp2mqtt/{sensor}/verify"), &payload, false);
        let messages = self
            .observer
            .wait_until(Duration::from_secs(5), &|| bridge.log(), |m| {
                m.iter()
                    .filter(|r| r.topic == format!("otp2mqtt/{sensor}/verify/result"))
                    .count()
                    > before
            });
        let result = messages
            .iter()
            .filter(|r| r.topic == format!("otp2mqtt/{sensor}/verify/result"))
            .nth(before)
            .unwrap();
        assert!(!result.retain);
        serde_json::from_slice(&result.payload).unwrap()
    }

    fn check(&self, sensor: &str, code: &str, bridge: &BridgeProcess) -> Value {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let answer = self.send(
            sensor,
            json!({"code": code, "id": format!("r{id}")})
                .to_string()
                .into_bytes(),
            bridge,
        );
        assert_eq!(answer["id"], format!("r{id}"));
        answer
    }
}

fn started(broker: &Broker, verify_door: bool) -> BridgeProcess {
    let path = broker.dir().join("c.yaml");
    std::fs::write(&path, config(broker.port, verify_door)).unwrap();
    let observer = Observer::connect(broker.port, &["otp2mqtt/status"]);
    let bridge = BridgeProcess::run(&path);
    observer.wait_until(Duration::from_secs(10), &|| bridge.log(), |m| {
        m.iter().any(|r| r.text() == "online")
    });
    // Subscriptions are made right after the ConnAck, before `online` is sent.
    bridge
}

#[test]
fn windows_replays_and_drift() {
    let broker = Broker::start();
    let bridge = started(&broker, true);
    let keypad = Keypad::new(broker.port);

    let answer = keypad.check("door", &code(0), &bridge);
    assert_eq!(
        answer,
        json!({"id": answer["id"], "valid": true, "reason": "ok", "drift": 0})
    );
    let again = keypad.check("door", &code(0), &bridge);
    assert_eq!(
        (again["valid"].clone(), again["reason"].clone()),
        (json!(false), json!("replayed"))
    );
    assert!(again.get("drift").is_none());

    // The previous step: accepted with window 1 (Gate), refused with window 0 (Strict).
    let gate = keypad.check("gate", &code(-1), &bridge);
    assert_eq!(
        (gate["reason"].clone(), gate["drift"].clone()),
        (json!("ok"), json!(-1))
    );
    assert_eq!(
        keypad.check("strict", &code(-1), &bridge)["reason"],
        "invalid"
    );
    assert_eq!(
        keypad.check("strict", &code(-2), &bridge)["reason"],
        "invalid"
    );
    // Two steps old is outside window 1 too.
    assert_eq!(
        keypad.check("gate", &code(-2), &bridge)["reason"],
        "invalid"
    );
    // A plain digits payload works, without an id.
    let plain = keypad.send("strict", code(0).into_bytes(), &bridge);
    assert_eq!(plain, json!({"valid": true, "reason": "ok", "drift": 0}));

    // Home Assistant's event entity saw each outcome.
    let events: Vec<String> = keypad
        .observer
        .on("otp2mqtt/door/verify/event")
        .iter()
        .map(|m| {
            serde_json::from_slice::<Value>(&m.payload).unwrap()["event_type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(events, vec!["valid", "replayed"]);
    // Codes are never logged at the default level.
    assert!(!bridge.log().contains(&code(0)), "{}", bridge.log());
    // Sensors without `verify` subscribe to nothing.
    assert!(broker.log().contains("otp2mqtt/door/verify"));
    assert!(
        !broker.log().contains("otp2mqtt/plain/verify"),
        "{}",
        broker.log()
    );
}

#[test]
fn lockout_after_max_failures_refuses_even_the_right_code() {
    let broker = Broker::start();
    let bridge = started(&broker, true);
    let keypad = Keypad::new(broker.port);
    let right = code(0);
    let wrong = if right == "000000" {
        "999999"
    } else {
        "000000"
    };
    for _ in 0..3 {
        assert_eq!(keypad.check("door", wrong, &bridge)["reason"], "invalid");
    }
    assert_eq!(
        keypad.check("door", &right, &bridge)["reason"],
        "locked_out"
    );
    assert_eq!(
        keypad.check("door", &right, &bridge)["reason"],
        "locked_out"
    );
    // Other sensors are not locked.
    assert_eq!(keypad.check("gate", &right, &bridge)["reason"], "ok");
    let log = bridge.log();
    assert_eq!(log.matches("too many wrong codes").count(), 1, "{log}");
    assert!(
        log.contains("WARN") && !log.contains(wrong) && !log.contains(&right),
        "{log}"
    );
}

#[test]
fn garbage_is_malformed_and_harmless() {
    let broker = Broker::start();
    let mut bridge = started(&broker, true);
    let keypad = Keypad::new(broker.port);
    for payload in [
        b"abcdef".to_vec(),
        b"12345".to_vec(),
        b"1234567".to_vec(),
        b"{\"code\": 12".to_vec(),
        b"{\"code\": 123456}".to_vec(),
        vec![b'7'; 200_000],
        vec![0xff; 10],
    ] {
        let answer = keypad.send("gate", payload, &bridge);
        assert_eq!(
            (answer["valid"].clone(), answer["reason"].clone()),
            (json!(false), json!("malformed"))
        );
    }
    // Still serving, and malformed input did not count towards a lockout.
    assert_eq!(keypad.check("gate", &code(0), &bridge)["reason"], "ok");
    assert!(bridge.wait(Duration::ZERO).is_none());
}

#[test]
fn event_and_keypad_entities_are_announced_and_removed_with_verification() {
    let broker = Broker::start();
    let mut bridge = started(&broker, true);
    let configs = retained(broker.port, "homeassistant/#");
    let of = |topic: &str| -> Value {
        serde_json::from_slice(
            &configs
                .iter()
                .find(|m| m.topic == topic)
                .unwrap_or_else(|| {
                    panic!(
                        "no {topic} in {:?}",
                        configs.iter().map(|m| &m.topic).collect::<Vec<_>>()
                    )
                })
                .payload,
        )
        .unwrap()
    };
    let event = of("homeassistant/event/otp2mqtt/door/config");
    assert_eq!(
        event["event_types"],
        json!(["valid", "invalid", "replayed", "locked_out"])
    );
    assert_eq!(event["state_topic"], "otp2mqtt/door/verify/event");
    assert_eq!(
        event["device"]["identifiers"],
        json!(["otp2mqtt_otp2mqtt_door"])
    );
    assert_eq!(event["availability_topic"], "otp2mqtt/status");
    let keypad = of("homeassistant/text/otp2mqtt/door/config");
    assert_eq!(keypad["command_topic"], "otp2mqtt/door/verify");
    assert_eq!(keypad["mode"], "password");
    assert_eq!(
        keypad["device"]["identifiers"],
        json!(["otp2mqtt_otp2mqtt_door"])
    );
    let sensor = of("homeassistant/sensor/otp2mqtt/door/config");
    assert_eq!(
        sensor["device"]["identifiers"],
        keypad["device"]["identifiers"]
    );
    assert!(
        !configs
            .iter()
            .any(|m| m.topic.contains("/plain/") && !m.topic.starts_with("homeassistant/sensor/"))
    );
    assert_eq!(configs.len(), 4 + 3 * 2, "4 sensors, 3 of them verifying");

    // Verification turned off for Door: its event and keypad go, its sensor stays.
    bridge.signal(libc::SIGTERM);
    assert!(bridge.wait(Duration::from_secs(5)).unwrap().success());
    let bridge = started(&broker, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let configs = retained(broker.port, "homeassistant/#");
        let topics: Vec<&str> = configs.iter().map(|m| m.topic.as_str()).collect();
        if !topics.contains(&"homeassistant/event/otp2mqtt/door/config")
            && !topics.contains(&"homeassistant/text/otp2mqtt/door/config")
        {
            assert!(topics.contains(&"homeassistant/sensor/otp2mqtt/door/config"));
            assert!(topics.contains(&"homeassistant/event/otp2mqtt/gate/config"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{topics:?}\n{}",
            bridge.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
