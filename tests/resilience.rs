//! Staying right over time: a broker that starts late, restarts and forgets,
//! Home Assistant restarts, removed sensors, uninstalling, crashes, and two
//! instances on one broker. Every broker here is real and really restarted.

mod support;

use std::time::{Duration, Instant};

use support::*;

const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn config(port: u16, extra_top: &str, sensors: &[&str]) -> String {
    let mut text = format!("{extra_top}mqtt:\n  host: 127.0.0.1\n  port: {port}\nsensors:\n");
    for name in sensors {
        text.push_str(&format!(
            "  - name: {name}\n    token: {SECRET}\n    period: 2\n"
        ));
    }
    text
}

/// Polls the broker's retained messages until `condition` holds.
fn wait_for_retained(
    port: u16,
    filter: &str,
    timeout: Duration,
    condition: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let deadline = Instant::now() + timeout;
    loop {
        let messages = retained(port, filter);
        if condition(&messages) {
            return messages;
        }
        let dump: Vec<String> = messages
            .iter()
            .map(|m| format!("{} {}", m.topic, m.text()))
            .collect();
        assert!(
            Instant::now() < deadline,
            "retained messages never matched:\n{}",
            dump.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn has(messages: &[Received], topic: &str) -> bool {
    messages
        .iter()
        .any(|m| m.topic == topic && !m.payload.is_empty())
}

#[test]
fn bridge_started_before_the_broker_waits_quietly_then_connects() {
    let mut broker = Broker::unstarted();
    std::fs::write(
        broker.dir().join("c.yaml"),
        config(broker.port, "", &["Door"]),
    )
    .unwrap();
    let bridge = BridgeProcess::run(&broker.dir().join("c.yaml"));
    // A few failed attempts with backoff, logged once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bridge.log().contains("waiting for the MQTT broker") {
        assert!(Instant::now() < deadline, "{}", bridge.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    let observer = Observer::connect(broker.port, &["otp2mqtt/#"]);
    observer.wait_until(Duration::from_secs(20), &|| bridge.log(), |m| {
        m.iter().any(|r| r.topic == "otp2mqtt/door/state")
    });
    assert!(has(
        &retained(broker.port, "homeassistant/#"),
        "homeassistant/sensor/otp2mqtt/door/config"
    ));
    let log = bridge.log();
    assert_eq!(
        log.matches("waiting for the MQTT broker").count(),
        1,
        "one line per state change:\n{log}"
    );
    assert_eq!(log.matches("connected to MQTT broker").count(), 1, "{log}");
}

#[test]
fn broker_restart_that_loses_everything_is_repaired() {
    let mut broker = Broker::start();
    std::fs::write(
        broker.dir().join("c.yaml"),
        config(broker.port, "", &["Door", "Gate"]),
    )
    .unwrap();
    let bridge = BridgeProcess::run(&broker.dir().join("c.yaml"));
    wait_for_retained(
        broker.port,
        "homeassistant/#",
        Duration::from_secs(10),
        |m| m.len() == 2,
    );

    broker.stop();
    broker.restart();
    // Nothing retained survives a broker without persistence…
    let observer = Observer::connect(broker.port, &["homeassistant/#", "otp2mqtt/#"]);
    // …until the bridge reconnects and announces everything again.
    let messages = observer.wait_until(Duration::from_secs(15), &|| bridge.log(), |m| {
        has(m, "homeassistant/sensor/otp2mqtt/door/config")
            && has(m, "homeassistant/sensor/otp2mqtt/gate/config")
            && m.iter()
                .any(|r| r.topic == "otp2mqtt/status" && r.text() == "online")
            && m.iter().any(|r| r.topic == "otp2mqtt/gate/state")
    });
    let secret = base32_decode(SECRET);
    for state in messages.iter().filter(|m| m.topic.ends_with("/state")) {
        assert!(
            code_fits(&state.text(), &secret, "SHA1", 6, 2, state.at),
            "stale code after reconnect"
        );
    }
    wait_for_retained(
        broker.port,
        "otp2mqtt/status",
        Duration::from_secs(5),
        |m| m.len() == 1 && m[0].text() == "online",
    );

    // The status subscription was restored: a Home Assistant restart is answered.
    std::thread::sleep(Duration::from_millis(3_500));
    observer.clear();
    observer.publish("homeassistant/status", b"online", false);
    observer.wait_until(Duration::from_secs(5), &|| bridge.log(), |m| {
        has(m, "homeassistant/sensor/otp2mqtt/door/config")
    });
    let log = bridge.log();
    assert_eq!(log.matches("lost the connection").count(), 1, "{log}");
}

#[test]
fn removed_sensors_are_cleared_and_nothing_else_is_touched() {
    let broker = Broker::start();
    let seeder = Observer::connect(broker.port, &["seed/#"]);
    // A ghost of this instance, a config of another instance, another program's.
    let ghost = "homeassistant/sensor/otp2mqtt/old_door/config";
    let ghost_event = "homeassistant/event/otp2mqtt/old_door/config";
    let other_instance = "homeassistant/sensor/garage/old_door/config";
    let other_program = "homeassistant/binary_sensor/zigbee2mqtt/old_door/config";
    for topic in [ghost, ghost_event, other_instance, other_program] {
        seeder.publish(topic, br#"{"state_topic":"x"}"#, true);
    }
    wait_for_retained(
        broker.port,
        "homeassistant/#",
        Duration::from_secs(5),
        |m| m.len() == 4,
    );

    std::fs::write(
        broker.dir().join("c.yaml"),
        config(broker.port, "", &["Door"]),
    )
    .unwrap();
    let bridge = BridgeProcess::run(&broker.dir().join("c.yaml"));
    let remaining = wait_for_retained(
        broker.port,
        "homeassistant/#",
        Duration::from_secs(10),
        |m| {
            !has(m, ghost)
                && !has(m, ghost_event)
                && has(m, "homeassistant/sensor/otp2mqtt/door/config")
        },
    );
    assert!(
        has(&remaining, other_instance),
        "another instance's config was touched"
    );
    assert!(
        has(&remaining, other_program),
        "another program's config was touched"
    );
    assert_eq!(remaining.len(), 3);
    assert!(bridge.log().contains("old_door"), "{}", bridge.log());
}

#[test]
fn purge_leaves_nothing_of_this_instance_retained() {
    let broker = Broker::start();
    let seeder = Observer::connect(broker.port, &["seed/#"]);
    let other_instance = "homeassistant/sensor/garage/door/config";
    let ghost = "homeassistant/sensor/otp2mqtt/removed_long_ago/config";
    seeder.publish(other_instance, b"{}", true);
    let path = broker.dir().join("c.yaml");
    std::fs::write(&path, config(broker.port, "", &["Door", "Gate"])).unwrap();
    let mut bridge = BridgeProcess::run(&path);
    wait_for_retained(
        broker.port,
        "homeassistant/#",
        Duration::from_secs(10),
        |m| m.len() == 3,
    );
    bridge.signal(libc::SIGTERM);
    assert!(bridge.wait(Duration::from_secs(5)).unwrap().success());
    // A ghost left by some earlier configuration is purged too.
    seeder.publish(ghost, b"{}", true);
    wait_for_retained(
        broker.port,
        "homeassistant/#",
        Duration::from_secs(5),
        |m| has(m, ghost),
    );

    let mut purge = BridgeProcess::spawn(&["purge", "--config", path.to_str().unwrap()], &[]);
    let status = purge.wait(Duration::from_secs(20)).expect("purge hung");
    assert!(status.success(), "{}", purge.log());
    let everything = retained(broker.port, "#");
    let topics: Vec<&str> = everything.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        vec![other_instance],
        "only the other instance's config may remain"
    );
}

#[test]
fn a_crash_is_reported_by_the_last_will() {
    let broker = Broker::start();
    std::fs::write(
        broker.dir().join("c.yaml"),
        config(broker.port, "", &["Door"]),
    )
    .unwrap();
    let mut bridge = BridgeProcess::run(&broker.dir().join("c.yaml"));
    wait_for_retained(
        broker.port,
        "otp2mqtt/status",
        Duration::from_secs(10),
        |m| m.len() == 1 && m[0].text() == "online",
    );
    bridge.signal(libc::SIGKILL);
    bridge.wait(Duration::from_secs(5)).unwrap();
    wait_for_retained(
        broker.port,
        "otp2mqtt/status",
        Duration::from_secs(10),
        |m| m.len() == 1 && m[0].text() == "offline",
    );
}

#[test]
fn two_instances_share_a_broker_without_interfering() {
    let broker = Broker::start();
    let first = broker.dir().join("first.yaml");
    let second = broker.dir().join("second.yaml");
    std::fs::write(
        &first,
        config(broker.port, "instance_id: upstairs\n", &["Door"]),
    )
    .unwrap();
    std::fs::write(
        &second,
        config(broker.port, "instance_id: downstairs\n", &["Door"]),
    )
    .unwrap();
    let observer = Observer::connect(broker.port, &["otp2mqtt/#"]);
    let first_bridge = BridgeProcess::run(&first);
    wait_for_retained(
        broker.port,
        "homeassistant/#",
        Duration::from_secs(10),
        |m| m.len() == 1,
    );
    // The second instance starts later: its stale-config cleanup must spare the first's.
    let mut second_bridge = BridgeProcess::run(&second);
    let configs = wait_for_retained(
        broker.port,
        "homeassistant/#",
        Duration::from_secs(10),
        |m| m.len() == 2,
    );
    let topics: Vec<&str> = configs.iter().map(|m| m.topic.as_str()).collect();
    assert!(
        topics.contains(&"homeassistant/sensor/upstairs/door/config"),
        "{topics:?}"
    );
    assert!(
        topics.contains(&"homeassistant/sensor/downstairs/door/config"),
        "{topics:?}"
    );
    observer.wait_until(Duration::from_secs(10), &|| second_bridge.log(), |m| {
        m.iter().any(|r| r.topic == "otp2mqtt/upstairs/door/state")
            && m.iter()
                .any(|r| r.topic == "otp2mqtt/downstairs/door/state")
    });

    // Stopping one leaves the other online and publishing.
    second_bridge.signal(libc::SIGTERM);
    assert!(
        second_bridge
            .wait(Duration::from_secs(5))
            .unwrap()
            .success()
    );
    let status = retained(broker.port, "otp2mqtt/+/status");
    let of = |topic: &str| status.iter().find(|m| m.topic == topic).map(|m| m.text());
    assert_eq!(of("otp2mqtt/downstairs/status").as_deref(), Some("offline"));
    assert_eq!(of("otp2mqtt/upstairs/status").as_deref(), Some("online"));
    observer.clear();
    observer.wait_until(Duration::from_secs(5), &|| first_bridge.log(), |m| {
        m.iter().any(|r| r.topic == "otp2mqtt/upstairs/door/state")
    });
    assert!(
        broker.log().contains("otp2mqtt-upstairs") && broker.log().contains("otp2mqtt-downstairs")
    );
}

#[test]
fn healthcheck_follows_the_running_bridge() {
    let mut broker = Broker::start();
    let health_file = broker.dir().join("health.json");
    let path = broker.dir().join("c.yaml");
    std::fs::write(
        &path,
        config(
            broker.port,
            &format!("health_file: {}\n", health_file.display()),
            &["Door"],
        ),
    )
    .unwrap();
    let healthcheck = || {
        let mut probe =
            BridgeProcess::spawn(&["healthcheck", "--config", path.to_str().unwrap()], &[]);
        let status = probe
            .wait(Duration::from_secs(10))
            .expect("healthcheck hung");
        (status.success(), probe.log())
    };
    let wait_for = |healthy: bool, bridge: &BridgeProcess| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (ok, log) = healthcheck();
            if ok == healthy {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "healthcheck never became {healthy}: {log}\n{}",
                bridge.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Not running: unhealthy, with the reason.
    let (ok, log) = healthcheck();
    assert!(!ok && log.contains("cannot read the health file"), "{log}");

    let mut bridge = BridgeProcess::run(&path);
    wait_for(true, &bridge);
    // Broker gone: unhealthy; back: healthy again.
    broker.stop();
    let log = wait_for(false, &bridge);
    assert!(log.contains("not connected"), "{log}");
    broker.restart();
    wait_for(true, &bridge);
    // Stopped: unhealthy.
    bridge.signal(libc::SIGTERM);
    assert!(bridge.wait(Duration::from_secs(5)).unwrap().success());
    let log = wait_for(false, &bridge);
    assert!(log.contains("not connected"), "{log}");
    // Killed while connected: the file still says connected, but goes stale.
    let bridge = BridgeProcess::run(&path);
    wait_for(true, &bridge);
    bridge.signal(libc::SIGKILL);
    let log = wait_for(false, &bridge);
    assert!(log.contains("no code published for"), "{log}");
}
