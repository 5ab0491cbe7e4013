//! Every MQTT message otp2mqtt sends, built as plain values: topics, Home
//! Assistant discovery configs, availability, state and attributes.
//!
//! Pure: no client, no clock. The bridge decides when to send; this decides what.

use serde_json::{Value, json};

use crate::config::Settings;
use crate::schedule::UnixTime;
use crate::sensor::Sensor;
use crate::verify::Outcome;

pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";
/// The icon of Home Assistant's built-in `otp` sensor.
pub const ICON: &str = "mdi:lock-clock";
/// Added to the period for `expire_after`: the next code normally arrives within
/// milliseconds of the boundary; this much slack absorbs a busy broker or a
/// reconnect without flapping, while a dead bridge still turns "unavailable"
/// before anyone can read a stale code for long.
pub const EXPIRY_SLACK_SECS: u64 = 5;

/// Delivery guarantee, mirroring MQTT's without depending on a client library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub qos: Qos,
}

/// The topics of one bridge instance, derived once from the settings.
#[derive(Debug, Clone)]
pub struct Topics {
    discovery_prefix: String,
    base_topic: String,
    instance_id: String,
    /// Home Assistant's birth/last-will topic, which we subscribe to.
    pub status: String,
    /// With replicas: every member's id, and this process's.
    replica_members: Vec<String>,
    this_replica: Option<String>,
}

impl Topics {
    pub fn new(settings: &Settings) -> Self {
        Topics {
            discovery_prefix: settings.homeassistant.discovery_prefix.clone(),
            base_topic: settings.mqtt.base_topic.clone(),
            instance_id: settings.instance_id.clone(),
            status: settings.homeassistant.status_topic.clone(),
            replica_members: settings
                .replicas
                .as_ref()
                .map(|replicas| replicas.members.clone())
                .unwrap_or_default(),
            this_replica: settings
                .replicas
                .as_ref()
                .map(|replicas| replicas.this.clone()),
        }
    }

    /// Where this process says `online`/`offline` (also its last will).
    pub fn availability(&self) -> String {
        self.availability_of(self.this_replica.as_deref())
    }

    fn availability_of(&self, replica: Option<&str>) -> String {
        match replica {
            Some(replica) => format!("{}/status/{replica}", self.base_topic),
            None => format!("{}/status", self.base_topic),
        }
    }

    /// Every availability topic of this instance: one, or one per replica.
    pub fn all_availability(&self) -> Vec<String> {
        if self.replica_members.is_empty() {
            vec![self.availability()]
        } else {
            self.replica_members
                .iter()
                .map(|member| self.availability_of(Some(member)))
                .collect()
        }
    }

    pub fn state(&self, sensor_id: &str) -> String {
        format!("{}/{sensor_id}/state", self.base_topic)
    }

    /// The attributes topic of a sensor, shared by every sensor with the same
    /// period, digits and algorithm: their attributes are identical.
    pub fn attributes(&self, sensor: &Sensor) -> String {
        format!(
            "{}/attributes/{}s-{}-{}",
            self.base_topic,
            sensor.period,
            sensor.digits,
            sensor.algorithm.as_str().to_ascii_lowercase()
        )
    }

    /// A private topic for a marker message: published after subscribing, it
    /// comes back after every retained message of the subscription.
    pub fn marker(&self, nonce: u64) -> String {
        format!("{}/marker/{nonce:016x}", self.base_topic)
    }

    /// Where a keypad sends codes to check.
    pub fn verify(&self, sensor_id: &str) -> String {
        format!("{}/{sensor_id}/verify", self.base_topic)
    }

    /// Where each check is answered (JSON, not retained).
    pub fn verify_result(&self, sensor_id: &str) -> String {
        format!("{}/{sensor_id}/verify/result", self.base_topic)
    }

    /// Home Assistant `event` entity state topic.
    pub fn verify_event(&self, sensor_id: &str) -> String {
        format!("{}/{sensor_id}/verify/event", self.base_topic)
    }

    /// State of the keypad `text` entity: cleared after each entry.
    pub fn keypad_state(&self, sensor_id: &str) -> String {
        format!("{}/{sensor_id}/verify/keypad", self.base_topic)
    }

    /// Per-component discovery topic: `<prefix>/<component>/<instance>/<id>/config`.
    pub fn discovery_config(&self, component: &str, sensor_id: &str) -> String {
        format!(
            "{}/{component}/{}/{sensor_id}/config",
            self.discovery_prefix, self.instance_id
        )
    }

    /// Matches every discovery config of this instance, of any component, and
    /// nothing of other instances or programs.
    pub fn discovery_filter(&self) -> String {
        format!("{}/+/{}/+/config", self.discovery_prefix, self.instance_id)
    }

    /// Whether `topic` is a discovery config topic of this instance (any
    /// component), as matched by [`Topics::discovery_filter`].
    pub fn is_own_discovery_topic(&self, topic: &str) -> bool {
        let Some(rest) = topic
            .strip_prefix(self.discovery_prefix.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            return false;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        matches!(parts.as_slice(), [component, instance, object, "config"]
            if !component.is_empty() && !object.is_empty() && *instance == self.instance_id)
    }

    /// Home Assistant's unique id (and device identifier) of a sensor: from the
    /// instance and sensor id, never from the secret (the config is retained and
    /// readable by every client of the broker).
    pub fn unique_id(&self, sensor_id: &str) -> String {
        format!("otp2mqtt_{}_{sensor_id}", self.instance_id)
    }
}

/// The retained discovery config that makes Home Assistant create the entity.
///
/// The entity's own `name` is `null`, so Home Assistant names it after its
/// device, the sensor's name: "OTP Sensor" becomes `sensor.otp_sensor`, the same
/// entity id as the built-in `otp` sensor. That `null` is the one Home Assistant
/// asks for; nothing else in the payload is ever `null`.
pub fn discovery_config(topics: &Topics, sensor: &Sensor) -> Message {
    let unique_id = topics.unique_id(&sensor.id);
    let payload = json!({
        "name": Value::Null,
        "unique_id": unique_id,
        "state_topic": topics.state(&sensor.id),
        "json_attributes_topic": topics.attributes(sensor),
        "expire_after": sensor.period + EXPIRY_SLACK_SECS,
        "icon": ICON,
        "device": {
            "identifiers": [unique_id],
            "name": sensor.name,
            "manufacturer": "otp2mqtt",
            "model": format!("TOTP {} digits, {} s, {}", sensor.digits, sensor.period, sensor.algorithm),
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
    });
    retained_config(
        topics.discovery_config("sensor", &sensor.id),
        with_availability_and_origin(payload, topics),
    )
}

/// Every discovery config of a sensor: the code sensor, and for a verifying
/// sensor its `event` and keypad `text` entities, all on the sensor's device.
pub fn discovery_configs(topics: &Topics, sensor: &Sensor) -> Vec<Message> {
    let mut configs = vec![discovery_config(topics, sensor)];
    if sensor.verify.is_some() {
        let device = json!({ "identifiers": [topics.unique_id(&sensor.id)] });
        let event = json!({
            "name": "Code entry",
            "unique_id": format!("{}_code_entry", topics.unique_id(&sensor.id)),
            "state_topic": topics.verify_event(&sensor.id),
            "event_types": crate::verify::EVENT_TYPES,
            "icon": "mdi:dialpad",
            "device": device,
        });
        configs.push(retained_config(
            topics.discovery_config("event", &sensor.id),
            with_availability_and_origin(event, topics),
        ));
        // The keypad's state topic only ever carries "", so the typed code does
        // not linger in Home Assistant's state machine and recorder.
        let keypad = json!({
            "name": "Keypad",
            "unique_id": format!("{}_keypad", topics.unique_id(&sensor.id)),
            "command_topic": topics.verify(&sensor.id),
            "state_topic": topics.keypad_state(&sensor.id),
            "mode": "password",
            "min": 0,
            "max": 8,
            "pattern": format!("^([0-9]{{{}}})?$", sensor.digits),
            "icon": "mdi:dialpad",
            "device": device,
        });
        configs.push(retained_config(
            topics.discovery_config("text", &sensor.id),
            with_availability_and_origin(keypad, topics),
        ));
    }
    configs
}

/// Discovery topics of [`discovery_configs`], without building the payloads.
pub fn discovery_topics(topics: &Topics, sensor: &Sensor) -> Vec<String> {
    let components: &[&str] = if sensor.verify.is_some() {
        &["sensor", "event", "text"]
    } else {
        &["sensor"]
    };
    components
        .iter()
        .map(|component| topics.discovery_config(component, &sensor.id))
        .collect()
}

fn retained_config(topic: String, payload: Value) -> Message {
    Message {
        topic,
        payload: payload.to_string().into_bytes(),
        retain: true,
        qos: Qos::AtLeastOnce,
    }
}

/// Adds the availability (one topic, or one per replica with mode `any`) and
/// the `origin` block every discovery config carries.
fn with_availability_and_origin(mut payload: Value, topics: &Topics) -> Value {
    let availability = topics.all_availability();
    if let [single] = availability.as_slice() {
        payload["availability_topic"] = json!(single);
    } else {
        // Replicas: available while any one of them is online, so one replica
        // restarting does not blank the entities.
        payload["availability"] = availability
            .iter()
            .map(|topic| json!({ "topic": topic }))
            .collect();
        payload["availability_mode"] = json!("any");
    }
    payload["payload_available"] = json!(ONLINE);
    payload["payload_not_available"] = json!(OFFLINE);
    payload["origin"] = origin();
    payload
}

/// Home Assistant's `origin` block: who published this discovery config.
fn origin() -> Value {
    json!({
        "name": "otp2mqtt",
        "sw_version": env!("CARGO_PKG_VERSION"),
        "support_url": env!("CARGO_PKG_REPOSITORY"),
    })
}

/// A marker (see [`Topics::marker`]): not retained, QoS 1.
pub fn marker(topic: String) -> Message {
    Message {
        topic,
        payload: b"marker".to_vec(),
        retain: false,
        qos: Qos::AtLeastOnce,
    }
}

/// An empty retained payload deletes a retained discovery config, and with it
/// Home Assistant's entity.
pub fn clear_retained(topic: String) -> Message {
    Message {
        topic,
        payload: Vec::new(),
        retain: true,
        qos: Qos::AtLeastOnce,
    }
}

/// `online`/`offline`, retained so Home Assistant learns it even when it
/// subscribes later.
pub fn availability(topics: &Topics, online: bool) -> Message {
    Message {
        topic: topics.availability(),
        payload: if online { ONLINE } else { OFFLINE }.as_bytes().to_vec(),
        retain: true,
        qos: Qos::AtLeastOnce,
    }
}

/// The current code, as a plain string. Not retained: Home Assistant advises
/// against retained state with `expire_after`, and a retained code would be
/// replayed stale to every new subscriber.
pub fn state(state_topic: &str, sensor: &Sensor, now: UnixTime) -> Message {
    Message {
        topic: state_topic.to_string(),
        payload: sensor.code_at(now).into_bytes(),
        retain: false,
        qos: Qos::AtMostOnce,
    }
}

/// The window the current code is valid in, so users can template a countdown.
pub fn attributes(attributes_topic: &str, sensor: &Sensor, now: UnixTime) -> Message {
    let step = now.step(sensor.period);
    let payload = json!({
        "valid_from": rfc3339(step.start(sensor.period)),
        "valid_until": rfc3339(step.end(sensor.period)),
        "period": sensor.period,
        "digits": sensor.digits,
        "algorithm": sensor.algorithm.as_str(),
    });
    Message {
        topic: attributes_topic.to_string(),
        payload: payload.to_string().into_bytes(),
        retain: false,
        qos: Qos::AtMostOnce,
    }
}

/// The answer to one code check: the result for the caller, the event for Home
/// Assistant, and the keypad cleared. None of them carries the code.
pub fn verify_answer(topics: &Topics, sensor_id: &str, outcome: &Outcome) -> [Message; 3] {
    let message = |topic: String, payload: Vec<u8>| Message {
        topic,
        payload,
        retain: false,
        qos: Qos::AtLeastOnce,
    };
    [
        message(topics.verify_result(sensor_id), outcome.result_payload()),
        message(topics.verify_event(sensor_id), outcome.event_payload()),
        keypad_cleared(topics, sensor_id),
    ]
}

/// An empty keypad state, so the `text` entity never shows a typed code.
pub fn keypad_cleared(topics: &Topics, sensor_id: &str) -> Message {
    Message {
        topic: topics.keypad_state(sensor_id),
        payload: Vec::new(),
        retain: false,
        qos: Qos::AtMostOnce,
    }
}

fn rfc3339(time: UnixTime) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + time.0).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_with_environment;

    fn settings() -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "sensors:\n  - token: JBSWY3DPEHPK3PXP\n  - name: Front Door\n    token: GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n    digits: 8\n    period: 60\n    algorithm: SHA256\n",
        )
        .unwrap();
        load_with_environment(&path, Some(Default::default())).unwrap()
    }

    fn json_of(message: &Message) -> Value {
        serde_json::from_slice(&message.payload).unwrap()
    }

    /// Every `null` in a JSON value, as a path.
    fn nulls(value: &Value, path: &str, found: &mut Vec<String>) {
        match value {
            Value::Null => found.push(path.to_string()),
            Value::Object(map) => map
                .iter()
                .for_each(|(key, value)| nulls(value, &format!("{path}.{key}"), found)),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(index, value)| nulls(value, &format!("{path}[{index}]"), found)),
            _ => {}
        }
    }

    #[test]
    fn discovery_config_golden() {
        let settings = settings();
        let topics = Topics::new(&settings);
        let message = discovery_config(&topics, &settings.sensors[0]);
        assert_eq!(
            message.topic,
            "homeassistant/sensor/otp2mqtt/otp_sensor/config"
        );
        assert!(message.retain);
        assert_eq!(message.qos, Qos::AtLeastOnce);
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            json_of(&message),
            json!({
                "name": null,
                "unique_id": "otp2mqtt_otp2mqtt_otp_sensor",
                "state_topic": "otp2mqtt/otp_sensor/state",
                "json_attributes_topic": "otp2mqtt/attributes/30s-6-sha1",
                "availability_topic": "otp2mqtt/status",
                "payload_available": "online",
                "payload_not_available": "offline",
                "expire_after": 35,
                "icon": "mdi:lock-clock",
                "device": {
                    "identifiers": ["otp2mqtt_otp2mqtt_otp_sensor"],
                    "name": "OTP Sensor",
                    "manufacturer": "otp2mqtt",
                    "model": "TOTP 6 digits, 30 s, SHA1",
                    "sw_version": version,
                },
                "origin": {
                    "name": "otp2mqtt",
                    "sw_version": version,
                    "support_url": "https://github.com/otp2mqtt/otp2mqtt",
                },
            })
        );
    }

    #[test]
    fn discovery_has_no_null_but_the_name_and_no_secret() {
        let settings = settings();
        let topics = Topics::new(&settings);
        for sensor in &settings.sensors {
            let message = discovery_config(&topics, sensor);
            let text = String::from_utf8(message.payload.clone()).unwrap();
            let mut found = Vec::new();
            nulls(&json_of(&message), "", &mut found);
            assert_eq!(found, vec![".name"]);
            for secret_piece in ["JBSW", "GEZD", "jbsw", "gezd", "48656c6c"] {
                assert!(!text.contains(secret_piece), "{text}");
            }
            assert!(!text.contains("object_id"));
        }
    }

    #[test]
    fn state_and_attributes_for_a_window() {
        let settings = settings();
        let topics = Topics::new(&settings);
        let sensor = &settings.sensors[1];
        // RFC 6238 SHA256 vector: T = 1111111109 s, 8 digits, 30 s (here 60 s: the
        // step differs, so compute it from the 30 s vector's step instead).
        let now = UnixTime(std::time::Duration::from_millis(1_234_567_890_500));
        let message = state(&topics.state(&sensor.id), sensor, now);
        assert_eq!(message.topic, "otp2mqtt/front_door/state");
        assert!(!message.retain);
        assert_eq!(message.payload, sensor.code_at(now).into_bytes());
        assert_eq!(message.payload.len(), 8);
        assert_eq!(
            topics.attributes(sensor),
            "otp2mqtt/attributes/60s-8-sha256"
        );
        let attributes = attributes(&topics.attributes(sensor), sensor, now);
        assert_eq!(
            json_of(&attributes),
            json!({
                "valid_from": "2009-02-13T23:31:00Z",
                "valid_until": "2009-02-13T23:32:00Z",
                "period": 60,
                "digits": 8,
                "algorithm": "SHA256",
            })
        );
    }

    #[test]
    fn replicas_each_have_an_availability_topic_and_any_of_them_suffices() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "replicas:\n  members: [otp2mqtt-0, otp2mqtt-1]\n  this: otp2mqtt-1\nsensors:\n  - token: JBSWY3DPEHPK3PXP\n",
        )
        .unwrap();
        let settings = load_with_environment(&path, Some(Default::default())).unwrap();
        assert_eq!(settings.mqtt.client_id, "otp2mqtt-otp2mqtt-1");
        let topics = Topics::new(&settings);
        assert_eq!(topics.availability(), "otp2mqtt/status/otp2mqtt-1");
        let config = json_of(&discovery_config(&topics, &settings.sensors[0]));
        assert_eq!(
            config["availability"],
            json!([{"topic": "otp2mqtt/status/otp2mqtt-0"}, {"topic": "otp2mqtt/status/otp2mqtt-1"}])
        );
        assert_eq!(config["availability_mode"], "any");
        assert!(config.get("availability_topic").is_none());
        // Both replicas announce byte-identical configs: publishing twice is harmless.
        std::fs::write(
            &path,
            "replicas:\n  members: [otp2mqtt-0, otp2mqtt-1]\n  this: otp2mqtt-0\nsensors:\n  - token: JBSWY3DPEHPK3PXP\n",
        )
        .unwrap();
        let other = load_with_environment(&path, Some(Default::default())).unwrap();
        assert_eq!(
            discovery_config(&Topics::new(&other), &other.sensors[0]).payload,
            discovery_config(&topics, &settings.sensors[0]).payload
        );
    }

    #[test]
    fn availability_and_clearing() {
        let settings = settings();
        let topics = Topics::new(&settings);
        let online = availability(&topics, true);
        assert_eq!(
            (
                online.topic.as_str(),
                online.payload.as_slice(),
                online.retain
            ),
            ("otp2mqtt/status", &b"online"[..], true)
        );
        assert_eq!(availability(&topics, false).payload, b"offline");
        let clear = clear_retained(topics.discovery_config("sensor", "gone"));
        assert_eq!(clear.topic, "homeassistant/sensor/otp2mqtt/gone/config");
        assert!(clear.payload.is_empty() && clear.retain);
        assert_eq!(
            topics.discovery_filter(),
            "homeassistant/+/otp2mqtt/+/config"
        );
        assert!(topics.is_own_discovery_topic("homeassistant/event/otp2mqtt/door/config"));
        assert!(!topics.is_own_discovery_topic("homeassistant/sensor/other/door/config"));
        assert!(!topics.is_own_discovery_topic("homeassistant/sensor/otp2mqtt/door/state"));
        assert!(!topics.is_own_discovery_topic("homeassistant/sensor/otp2mqtt/a/b/config"));
        assert!(!topics.is_own_discovery_topic("homeassistantx/sensor/otp2mqtt/door/config"));
    }
}
