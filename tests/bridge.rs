//! The bridge end to end, as Home Assistant meets it: the real binary, a real
//! Mosquitto, discovery followed to the state topics, codes checked against an
//! independent TOTP implementation.

mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use support::*;

const SHA1_SECRET: &str = "IHEDPEBEVA2WVHB7";
const SHA256_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA";
const SHA512_SECRET: &str = "gezd gnbv gy3t qojq gezd gnbv gy3t qojq gezd gnbv gy3t qojq gezd gnbv";

/// Three sensors covering every algorithm, digit count and two short periods.
fn three_sensor_config(port: u16) -> String {
    format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {port}\nsensors:\n  - token: {SHA1_SECRET}\n  - name: Front Door\n    token: {SHA256_SECRET}\n    digits: 8\n    period: 2\n    algorithm: SHA256\n  - name: Garage\n    id: garage-door\n    token: {SHA512_SECRET}\n    digits: 7\n    period: 3\n    algorithm: sha512\n"
    )
}

struct Expected {
    secret: Vec<u8>,
    algorithm: &'static str,
    digits: u32,
    period: u64,
}

fn expectations() -> HashMap<&'static str, Expected> {
    HashMap::from([
        (
            "OTP Sensor",
            Expected {
                secret: base32_decode(SHA1_SECRET),
                algorithm: "SHA1",
                digits: 6,
                period: 30,
            },
        ),
        (
            "Front Door",
            Expected {
                secret: base32_decode(SHA256_SECRET),
                algorithm: "SHA256",
                digits: 8,
                period: 2,
            },
        ),
        (
            "Garage",
            Expected {
                secret: base32_decode(&SHA512_SECRET.replace(' ', "").to_uppercase()),
                algorithm: "SHA512",
                digits: 7,
                period: 3,
            },
        ),
    ])
}

fn discovery_configs(messages: &[Received]) -> Vec<(String, Value)> {
    messages
        .iter()
        .filter(|m| {
            m.topic.starts_with("homeassistant/sensor/")
                && m.topic.ends_with("/config")
                && !m.payload.is_empty()
        })
        .map(|m| {
            (
                m.topic.clone(),
                serde_json::from_slice(&m.payload).expect("discovery payload is JSON"),
            )
        })
        .collect()
}

#[test]
fn home_assistant_discovers_every_sensor_and_reads_the_right_codes() {
    let broker = Broker::start();
    let config = write_config(
        broker.dir(),
        "otp2mqtt.yaml",
        &three_sensor_config(broker.port),
    );
    let home_assistant = Observer::connect(broker.port, &["homeassistant/#"]);
    let bridge = BridgeProcess::run(&config);
    let messages = home_assistant.wait_until(Duration::from_secs(10), &|| bridge.log(), |m| {
        discovery_configs(m).len() >= 3
    });
    let configs = discovery_configs(&messages);
    let expected = expectations();

    let mut state_topics = Vec::new();
    for (topic, config) in &configs {
        assert!(
            topic.starts_with("homeassistant/sensor/otp2mqtt/"),
            "{topic}"
        );
        let name = config["device"]["name"].as_str().unwrap();
        let sensor = &expected[name];
        assert!(
            config["name"].is_null(),
            "entity name null: named after the device"
        );
        let sensor_id = topic.split('/').nth(3).unwrap();
        assert!(
            sensor_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
        assert_eq!(
            config["unique_id"],
            format!("otp2mqtt_otp2mqtt_{sensor_id}")
        );
        assert_eq!(config["device"]["identifiers"][0], config["unique_id"]);
        assert_eq!(config["state_topic"], format!("otp2mqtt/{sensor_id}/state"));
        assert_eq!(config["availability_topic"], "otp2mqtt/status");
        assert_eq!(config["icon"], "mdi:lock-clock");
        assert!(config["expire_after"].as_u64().unwrap() > sensor.period);
        assert!(config["expire_after"].as_u64().unwrap() <= sensor.period + 10);
        assert!(config.get("unit_of_measurement").is_none() && config.get("state_class").is_none());
        assert!(config.get("object_id").is_none());
        for key in ["name", "sw_version", "support_url"] {
            assert!(config["origin"][key].is_string(), "origin.{key}");
        }
        let text = config.to_string();
        assert!(!text.contains("IHED") && !text.contains("GEZD") && !text.contains("gezd"));
        state_topics.push((
            name.to_string(),
            config["state_topic"].as_str().unwrap().to_string(),
            config["json_attributes_topic"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    assert_eq!(state_topics.len(), 3);
    let retained_configs = retained(broker.port, "homeassistant/sensor/otp2mqtt/+/config");
    assert_eq!(retained_configs.len(), 3, "discovery must be retained");
    assert!(
        configs
            .iter()
            .any(|(topic, _)| topic == "homeassistant/sensor/otp2mqtt/otp_sensor/config")
    );

    // Home Assistant subscribes to the state topics only after processing the
    // discovery: the codes must still reach it within a couple of seconds.
    for (_, state_topic, attributes_topic) in &state_topics {
        home_assistant.subscribe(state_topic);
        home_assistant.subscribe(attributes_topic);
    }
    let messages = home_assistant.wait_until(Duration::from_secs(4), &|| bridge.log(), |m| {
        state_topics
            .iter()
            .all(|(_, state, _)| m.iter().any(|r| &r.topic == state))
    });
    for (name, state_topic, attributes_topic) in &state_topics {
        let sensor = &expected[name.as_str()];
        for state in messages.iter().filter(|m| &m.topic == state_topic) {
            assert!(!state.retain, "state must not be retained");
            assert!(
                code_fits(
                    &state.text(),
                    &sensor.secret,
                    sensor.algorithm,
                    sensor.digits,
                    sensor.period,
                    state.at
                ),
                "{name}: wrong code {}",
                state.text()
            );
        }
        let attributes = messages
            .iter()
            .find(|m| &m.topic == attributes_topic)
            .expect("attributes");
        let attributes: Value = serde_json::from_slice(&attributes.payload).unwrap();
        assert_eq!(attributes["period"], sensor.period);
        assert_eq!(attributes["digits"], sensor.digits);
        assert_eq!(attributes["algorithm"], sensor.algorithm);
        assert!(attributes["valid_from"].as_str().unwrap().ends_with('Z'));
    }
    let availability = retained(broker.port, "otp2mqtt/status");
    assert_eq!(availability.len(), 1);
    assert_eq!(availability[0].text(), "online");
}

#[test]
fn codes_roll_over_at_each_step_boundary_of_each_period() {
    let broker = Broker::start();
    let config = write_config(
        broker.dir(),
        "otp2mqtt.yaml",
        &three_sensor_config(broker.port),
    );
    let observer = Observer::connect(broker.port, &["otp2mqtt/+/state"]);
    let bridge = BridgeProcess::run(&config);
    let started = SystemTime::now();
    // Watch two-second and three-second sensors across several boundaries.
    let messages = observer.wait_until(Duration::from_secs(15), &|| bridge.log(), |m| {
        m.iter()
            .any(|r| r.at.duration_since(started).unwrap() > Duration::from_millis(7_500))
    });
    let expected = expectations();
    for (name, topic) in [
        ("Front Door", "otp2mqtt/front_door/state"),
        ("Garage", "otp2mqtt/garage-door/state"),
    ] {
        let sensor = &expected[name];
        let states: Vec<&Received> = messages.iter().filter(|m| m.topic == topic).collect();
        let mut windows: Vec<u64> = Vec::new();
        for state in &states {
            assert!(
                code_fits(
                    &state.text(),
                    &sensor.secret,
                    sensor.algorithm,
                    sensor.digits,
                    sensor.period,
                    state.at
                ),
                "{name}: code {} does not fit its window",
                state.text()
            );
            let window = unix_seconds(state.at - Duration::from_millis(200)) / sensor.period;
            if windows.last() != Some(&window) {
                windows.push(window);
            }
        }
        // Every window between the first and last one seen got its code: none skipped.
        let first = *windows.first().unwrap();
        let last = *windows.last().unwrap();
        assert!(
            last - first >= 2,
            "{name}: saw too few windows: {windows:?}"
        );
        let expected_windows: Vec<u64> = (first..=last).collect();
        assert_eq!(windows, expected_windows, "{name}");
        // Boundary-aligned: apart from the first announce and its re-sends, each
        // code arrives at the very start of its window, not "about every period".
        let aligned = states
            .iter()
            .filter(|s| {
                let offset =
                    s.at.duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis()
                        % (sensor.period as u128 * 1000);
                offset < 500
            })
            .count();
        assert!(
            aligned as u64 >= last - first,
            "{name}: codes not aligned to the clock: {aligned} of {}",
            states.len()
        );
    }
}

#[test]
fn home_assistant_birth_message_brings_a_full_reannounce() {
    let broker = Broker::start();
    let config = write_config(
        broker.dir(),
        "otp2mqtt.yaml",
        &three_sensor_config(broker.port),
    );
    let observer = Observer::connect(broker.port, &["homeassistant/sensor/#", "otp2mqtt/#"]);
    let bridge = BridgeProcess::run(&config);
    observer.wait_until(Duration::from_secs(10), &|| bridge.log(), |m| {
        discovery_configs(m).len() >= 3
    });
    // Let the initial announce and its code re-sends pass, then start afresh.
    std::thread::sleep(Duration::from_millis(3_500));
    observer.clear();
    observer.publish("homeassistant/status", b"online", false);
    let messages = observer.wait_until(Duration::from_secs(5), &|| bridge.log(), |m| {
        discovery_configs(m).len() >= 3
            && m.iter()
                .any(|r| r.topic == "otp2mqtt/status" && r.text() == "online")
            && m.iter().any(|r| r.topic == "otp2mqtt/otp_sensor/state")
    });
    let expected = &expectations()["OTP Sensor"];
    for state in messages
        .iter()
        .filter(|m| m.topic == "otp2mqtt/otp_sensor/state")
    {
        assert!(code_fits(
            &state.text(),
            &expected.secret,
            "SHA1",
            6,
            30,
            state.at
        ));
    }
    // Garbage on the status topic is ignored: the bridge keeps running.
    observer.publish("homeassistant/status", &vec![0xff; 100_000], false);
    observer.publish("homeassistant/status", b"offline", false);
    observer.clear();
    observer.wait_until(Duration::from_secs(5), &|| bridge.log(), |m| {
        m.iter().any(|r| r.topic == "otp2mqtt/front_door/state")
    });
}

/// Stops a running bridge with `signal` and checks the clean shutdown: exit 0,
/// a retained `offline`, and a DISCONNECT (not the last will) at the broker.
fn stops_cleanly_on(signal: i32) {
    let broker = Broker::start();
    let config = write_config(
        broker.dir(),
        "otp2mqtt.yaml",
        &three_sensor_config(broker.port),
    );
    let observer = Observer::connect(broker.port, &["otp2mqtt/status"]);
    let mut bridge = BridgeProcess::run(&config);
    observer.wait_until(Duration::from_secs(10), &|| bridge.log(), |m| {
        m.iter().any(|r| r.text() == "online")
    });
    bridge.signal(signal);
    let status = bridge
        .wait(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("otp2mqtt did not exit after signal {signal}"));
    assert!(status.success(), "exit status {status}\n{}", bridge.log());
    let availability = retained(broker.port, "otp2mqtt/status");
    assert_eq!(availability.len(), 1);
    assert_eq!(availability[0].text(), "offline");
    assert!(
        broker.log().contains("Received DISCONNECT from otp2mqtt"),
        "{}\n{}",
        broker.log(),
        bridge.log()
    );
    assert!(bridge.log().contains("shutting down"));
}

#[test]
fn sigterm_marks_everything_offline_and_exits_zero() {
    stops_cleanly_on(libc::SIGTERM);
}

#[test]
fn sigint_works_like_sigterm() {
    stops_cleanly_on(libc::SIGINT);
}

#[test]
fn a_broken_config_exits_before_connecting_and_publishes_nothing() {
    let broker = Broker::start();
    let config = write_config(
        broker.dir(),
        "broken.yaml",
        &format!(
            "mqtt:\n  port: {}\nsensors:\n  - name: Good\n    token: {SHA1_SECRET}\n  - name: Front Door\n    token: {SHA1_SECRET}X1\n",
            broker.port
        ),
    );
    let mut bridge = BridgeProcess::run(&config);
    let status = bridge
        .wait(Duration::from_secs(10))
        .expect("otp2mqtt kept running on a broken config");
    assert_eq!(status.code(), Some(78), "{}", bridge.log());
    let log = bridge.log();
    assert!(
        log.contains("broken.yaml") && log.contains("Front Door") && log.contains("token"),
        "{log}"
    );
    assert!(!log.contains(SHA1_SECRET), "secret in the error: {log}");
    assert!(
        !broker.log().contains("otp2mqtt"),
        "the bridge connected:\n{}",
        broker.log()
    );
    assert!(retained(broker.port, "#").is_empty());
}

#[test]
fn a_missing_config_file_is_named() {
    let mut bridge = BridgeProcess::run(std::path::Path::new("/nonexistent/otp2mqtt.yaml"));
    let status = bridge.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(78));
    assert!(
        bridge
            .log()
            .contains("/nonexistent/otp2mqtt.yaml: not found"),
        "{}",
        bridge.log()
    );
}

#[test]
fn environment_variables_override_the_file() {
    let broker = Broker::start();
    // The file points at a port nobody listens on; the environment fixes it.
    let config = write_config(
        broker.dir(),
        "otp2mqtt.toml",
        &format!("[mqtt]\nport = 1\n[[sensors]]\nname = \"Env Test\"\ntoken = \"{SHA1_SECRET}\"\n"),
    );
    let observer = Observer::connect(broker.port, &["envbase/#"]);
    let port = broker.port.to_string();
    let bridge = BridgeProcess::spawn(
        &["run"],
        &[
            ("OTP2MQTT_CONFIG", config.to_str().unwrap()),
            ("OTP2MQTT__MQTT__PORT", &port),
            ("OTP2MQTT__MQTT__HOST", "127.0.0.1"),
            ("OTP2MQTT__MQTT__BASE_TOPIC", "envbase"),
        ],
    );
    observer.wait_until(Duration::from_secs(10), &|| bridge.log(), |m| {
        m.iter().any(|r| r.topic == "envbase/env_test/state")
    });
}

#[test]
fn thousands_of_sensors_are_announced_completely_in_paced_batches() {
    // More discovery configs than one announce window (512), so the announce
    // has to wait for the broker's acks several times.
    let broker = Broker::start();
    let mut config = format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {}\nsensors:\n",
        broker.port
    );
    for index in 0..1500 {
        config.push_str(&format!(
            "  - name: Sensor {index}\n    token: {SHA256_SECRET}\n"
        ));
        if index % 3 == 0 {
            config.push_str("    verify: {}\n");
        }
    }
    let path = write_config(broker.dir(), "otp2mqtt.yaml", &config);
    let observer = Observer::connect(broker.port, &["otp2mqtt/status", "otp2mqtt/+/state"]);
    let bridge = BridgeProcess::run(&path);
    observer.wait_until(Duration::from_secs(20), &|| bridge.log(), |m| {
        m.iter()
            .any(|r| r.topic == "otp2mqtt/status" && r.text() == "online")
            && m.iter().filter(|r| r.topic.ends_with("/state")).count() >= 1500
    });
    let configs = retained(broker.port, "homeassistant/#");
    assert_eq!(
        configs.len(),
        1500 + 500 * 2,
        "every sensor, event and keypad config"
    );
    let secret = base32_decode(SHA256_SECRET);
    for state in observer.on("otp2mqtt/sensor_1499/state") {
        assert!(code_fits(&state.text(), &secret, "SHA1", 6, 30, state.at));
    }
}
