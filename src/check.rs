//! `otp2mqtt check`: is this setup usable? Validates the config with every rule
//! `run` applies, lists the sensors as Home Assistant will see them (never a
//! secret), warns about weak or unusual settings, reports the clock's NTP
//! synchronisation and, with `--connect`, tries the broker.
//!
//! The report is built by a pure function from what was found; only [`run`]
//! reads the config, the kernel and the network.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Outgoing, Packet};

use crate::app::EXIT_CONFIG;
use crate::cli::CheckArgs;
use crate::clock_sync::{self, ClockSync};
use crate::config::{self, DEFAULT_PERIOD, MqttSettings, Settings};
use crate::connection;
use crate::messages::{Message, Qos};
use crate::sensor::Sensor;

/// How long `--connect` waits for the broker's answer, all attempts included.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// How long a clean disconnect may take before we give up on it.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// What `check` found, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The full report, for stdout.
    pub text: String,
    /// Why the setup is not usable; empty when it is.
    pub problems: Vec<String>,
}

/// Runs `otp2mqtt check`.
pub async fn run(args: &CheckArgs) -> ExitCode {
    let settings = match config::load(&args.config.config) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("otp2mqtt: error: {error}");
            eprintln!("otp2mqtt: the config is not usable");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let clock = clock_sync::read();
    let broker = if args.connect {
        Some(try_connect(&settings.mqtt).await)
    } else {
        None
    };
    let report = report(&settings, clock, broker.as_ref(), args.allow_unsynced_clock);
    print!("{}", report.text);
    if report.problems.is_empty() {
        return ExitCode::SUCCESS;
    }
    for problem in &report.problems {
        eprintln!("otp2mqtt: error: {problem}");
    }
    ExitCode::FAILURE
}

/// Builds the report from a loaded config, the clock's state and, with
/// `--connect`, the broker's answer (`Err` holds the reason it failed).
pub fn report(
    settings: &Settings,
    clock: ClockSync,
    broker: Option<&Result<(), String>>,
    allow_unsynced_clock: bool,
) -> Report {
    let mut problems = Vec::new();
    let mut text = format!(
        "Config {}: valid\n\
         Broker: {} as client id '{}'{}\n\n",
        settings.source.display(),
        settings.mqtt.broker_address(),
        settings.mqtt.client_id,
        match &settings.mqtt.username {
            Some(username) => format!(", user '{username}'"),
            None => String::new(),
        }
    );

    text.push_str(&sensor_table(&settings.sensors));

    let mut warnings = settings.warnings.clone();
    warnings.extend(period_warnings(&settings.sensors));
    warnings.extend(entity_id_warnings(&settings.sensors));
    if clock.is_unsynchronised() && allow_unsynced_clock {
        warnings.push(
            "the system clock is not NTP-synchronised (accepted with --allow-unsynced-clock)"
                .into(),
        );
    }
    if !warnings.is_empty() {
        text.push_str(&format!("\nWarnings ({}):\n", warnings.len()));
        for warning in &warnings {
            text.push_str(&format!("  - {warning}\n"));
        }
    }

    text.push_str(&format!("\nClock: {clock}\n"));
    if clock.is_unsynchronised() && !allow_unsynced_clock {
        problems.push(
            "the system clock is not NTP-synchronised, so codes will drift away from the phone's: enable NTP (chrony, ntpd or `timedatectl set-ntp true`), or pass --allow-unsynced-clock if the clock is kept right by other means".to_string(),
        );
    }

    match broker {
        None => text.push_str("Broker connection: not tried (add --connect)\n"),
        Some(Ok(())) => text.push_str(&format!(
            "Broker connection: OK, {} accepted the connection; disconnected cleanly\n",
            settings.mqtt.broker_address()
        )),
        Some(Err(reason)) => {
            text.push_str(&format!("Broker connection: FAILED: {reason}\n"));
            problems.push(format!(
                "cannot connect to the MQTT broker at {}: {reason}",
                settings.mqtt.broker_address()
            ));
        }
    }

    text.push_str(if problems.is_empty() {
        "\nResult: usable\n"
    } else {
        "\nResult: NOT usable\n"
    });
    Report { text, problems }
}

/// The entity id Home Assistant gives a sensor: its device is named after the
/// sensor and the entity's own name is null, so it is `sensor.` + the slug of
/// the sensor's name (`OTP Sensor` → `sensor.otp_sensor`).
pub fn entity_id(sensor: &Sensor) -> String {
    format!("sensor.{}", config::slug(&sensor.name))
}

/// One line per sensor: id, name, digits, period, algorithm, entity id. Never
/// the secret.
pub fn sensor_table(sensors: &[Sensor]) -> String {
    let rows: Vec<[String; 6]> = sensors
        .iter()
        .map(|sensor| {
            [
                sensor.id.clone(),
                sensor.name.clone(),
                sensor.digits.to_string(),
                format!("{} s", sensor.period),
                sensor.algorithm.to_string(),
                entity_id(sensor),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "DIGITS", "PERIOD", "ALGORITHM", "ENTITY ID"].map(String::from);
    let mut widths = header.clone().map(|title| title.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = format!("Sensors ({}):\n", sensors.len());
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        table.push_str(&format!("  {}\n", cells.join("  ").trim_end()));
    }
    table
}

/// Google Authenticator-style apps ignore the period and always use 30 s.
fn period_warnings(sensors: &[Sensor]) -> Vec<String> {
    sensors
        .iter()
        .filter(|sensor| sensor.period != DEFAULT_PERIOD)
        .map(|sensor| {
            format!(
                "sensor '{}': period {} s: Google Authenticator-style apps ignore the period and use 30 s, so they would show other codes; use an app that honours it, or 30 s",
                sensor.id, sensor.period
            )
        })
        .collect()
}

/// Names with the same slug get the same entity id; Home Assistant then gives
/// the later one a `_2` suffix, which surprises automations.
fn entity_id_warnings(sensors: &[Sensor]) -> Vec<String> {
    let mut first_by_entity: HashMap<String, &str> = HashMap::new();
    let mut warnings = Vec::new();
    for sensor in sensors {
        let entity = entity_id(sensor);
        match first_by_entity.get(entity.as_str()) {
            Some(first) => warnings.push(format!(
                "sensors '{first}' and '{}' both want the entity id {entity}: Home Assistant will give the second one {entity}_2; give them distinct names",
                sensor.id
            )),
            None => {
                first_by_entity.insert(entity, &sensor.id);
            }
        }
    }
    warnings
}

/// Connects once with the bridge's own options (same host, port, credentials,
/// keep-alive), then disconnects cleanly. Two things differ so that a running
/// bridge is not disturbed: the client id gets a random `-check-` suffix (the
/// broker would otherwise drop the bridge's session), and the last will is a
/// non-retained empty message on `<base_topic>/check` instead of the retained
/// `offline`, so even a broken connection leaves nothing behind.
pub async fn try_connect(settings: &MqttSettings) -> Result<(), String> {
    let harmless_will = Message {
        topic: format!("{}/check", settings.base_topic),
        payload: Vec::new(),
        retain: false,
        qos: Qos::AtMostOnce,
    };
    let mut options = connection::mqtt_options(settings, &harmless_will);
    options.set_client_id(format!(
        "{}-check-{:08x}",
        settings.client_id,
        rand::random::<u32>()
    ));
    let (client, mut event_loop) = AsyncClient::new(options, 10);
    event_loop.network_options.set_tcp_nodelay(true);
    event_loop
        .network_options
        .set_connection_timeout(connection::CONNECT_TIMEOUT_SECS);

    let connected = tokio::time::timeout(CONNECT_DEADLINE, async {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => continue,
                Err(error) => return Err(connection::describe(&error)),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {} s", CONNECT_DEADLINE.as_secs())));
    connected?;

    // A clean DISCONNECT: the broker discards the will.
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(DISCONNECT_GRACE, async {
            loop {
                match event_loop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::clock_sync::UnknownReason;

    const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn settings(sensors_yaml: &str) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otp2mqtt.yaml");
        std::fs::write(&path, format!("sensors:\n{sensors_yaml}")).unwrap();
        config::load_with_environment(&path, Some(HashMap::new())).unwrap()
    }

    const SYNCED: ClockSync = ClockSync::Synchronised {
        estimated_error: Duration::from_millis(1),
        maximum_error: Duration::from_millis(20),
    };

    #[test]
    fn lists_sensors_with_entity_ids_and_never_the_secret() {
        let settings = settings(&format!(
            "  - token: {SECRET}\n  - name: Front Door\n    id: door\n    token: {SECRET}\n    digits: 8\n    algorithm: sha256\n"
        ));
        let report = report(&settings, SYNCED, None, false);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let text = &report.text;
        assert!(text.contains("Sensors (2):"), "{text}");
        assert!(
            text.contains(
                "  ID          NAME        DIGITS  PERIOD  ALGORITHM  ENTITY ID\n  otp_sensor  OTP Sensor  6       30 s    SHA1       sensor.otp_sensor\n  door        Front Door  8       30 s    SHA256     sensor.front_door\n"
            ),
            "{text}"
        );
        assert!(text.contains("Clock: synchronised"), "{text}");
        assert!(text.contains("not tried (add --connect)"), "{text}");
        assert!(text.ends_with("Result: usable\n"), "{text}");
        assert!(!text.contains("Warnings"), "{text}");
        assert!(!text.contains("GEZD") && !text.contains("gezd"), "{text}");
    }

    #[test]
    fn warns_about_short_secrets_odd_periods_and_entity_id_clashes() {
        let settings = settings(&format!(
            "  - name: Door\n    token: JBSWY3DPEHPK3PXP\n  - name: door!\n    id: door2\n    token: {SECRET}\n    period: 60\n"
        ));
        let text = report(&settings, SYNCED, None, false).text;
        assert!(text.contains("Warnings (3):"), "{text}");
        assert!(text.contains("'door': the secret is 80 bits"), "{text}");
        assert!(text.contains("'door2': period 60 s"), "{text}");
        assert!(text.contains("sensor.door_2"), "{text}");
    }

    #[test]
    fn an_unsynchronised_clock_is_a_problem_unless_allowed() {
        let settings = settings(&format!("  - token: {SECRET}\n"));
        let refused = report(&settings, ClockSync::Unsynchronised, None, false);
        assert_eq!(refused.problems.len(), 1);
        assert!(refused.problems[0].contains("not NTP-synchronised"));
        assert!(refused.text.contains("Clock: NOT synchronised"));
        assert!(refused.text.ends_with("Result: NOT usable\n"));

        let allowed = report(&settings, ClockSync::Unsynchronised, None, true);
        assert!(allowed.problems.is_empty());
        assert!(allowed.text.contains("--allow-unsynced-clock"));

        let unknown = ClockSync::Unknown {
            reason: UnknownReason::UnsupportedSystem,
        };
        assert!(report(&settings, unknown, None, false).problems.is_empty());
    }

    #[test]
    fn broker_outcome_is_reported() {
        let settings = settings(&format!("  - token: {SECRET}\n"));
        let ok = report(&settings, SYNCED, Some(&Ok(())), false);
        assert!(ok.text.contains("Broker connection: OK"), "{}", ok.text);
        let failed = report(
            &settings,
            SYNCED,
            Some(&Err("Connection refused (os error 111)".into())),
            false,
        );
        assert_eq!(
            failed.problems,
            vec![
                "cannot connect to the MQTT broker at localhost:1883: Connection refused (os error 111)"
                    .to_string()
            ]
        );
    }

    #[test]
    fn entity_ids_follow_the_sensor_name() {
        let settings = settings(&format!(
            "  - name: \"Guest/WiFi 2\"\n    token: {SECRET}\n"
        ));
        assert_eq!(entity_id(&settings.sensors[0]), "sensor.guest_wifi_2");
        assert!(Path::new(&settings.source).ends_with("otp2mqtt.yaml"));
    }
}
