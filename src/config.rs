//! Reading and validating the config file (YAML or TOML, overridable by
//! `OTP2MQTT__SECTION__KEY` environment variables) into ready-to-use [`Settings`].
//!
//! Everything is checked here, once, before any connection is made: after
//! [`load`] succeeds nothing downstream can fail because of the config.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::otpauth;
use crate::secret::{RECOMMENDED_SECRET_BITS, SecretString, decode_base32_secret};
use crate::sensor::{Algorithm, Sensor};
use crate::tls::{TlsClientConfig, TlsOptions};
use crate::verify::VerifyPolicy;

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "OTP2MQTT";
/// Separator between the prefix, sections and keys in those variables.
pub const ENV_SEPARATOR: &str = "__";

pub const DEFAULT_INSTANCE_ID: &str = "otp2mqtt";
pub const DEFAULT_SENSOR_NAME: &str = "OTP Sensor";
pub const DEFAULT_PERIOD: u64 = 30;
pub const DEFAULT_DIGITS: u8 = 6;
/// Longest accepted period. Longer ones exist nowhere in practice and usually mean
/// milliseconds were typed where seconds belong.
pub const MAX_PERIOD: u64 = 3600;
/// MQTT keep-alive bounds: short enough that a half-open connection is noticed
/// within about 45 s (1.5 × keep-alive), long enough not to chatter.
pub const MAX_KEEP_ALIVE: u64 = 30;
pub const MIN_KEEP_ALIVE: u64 = 5;

/// The config file as written, before validation. Unknown keys are refused so a
/// typo such as `tokn` cannot pass silently.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    mqtt: RawMqtt,
    #[serde(default)]
    homeassistant: RawHomeAssistant,
    #[serde(default)]
    sensors: Vec<RawSensor>,
    health_file: Option<PathBuf>,
    replicas: Option<RawReplicas>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplicas {
    members: Vec<String>,
    this: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    host: Option<String>,
    port: Option<u16>,
    username: Option<String>,
    password: Option<SecretString>,
    password_file: Option<PathBuf>,
    client_id: Option<String>,
    base_topic: Option<String>,
    keep_alive: Option<u64>,
    tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    /// Lets `OTP2MQTT__MQTT__TLS__ENABLED=true` turn TLS on from the environment,
    /// where an empty section cannot be written; a present section means on.
    enabled: Option<bool>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHomeAssistant {
    discovery_prefix: Option<String>,
    status_topic: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensor {
    name: Option<String>,
    token: Option<SecretString>,
    token_file: Option<PathBuf>,
    uri: Option<SecretString>,
    verify: Option<RawVerify>,
    id: Option<String>,
    digits: Option<u8>,
    period: Option<u64>,
    algorithm: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    window: Option<u8>,
    max_failures: Option<u32>,
    lockout: Option<u64>,
}

/// Everything `run` needs, validated.
#[derive(Debug)]
pub struct Settings {
    /// The file the settings came from, for messages.
    pub source: PathBuf,
    /// Names this bridge in discovery topics, unique ids and the client id, so
    /// several instances can share a broker.
    pub instance_id: String,
    pub mqtt: MqttSettings,
    pub homeassistant: HomeAssistantSettings,
    pub sensors: Vec<Sensor>,
    /// Where `run` keeps its status for `otp2mqtt healthcheck`.
    pub health_file: Option<PathBuf>,
    /// Set when several copies of this instance run side by side.
    pub replicas: Option<Replicas>,
    /// Things that work but deserve the user's attention (short secrets…).
    pub warnings: Vec<String>,
}

/// Several processes serving the same instance (e.g. a Kubernetes StatefulSet).
/// Each has its own availability topic; Home Assistant shows the entities as
/// available while any of them is online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicas {
    /// Every replica's id, the same list in every replica's config.
    pub members: Vec<String>,
    /// This process's id, one of `members`.
    pub this: String,
}

#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub client_id: String,
    /// State, attribute and availability topics live under this.
    pub base_topic: String,
    pub keep_alive: Duration,
    /// Set when the broker is reached over TLS.
    pub tls: Option<TlsClientConfig>,
}

impl MqttSettings {
    /// `host:port`, for messages.
    pub fn broker_address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct HomeAssistantSettings {
    pub discovery_prefix: String,
    /// Home Assistant's birth and last-will topic.
    pub status_topic: String,
}

/// A config that cannot be used. The message names the file, and where it applies
/// the sensor and the key; it never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("config file {path}: {location}key '{key}' {reason}")]
    Invalid {
        path: PathBuf,
        /// e.g. `sensors[1] ("Front Door"): `, empty for top-level keys.
        location: String,
        key: String,
        reason: String,
    },
}

/// Loads and validates the config at `path`, with overrides from the process
/// environment.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    load_with_environment(path, None)
}

/// Like [`load`], but with the environment given as a map (`None`: the process
/// environment). Tests use this instead of mutating the process environment.
pub fn load_with_environment(
    path: &Path,
    environment: Option<HashMap<String, String>>,
) -> Result<Settings, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let format = match path.extension().and_then(|extension| extension.to_str()) {
        Some("yaml" | "yml") => config::FileFormat::Yaml,
        Some("toml") => config::FileFormat::Toml,
        // Home Assistant add-ons hand their options over as /data/options.json.
        Some("json") => config::FileFormat::Json,
        _ => {
            return Err(file_error(
                "unknown format: the file name must end in .yaml, .yml, .toml or .json".into(),
            ));
        }
    };
    // Read the file ourselves: the config crate's "not found" does not say which
    // path it tried, and permission errors deserve their own words.
    let text = std::fs::read_to_string(path).map_err(|error| {
        file_error(match error.kind() {
            std::io::ErrorKind::NotFound => "not found".into(),
            _ => format!("cannot be read: {error}"),
        })
    })?;
    let environment_keys: Vec<String> = match &environment {
        Some(map) => map.keys().cloned().collect::<Vec<_>>(),
        None => std::env::vars_os()
            .filter_map(|(key, _)| key.into_string().ok())
            .collect(),
    }
    .into_iter()
    .filter(|key| key.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
    .collect();
    let raw: RawConfig = config::Config::builder()
        .add_source(config::File::from_str(&text, format))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .separator(ENV_SEPARATOR)
                .source(environment),
        )
        .build()
        .and_then(|config| config.try_deserialize())
        .map_err(|error| {
            let mut reason = error.to_string();
            if !environment_keys.is_empty() && reason.contains("unknown field") {
                reason.push_str(&format!(
                    " (environment variables are merged into the config too: check {})",
                    environment_keys.join(", ")
                ));
            }
            file_error(reason)
        })?;
    validate(path, raw)
}

fn validate(path: &Path, raw: RawConfig) -> Result<Settings, ConfigError> {
    let invalid = |location: &str, key: &str, reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        location: location.to_string(),
        key: key.to_string(),
        reason,
    };

    let instance_id = raw
        .instance_id
        .unwrap_or_else(|| DEFAULT_INSTANCE_ID.to_string());
    check_id(&instance_id).map_err(|reason| invalid("", "instance_id", reason))?;
    let replicas = raw
        .replicas
        .map(validate_replicas)
        .transpose()
        .map_err(|(key, reason)| invalid("", &format!("replicas.{key}"), reason))?;

    // `*_file` paths are relative to the config file, wherever the process runs.
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let mqtt = validate_mqtt(raw.mqtt, &instance_id, replicas.as_ref(), base_dir)
        .map_err(|(key, reason)| invalid("", &format!("mqtt.{key}"), reason))?;

    let discovery_prefix = raw
        .homeassistant
        .discovery_prefix
        .unwrap_or_else(|| "homeassistant".to_string());
    check_topic(&discovery_prefix)
        .map_err(|reason| invalid("", "homeassistant.discovery_prefix", reason))?;
    let status_topic = raw
        .homeassistant
        .status_topic
        .unwrap_or_else(|| format!("{discovery_prefix}/status"));
    check_topic(&status_topic)
        .map_err(|reason| invalid("", "homeassistant.status_topic", reason))?;

    if raw.sensors.is_empty() {
        return Err(invalid(
            "",
            "sensors",
            "is empty: add at least one sensor with a token".into(),
        ));
    }
    let mut sensors = Vec::with_capacity(raw.sensors.len());
    let mut warnings = Vec::new();
    let mut seen_ids: HashMap<String, usize> = HashMap::with_capacity(raw.sensors.len());
    for (index, raw_sensor) in raw.sensors.into_iter().enumerate() {
        let location = match &raw_sensor.name {
            Some(name) => format!("sensors[{index}] (\"{name}\"): "),
            None => format!("sensors[{index}]: "),
        };
        let sensor = validate_sensor(raw_sensor, base_dir)
            .map_err(|(key, reason)| invalid(&location, key, reason))?;
        if let Some(first) = seen_ids.insert(sensor.id.clone(), index) {
            return Err(invalid(
                &location,
                "id",
                format!(
                    "'{}' is already used by sensors[{first}]: ids must be unique (set `id` to tell sensors with the same name apart)",
                    sensor.id
                ),
            ));
        }
        if sensor.secret_bits < RECOMMENDED_SECRET_BITS {
            warnings.push(format!(
                "sensor '{}': the secret is {} bits, less than the {RECOMMENDED_SECRET_BITS} bits RFC 4226 requires; it works, but a new 160-bit secret is stronger",
                sensor.id, sensor.secret_bits
            ));
        }
        sensors.push(sensor);
    }

    Ok(Settings {
        source: path.to_path_buf(),
        instance_id,
        mqtt,
        homeassistant: HomeAssistantSettings {
            discovery_prefix,
            status_topic,
        },
        sensors,
        health_file: raw.health_file.map(|file| base_dir.join(file)),
        replicas,
        warnings,
    })
}

fn validate_replicas(raw: RawReplicas) -> Result<Replicas, KeyError> {
    if raw.members.is_empty() {
        return Err(("members", "is empty: list every replica's id".into()));
    }
    for (index, member) in raw.members.iter().enumerate() {
        check_id(member).map_err(|reason| ("members", reason))?;
        if raw.members[..index].contains(member) {
            return Err(("members", format!("lists '{member}' twice")));
        }
    }
    let this = raw.this.ok_or((
        "this",
        "is missing: set this replica's id, e.g. OTP2MQTT__REPLICAS__THIS from the pod name"
            .to_string(),
    ))?;
    if !raw.members.contains(&this) {
        return Err((
            "this",
            format!(
                "'{this}' is not one of replicas.members ({})",
                raw.members.join(", ")
            ),
        ));
    }
    Ok(Replicas {
        members: raw.members,
        this,
    })
}

type KeyError = (&'static str, String);

fn validate_mqtt(
    raw: RawMqtt,
    instance_id: &str,
    replicas: Option<&Replicas>,
    base_dir: &Path,
) -> Result<MqttSettings, KeyError> {
    let host = raw.host.unwrap_or_else(|| "localhost".to_string());
    if host.trim().is_empty() {
        return Err(("host", "is empty".into()));
    }
    let tls = match raw.tls {
        Some(tls) if tls.enabled.unwrap_or(true) => {
            let options = TlsOptions {
                ca_file: tls.ca_file.map(|file| base_dir.join(file)),
                cert_file: tls.cert_file.map(|file| base_dir.join(file)),
                key_file: tls.key_file.map(|file| base_dir.join(file)),
                server_name: tls.server_name,
            };
            Some(crate::tls::client_config(&options)?)
        }
        _ => None,
    };
    let port = raw.port.unwrap_or(if tls.is_some() { 8883 } else { 1883 });
    if port == 0 {
        return Err(("port", "must be between 1 and 65535".into()));
    }
    let password = match (raw.password, raw.password_file) {
        (Some(_), Some(_)) => {
            return Err((
                "password_file",
                "is set together with `password`: give only one".into(),
            ));
        }
        (Some(password), None) => Some(password),
        (None, Some(file)) => Some(
            read_secret_file(&base_dir.join(file)).map_err(|reason| ("password_file", reason))?,
        ),
        (None, None) => None,
    };
    if password.is_some() && raw.username.is_none() {
        return Err((
            "password",
            "is set without `username`: MQTT sends a password only with a user name".into(),
        ));
    }
    // The default instance keeps the short, documented names; other instances
    // get their own so that two of them on one broker never share a topic or
    // kick each other off with the same client id.
    let (default_client_id, default_base_topic) = if instance_id == DEFAULT_INSTANCE_ID {
        (instance_id.to_string(), instance_id.to_string())
    } else {
        (
            format!("{DEFAULT_INSTANCE_ID}-{instance_id}"),
            format!("{DEFAULT_INSTANCE_ID}/{instance_id}"),
        )
    };
    // Replicas of one instance must not share a client id: the broker would
    // disconnect one whenever the other connects.
    let default_client_id = match replicas {
        Some(replicas) => format!("{default_client_id}-{}", replicas.this),
        None => default_client_id,
    };
    let client_id = raw.client_id.unwrap_or(default_client_id);
    if client_id.is_empty() || client_id.contains(['+', '#', '/']) {
        return Err((
            "client_id",
            "must be non-empty and must not contain '+', '#' or '/'".into(),
        ));
    }
    let base_topic = raw
        .base_topic
        .map(|topic| topic.trim_end_matches('/').to_string())
        .unwrap_or(default_base_topic);
    check_topic(&base_topic).map_err(|reason| ("base_topic", reason))?;
    let keep_alive = raw.keep_alive.unwrap_or(MAX_KEEP_ALIVE);
    if !(MIN_KEEP_ALIVE..=MAX_KEEP_ALIVE).contains(&keep_alive) {
        return Err((
            "keep_alive",
            format!(
                "is {keep_alive}: must be {MIN_KEEP_ALIVE} to {MAX_KEEP_ALIVE} seconds, so a dead connection is noticed before a code expires"
            ),
        ));
    }
    Ok(MqttSettings {
        host,
        port,
        username: raw.username,
        password,
        client_id,
        base_topic,
        keep_alive: Duration::from_secs(keep_alive),
        tls,
    })
}

fn validate_sensor(raw: RawSensor, base_dir: &Path) -> Result<Sensor, KeyError> {
    // An otpauth:// URI (what QR codes hold and apps export) is a third way to
    // give the secret, and brings its own name, digits, period and algorithm.
    let from_uri = raw
        .uri
        .map(|uri| otpauth::parse(uri.expose()).map_err(|error| ("uri", error.to_string())))
        .transpose()?;
    let name = match raw.name {
        Some(name) if name.trim().is_empty() => return Err(("name", "is empty".into())),
        Some(name) => name.trim().to_string(),
        None => match &from_uri {
            Some(uri) => match &uri.issuer {
                Some(issuer) => format!("{issuer} {}", uri.account),
                None => uri.account.clone(),
            },
            None => DEFAULT_SENSOR_NAME.to_string(),
        },
    };
    let id = match raw.id {
        Some(id) => {
            check_id(&id).map_err(|reason| ("id", reason))?;
            id
        }
        None => {
            let id = slug(&name);
            if id.is_empty() {
                return Err((
                    "id",
                    "is needed: the name has no letters or digits to derive one from".into(),
                ));
            }
            id
        }
    };
    let token = match (raw.token, raw.token_file, &from_uri) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err((
                "uri",
                "is set together with `token` or `token_file`: give the secret one way only".into(),
            ));
        }
        (Some(_), Some(_), None) => {
            return Err((
                "token_file",
                "is set together with `token`: give only one".into(),
            ));
        }
        (None, None, Some(uri)) => uri.secret.clone(),
        (Some(token), None, None) => token,
        (None, Some(file), None) => {
            read_secret_file(&base_dir.join(file)).map_err(|reason| ("token_file", reason))?
        }
        (None, None, None) => {
            return Err((
                "token",
                "is missing: every sensor needs its base32 shared secret (`token`, `token_file` or `uri`)"
                    .into(),
            ));
        }
    };
    let secret =
        decode_base32_secret(token.expose()).map_err(|error| ("token", error.to_string()))?;
    let digits = agree_with_uri(
        "digits",
        raw.digits,
        from_uri.as_ref().map(|uri| uri.digits),
    )?
    .unwrap_or(DEFAULT_DIGITS);
    if !(6..=8).contains(&digits) {
        return Err(("digits", format!("is {digits}: must be 6, 7 or 8")));
    }
    let period = agree_with_uri(
        "period",
        raw.period,
        from_uri.as_ref().map(|uri| uri.period),
    )?
    .unwrap_or(DEFAULT_PERIOD);
    if !(1..=MAX_PERIOD).contains(&period) {
        return Err((
            "period",
            format!("is {period}: must be 1 to {MAX_PERIOD} seconds (30 is the standard)"),
        ));
    }
    let algorithm = raw
        .algorithm
        .map(|text| {
            text.parse::<Algorithm>()
                .map_err(|reason| ("algorithm", reason))
        })
        .transpose()?;
    let algorithm = agree_with_uri(
        "algorithm",
        algorithm,
        from_uri.as_ref().map(|uri| uri.algorithm),
    )?
    .unwrap_or(Algorithm::Sha1);
    let mut sensor = Sensor::new(id, name, &secret, digits, period, algorithm);
    sensor.verify = raw.verify.map(validate_verify).transpose()?;
    Ok(sensor)
}

/// Most steps of tolerance accepted: RFC 6238 recommends at most one; two
/// covers a phone a minute off, beyond that brute force gets easy.
pub const MAX_VERIFY_WINDOW: u8 = 2;
pub const MAX_LOCKOUT: u64 = 86_400;

fn validate_verify(raw: RawVerify) -> Result<VerifyPolicy, KeyError> {
    let defaults = VerifyPolicy::default();
    let window = raw.window.unwrap_or(defaults.window);
    if window > MAX_VERIFY_WINDOW {
        return Err((
            "verify.window",
            format!("is {window}: at most {MAX_VERIFY_WINDOW} steps (RFC 6238 recommends 1)"),
        ));
    }
    let max_failures = raw.max_failures.unwrap_or(defaults.max_failures);
    if !(1..=1000).contains(&max_failures) {
        return Err((
            "verify.max_failures",
            format!("is {max_failures}: must be 1 to 1000"),
        ));
    }
    let lockout = raw.lockout.unwrap_or(defaults.lockout.as_secs());
    if !(1..=MAX_LOCKOUT).contains(&lockout) {
        return Err((
            "verify.lockout",
            format!("is {lockout}: must be 1 to {MAX_LOCKOUT} seconds"),
        ));
    }
    Ok(VerifyPolicy {
        window,
        max_failures,
        lockout: Duration::from_secs(lockout),
    })
}

/// An explicit key next to a `uri` must say the same as the URI: two sources
/// that disagree mean one of them is a mistake, and guessing which one would
/// publish codes that match no phone.
fn agree_with_uri<T: PartialEq + std::fmt::Display>(
    key: &'static str,
    explicit: Option<T>,
    from_uri: Option<T>,
) -> Result<Option<T>, KeyError> {
    match (explicit, from_uri) {
        (Some(explicit), Some(from_uri)) if explicit != from_uri => Err((
            key,
            format!("is {explicit}, but the sensor's uri says {from_uri}: remove one"),
        )),
        (explicit, from_uri) => Ok(explicit.or(from_uri)),
    }
}

/// Reads a secret from a file (docker and systemd secrets): the trailing newline
/// editors and `echo` add is dropped. Errors name the path, never the content.
fn read_secret_file(path: &Path) -> Result<SecretString, String> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|error| format!("{}: cannot be read: {error}", path.display()))?,
    );
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(format!("{}: is empty", path.display()));
    }
    Ok(SecretString::new(secret))
}

/// Ids end up in MQTT topics and Home Assistant unique ids, where Home Assistant
/// drops anything outside `[a-zA-Z0-9_-]`.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("is empty".into());
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "'{id}' contains '{bad}': only letters a-z, A-Z, digits, '_' and '-' are allowed (Home Assistant drops the rest)"
        ));
    }
    Ok(())
}

/// A topic we publish or subscribe under must be a plain topic name.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("is empty".into());
    }
    if topic.contains(['+', '#', '\0']) {
        return Err(format!(
            "'{topic}' contains an MQTT wildcard ('+' or '#') or a NUL character"
        ));
    }
    Ok(())
}

/// Home Assistant-style slug: lower case, runs of anything but letters and digits
/// become one `_`, no `_` at the ends. "OTP Sensor" → "otp_sensor".
pub fn slug(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for character in name.chars() {
        if character.is_ascii_alphanumeric() {
            slug.push(character.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('_') {
            slug.push('_');
        }
    }
    while slug.ends_with('_') {
        slug.pop();
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `text` to a file named `name` in a fresh temp dir and loads it with
    /// the given environment.
    fn load_text(
        name: &str,
        text: &str,
        environment: &[(&str, &str)],
    ) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let environment = environment
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        load_with_environment(&path, Some(environment))
    }

    fn load_yaml(text: &str) -> Result<Settings, ConfigError> {
        load_text("otp2mqtt.yaml", text, &[])
    }

    fn error_of(text: &str) -> String {
        load_yaml(text).unwrap_err().to_string()
    }

    const MINIMAL: &str = "sensors:\n  - token: JBSWY3DPEHPK3PXP\n";

    #[test]
    fn defaults_match_home_assistant_and_the_docs() {
        let settings = load_yaml(MINIMAL).unwrap();
        assert_eq!(settings.instance_id, "otp2mqtt");
        assert_eq!(settings.mqtt.host, "localhost");
        assert_eq!(settings.mqtt.port, 1883);
        assert_eq!(settings.mqtt.client_id, "otp2mqtt");
        assert_eq!(settings.mqtt.base_topic, "otp2mqtt");
        assert_eq!(settings.mqtt.keep_alive, Duration::from_secs(30));
        assert_eq!(settings.homeassistant.discovery_prefix, "homeassistant");
        assert_eq!(settings.homeassistant.status_topic, "homeassistant/status");
        let sensor = &settings.sensors[0];
        assert_eq!(sensor.name, "OTP Sensor");
        assert_eq!(sensor.id, "otp_sensor");
        assert_eq!(
            (sensor.digits, sensor.period, sensor.algorithm),
            (6, 30, Algorithm::Sha1)
        );
        assert_eq!(settings.warnings.len(), 1, "80-bit secret warns");
        assert!(!settings.warnings[0].contains("JBSW"));
    }

    #[test]
    fn full_yaml_and_toml_give_the_same_settings() {
        let yaml = "instance_id: house\nmqtt:\n  host: broker\n  port: 1884\n  username: alice\n  password: s3cret\n  client_id: me\n  base_topic: otp/\n  keep_alive: 10\nhomeassistant:\n  discovery_prefix: ha\n  status_topic: ha/birth\nsensors:\n  - name: Front Door\n    token: gezd gnbv gy3t qojq gezd gnbv gy3t qojq\n    id: front_door\n    digits: 8\n    period: 60\n    algorithm: sha256\n";
        let toml = "instance_id = \"house\"\n[mqtt]\nhost = \"broker\"\nport = 1884\nusername = \"alice\"\npassword = \"s3cret\"\nclient_id = \"me\"\nbase_topic = \"otp/\"\nkeep_alive = 10\n[homeassistant]\ndiscovery_prefix = \"ha\"\nstatus_topic = \"ha/birth\"\n[[sensors]]\nname = \"Front Door\"\ntoken = \"gezd gnbv gy3t qojq gezd gnbv gy3t qojq\"\nid = \"front_door\"\ndigits = 8\nperiod = 60\nalgorithm = \"sha256\"\n";
        for settings in [
            load_yaml(yaml).unwrap(),
            load_text("c.toml", toml, &[]).unwrap(),
        ] {
            assert_eq!(settings.instance_id, "house");
            assert_eq!(settings.mqtt.broker_address(), "broker:1884");
            assert_eq!(settings.mqtt.username.as_deref(), Some("alice"));
            assert_eq!(settings.mqtt.password.as_ref().unwrap().expose(), "s3cret");
            assert_eq!(settings.mqtt.client_id, "me");
            assert_eq!(settings.mqtt.base_topic, "otp");
            assert_eq!(settings.mqtt.keep_alive, Duration::from_secs(10));
            assert_eq!(settings.homeassistant.discovery_prefix, "ha");
            assert_eq!(settings.homeassistant.status_topic, "ha/birth");
            let sensor = &settings.sensors[0];
            assert_eq!(
                (sensor.id.as_str(), sensor.name.as_str()),
                ("front_door", "Front Door")
            );
            assert_eq!(
                (sensor.digits, sensor.period, sensor.algorithm),
                (8, 60, Algorithm::Sha256)
            );
            assert!(settings.warnings.is_empty());
        }
    }

    #[test]
    fn environment_overrides_any_key() {
        let settings = load_text(
            "c.yaml",
            MINIMAL,
            &[
                ("OTP2MQTT__MQTT__HOST", "mosquitto"),
                ("OTP2MQTT__MQTT__PORT", "1885"),
                ("OTP2MQTT__MQTT__PASSWORD", "007"),
                ("OTP2MQTT__MQTT__USERNAME", "bob"),
                ("OTP2MQTT__INSTANCE_ID", "garage"),
                ("OTP2MQTT__HOMEASSISTANT__DISCOVERY_PREFIX", "hass"),
            ],
        )
        .unwrap();
        assert_eq!(settings.mqtt.broker_address(), "mosquitto:1885");
        // Strings stay strings: a password of 007 is not the number 7.
        assert_eq!(settings.mqtt.password.as_ref().unwrap().expose(), "007");
        assert_eq!(settings.instance_id, "garage");
        // Another instance gets its own client id and topics.
        assert_eq!(settings.mqtt.client_id, "otp2mqtt-garage");
        assert_eq!(settings.mqtt.base_topic, "otp2mqtt/garage");
        assert_eq!(settings.homeassistant.status_topic, "hass/status");
    }

    #[test]
    fn unknown_keys_are_refused_with_a_hint_for_environment_typos() {
        let message = error_of("sensors:\n  - tokn: JBSWY3DPEHPK3PXP\n");
        assert!(
            message.contains("otp2mqtt.yaml") && message.contains("tokn"),
            "{message}"
        );
        let message = load_text("c.yaml", MINIMAL, &[("OTP2MQTT__MQTT__HSOT", "x")])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("hsot") && message.contains("OTP2MQTT__MQTT__HSOT"),
            "{message}"
        );
    }

    #[test]
    fn each_sensor_rule_names_file_sensor_and_key() {
        let cases = [
            (
                "- name: Door\n  token: JBSWY3DPEHPK3PX1",
                "token",
                "not valid base32",
            ),
            ("- name: Door\n  token: JBSWY3DPEHPK", "token", "too short"),
            ("- name: Door\n  token: ''", "token", "empty"),
            ("- name: Door", "token", "missing"),
            (
                "- name: Door\n  token: JBSWY3DPEHPK3PXP\n  digits: 9",
                "digits",
                "6, 7 or 8",
            ),
            (
                "- name: Door\n  token: JBSWY3DPEHPK3PXP\n  digits: 5",
                "digits",
                "6, 7 or 8",
            ),
            (
                "- name: Door\n  token: JBSWY3DPEHPK3PXP\n  period: 0",
                "period",
                "1 to 3600",
            ),
            (
                "- name: Door\n  token: JBSWY3DPEHPK3PXP\n  period: 30000",
                "period",
                "1 to 3600",
            ),
            (
                "- name: Door\n  token: JBSWY3DPEHPK3PXP\n  algorithm: MD5",
                "algorithm",
                "SHA1, SHA256 or SHA512",
            ),
            (
                "- name: Door\n  token: JBSWY3DPEHPK3PXP\n  id: front.door",
                "id",
                "'.'",
            ),
            (
                "- name: '!!!'\n  token: JBSWY3DPEHPK3PXP",
                "id",
                "is needed",
            ),
            ("- name: ' '\n  token: JBSWY3DPEHPK3PXP", "name", "empty"),
        ];
        for (sensor, key, reason) in cases {
            let message = error_of(&format!(
                "sensors:\n  - name: Ok\n    token: JBSWY3DPEHPK3PXP\n{}\n",
                indent(sensor)
            ));
            assert!(message.contains("otp2mqtt.yaml"), "{message}");
            assert!(message.contains("sensors[1]"), "{message}");
            assert!(
                message.contains(&format!("key '{key}'")),
                "{key}: {message}"
            );
            assert!(message.contains(reason), "{reason}: {message}");
            assert!(
                !message.contains("JBSWY3DPEHPK"),
                "secret leaked: {message}"
            );
        }
    }

    fn indent(sensor: &str) -> String {
        sensor
            .lines()
            .map(|line| format!("  {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn duplicate_ids_including_slug_collisions_are_refused() {
        let message = error_of(
            "sensors:\n  - name: Front Door\n    token: JBSWY3DPEHPK3PXP\n  - name: front-door\n    token: JBSWY3DPEHPK3PXP\n",
        );
        assert!(
            message.contains("sensors[1]")
                && message.contains("front_door")
                && message.contains("sensors[0]"),
            "{message}"
        );
    }

    #[test]
    fn top_level_rules() {
        for (text, needle) in [
            ("sensors: []\n", "key 'sensors' is empty"),
            ("mqtt:\n  port: 0\n", "key 'mqtt.port'"),
            ("mqtt:\n  port: http\n", "port"),
            ("mqtt:\n  port: 70000\n", "port"),
            ("mqtt:\n  password: x\n", "key 'mqtt.password'"),
            ("mqtt:\n  keep_alive: 60\n", "key 'mqtt.keep_alive'"),
            ("mqtt:\n  base_topic: a/+/b\n", "key 'mqtt.base_topic'"),
            (
                "homeassistant:\n  discovery_prefix: '#'\n",
                "key 'homeassistant.discovery_prefix'",
            ),
            ("instance_id: my house\n", "key 'instance_id'"),
        ] {
            let full = if text.starts_with("sensors") {
                text.to_string()
            } else {
                format!("{text}{MINIMAL}")
            };
            let message = error_of(&full);
            assert!(
                message.contains("otp2mqtt.yaml") && message.contains(needle),
                "{needle}: {message}"
            );
        }
    }

    #[test]
    fn syntax_errors_carry_the_line_and_missing_files_the_path() {
        let message = error_of("sensors:\n  - token: [unclosed\n");
        assert!(message.contains("line"), "{message}");
        let message = load_text("c.toml", "[mqtt\n", &[]).unwrap_err().to_string();
        assert!(
            message.contains("c.toml") && message.contains("line"),
            "{message}"
        );
        let message = load(Path::new("/nonexistent/otp2mqtt.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("/nonexistent/otp2mqtt.yaml") && message.contains("not found"),
            "{message}"
        );
        let message = load_text("c.ini", "{}", &[]).unwrap_err().to_string();
        assert!(message.contains(".yaml, .yml, .toml or .json"), "{message}");
    }

    #[test]
    fn the_example_config_is_valid_and_documents_the_defaults() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/otp2mqtt.yaml"
        ));
        let settings = load_with_environment(path, Some(HashMap::new())).unwrap();
        let defaults = load_yaml(MINIMAL).unwrap();
        assert_eq!(settings.instance_id, defaults.instance_id);
        assert_eq!(
            settings.mqtt.broker_address(),
            defaults.mqtt.broker_address()
        );
        assert_eq!(settings.mqtt.base_topic, defaults.mqtt.base_topic);
        assert_eq!(settings.mqtt.keep_alive, defaults.mqtt.keep_alive);
        assert_eq!(
            settings.homeassistant.status_topic,
            defaults.homeassistant.status_topic
        );
        assert_eq!(settings.sensors[0].id, "otp_sensor");
        assert!(settings.warnings.is_empty());
    }

    #[test]
    fn secrets_from_files_relative_to_the_config_with_the_newline_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret \r\n").unwrap();
        std::fs::write(dir.path().join("door.token"), "JBSWY3DPEHPK3PXP\n").unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "mqtt:\n  username: u\n  password_file: pw\nsensors:\n  - name: Door\n    token_file: door.token\n",
        )
        .unwrap();
        let settings = load_with_environment(&path, Some(HashMap::new())).unwrap();
        // Only the line ending goes; a trailing space may be part of a password.
        assert_eq!(settings.mqtt.password.as_ref().unwrap().expose(), "s3cret ");
        assert_eq!(settings.sensors[0].secret_bits, 80);
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    fn tls_turns_the_default_port_to_8883() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            format!("mqtt:\n  tls:\n    enabled: false\n{MINIMAL}"),
        )
        .unwrap();
        let settings = load_with_environment(&path, Some(HashMap::new())).unwrap();
        assert_eq!(
            (settings.mqtt.port, settings.mqtt.tls.is_some()),
            (1883, false)
        );
        let environment = HashMap::from([(
            "OTP2MQTT__MQTT__TLS__ENABLED".to_string(),
            "true".to_string(),
        )]);
        std::fs::write(&path, MINIMAL).unwrap();
        match load_with_environment(&path, Some(environment)) {
            // Machines without system CA certificates say so, naming the key.
            Err(error) => assert!(error.to_string().contains("tls.ca_file"), "{error}"),
            Ok(settings) => assert_eq!(
                (settings.mqtt.port, settings.mqtt.tls.is_some()),
                (8883, true)
            ),
        }
    }

    #[test]
    fn replica_rules() {
        for (replicas, needle) in [
            (
                "replicas:\n  members: []\n  this: a\n",
                "key 'replicas.members' is empty",
            ),
            ("replicas:\n  members: [a, a]\n  this: a\n", "twice"),
            (
                "replicas:\n  members: [a, b]\n",
                "key 'replicas.this' is missing",
            ),
            ("replicas:\n  members: [a, b]\n  this: c\n", "not one of"),
            ("replicas:\n  members: [a/b]\n  this: a/b\n", "'/'"),
        ] {
            let message = error_of(&format!("{replicas}{MINIMAL}"));
            assert!(message.contains(needle), "{needle}: {message}");
        }
        let settings = load_text(
            "c.yaml",
            &format!("replicas:\n  members: [a, b]\n{MINIMAL}"),
            &[("OTP2MQTT__REPLICAS__THIS", "b")],
        )
        .unwrap();
        assert_eq!(settings.replicas.unwrap().this, "b");
    }

    #[test]
    fn json_config_for_home_assistant_add_ons() {
        let settings = load_text(
            "options.json",
            r#"{"sensors": [{"name": "Front Door", "token": "JBSWY3DPEHPK3PXP", "digits": 8}]}"#,
            &[("OTP2MQTT__MQTT__HOST", "core-mosquitto")],
        )
        .unwrap();
        assert_eq!(settings.mqtt.host, "core-mosquitto");
        assert_eq!(settings.sensors[0].digits, 8);
    }

    #[test]
    fn otpauth_uris_give_secret_name_and_parameters() {
        let settings = load_yaml(
            "sensors:\n  - uri: otpauth://totp/ACME%20Co:alice@example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ACME%20Co&digits=8&period=60&algorithm=SHA256\n  - uri: otpauth://totp/bob?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n    name: Bob's door\n    digits: 6\n",
        )
        .unwrap();
        let acme = &settings.sensors[0];
        assert_eq!(acme.name, "ACME Co alice@example.com");
        assert_eq!(acme.id, "acme_co_alice_example_com");
        assert_eq!(
            (acme.digits, acme.period, acme.algorithm),
            (8, 60, Algorithm::Sha256)
        );
        let bob = &settings.sensors[1];
        assert_eq!(
            (bob.name.as_str(), bob.digits, bob.period),
            ("Bob's door", 6, 30)
        );
        // The same codes as the token written out.
        let token = load_yaml("sensors:\n  - token: GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n    digits: 8\n    period: 60\n    algorithm: SHA256\n").unwrap();
        let now = crate::schedule::UnixTime::from_secs(1_111_111_109);
        assert_eq!(acme.code_at(now), token.sensors[0].code_at(now));
    }

    #[test]
    fn bad_or_conflicting_uris_are_refused_without_the_secret() {
        for (sensor, needle) in [
            (
                "uri: otpauth://hotp/x?secret=JBSWY3DPEHPK3PXP&counter=1",
                "HOTP",
            ),
            (
                "uri: https://example.com/?secret=JBSWY3DPEHPK3PXP",
                "otpauth://totp/",
            ),
            ("uri: otpauth://totp/x?secret=JBSWY3DPEHPK3PX1", "base32"),
            (
                "uri: otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&digits=9",
                "digits=9",
            ),
            (
                "uri: otpauth://totp/x?secret=JBSWY3DPEHPK3PXP\n    token: JBSWY3DPEHPK3PXP",
                "one way only",
            ),
            (
                "uri: otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&period=60\n    period: 30",
                "the sensor's uri says 60",
            ),
            (
                "uri: otpauth://totp/x?secret=JBSWY3DPEHPK3PXP\n    algorithm: SHA512",
                "uri says SHA1",
            ),
        ] {
            let message = error_of(&format!("sensors:\n  - name: Door\n    {sensor}\n"));
            assert!(message.contains(needle), "{needle}: {message}");
            assert!(message.contains("Door"), "{message}");
            assert!(
                !message.contains("JBSWY3DPEHPK3PX"),
                "secret leaked: {message}"
            );
        }
    }

    #[test]
    fn verify_policies() {
        let settings = load_yaml("sensors:\n  - token: JBSWY3DPEHPK3PXP\n    verify: {}\n  - name: b\n    token: JBSWY3DPEHPK3PXP\n    verify:\n      window: 0\n      max_failures: 3\n      lockout: 60\n  - name: c\n    token: JBSWY3DPEHPK3PXP\n").unwrap();
        assert_eq!(settings.sensors[0].verify, Some(VerifyPolicy::default()));
        assert_eq!(
            settings.sensors[1].verify,
            Some(VerifyPolicy {
                window: 0,
                max_failures: 3,
                lockout: Duration::from_secs(60)
            })
        );
        assert_eq!(settings.sensors[2].verify, None);
        for (verify, needle) in [
            ("window: 3", "key 'verify.window'"),
            ("max_failures: 0", "key 'verify.max_failures'"),
            ("lockout: 0", "key 'verify.lockout'"),
            ("windw: 1", "windw"),
        ] {
            let message = error_of(&format!(
                "sensors:\n  - name: Door\n    token: JBSWY3DPEHPK3PXP\n    verify:\n      {verify}\n"
            ));
            assert!(message.contains(needle), "{needle}: {message}");
        }
    }

    #[test]
    fn slugs_like_home_assistant() {
        assert_eq!(slug("OTP Sensor"), "otp_sensor");
        assert_eq!(slug("  Front -- Door 2 "), "front_door_2");
        assert_eq!(slug("Guest/WiFi"), "guest_wifi");
    }

    #[test]
    fn ten_thousand_sensors_load() {
        let mut text = String::from("sensors:\n");
        for index in 0..10_000 {
            text.push_str(&format!(
                "  - name: Sensor {index}\n    token: GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n"
            ));
        }
        assert_eq!(load_yaml(&text).unwrap().sensors.len(), 10_000);
    }
}
