//! Secrets and transport against a real Mosquitto: password files, refused
//! logins, TLS with a CA, mutual TLS, a wrong CA, and no secret in any log line
//! even at trace level.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use support::*;

const TOKEN: &str = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BAANVGK3LQ";
const PASSWORD: &str = "correct-horse-battery-staple";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    // Mosquitto started as root drops to user `mosquitto` before reading files.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    }
    path
}

fn password_file(dir: &Path, user: &str, password: &str) -> PathBuf {
    let path = write(dir, "passwd", "");
    let status = Command::new("mosquitto_passwd")
        .args(["-b", path.to_str().unwrap(), user, password])
        .status()
        .expect(
            "mosquitto_passwd is part of the mosquitto package: sudo apt-get install -y mosquitto",
        );
    assert!(status.success());
    write(dir, "passwd", &std::fs::read_to_string(&path).unwrap())
}

/// A broker with an anonymous listener for observers and a password listener for the bridge.
fn broker_with_password() -> (Broker, u16) {
    let dir = tempfile::tempdir().unwrap().keep();
    let file = password_file(&dir, "otp2mqtt", PASSWORD);
    let port = free_port();
    let broker = Broker::start_with(&format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
        file.display()
    ));
    (broker, port)
}

fn wait_for_log(bridge: &BridgeProcess, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !bridge.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "'{needle}' never logged:\n{}",
            bridge.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn password_from_a_file_logs_in_and_no_secret_reaches_the_log_at_trace_level() {
    let (broker, auth_port) = broker_with_password();
    let dir = broker.dir();
    write(dir, "mqtt_password", &format!("{PASSWORD}\n"));
    write(dir, "front_door.token", &format!("{TOKEN}\n"));
    let config = write(
        dir,
        "c.yaml",
        &format!(
            "mqtt:\n  host: 127.0.0.1\n  port: {auth_port}\n  username: otp2mqtt\n  password_file: mqtt_password\nsensors:\n  - name: Front Door\n    token_file: front_door.token\n"
        ),
    );
    let observer = Observer::connect(broker.port, &["otp2mqtt/#", "homeassistant/#"]);
    // Everything at trace, libraries (rumqttc, rustls, totp-rs) included.
    let bridge = BridgeProcess::spawn(
        &["run", "-c", config.to_str().unwrap()],
        &[("OTP2MQTT_LOG", "trace,otp2mqtt=trace")],
    );
    let messages = observer.wait_until(Duration::from_secs(10), &|| bridge.log(), |m| {
        m.iter().any(|r| r.topic == "otp2mqtt/front_door/state")
    });
    let secret = base32_decode(TOKEN);
    let state = messages
        .iter()
        .find(|r| r.topic == "otp2mqtt/front_door/state")
        .unwrap();
    assert!(code_fits(&state.text(), &secret, "SHA1", 6, 30, state.at));
    // Let a few seconds of trace logging (pings, re-sends) accumulate.
    std::thread::sleep(Duration::from_secs(3));
    let log = bridge.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging is on:\n{log}"
    );
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    for secret_text in [PASSWORD, TOKEN, &TOKEN.to_lowercase(), &hex] {
        assert!(
            !log.contains(secret_text),
            "a secret reached the log:\n{log}"
        );
    }
    for message in &messages {
        assert!(!message.text().contains(TOKEN) && !message.text().contains(PASSWORD));
    }
}

#[test]
fn a_refused_login_is_reported_once_and_retried_with_backoff() {
    let (broker, auth_port) = broker_with_password();
    let config = write(
        broker.dir(),
        "c.yaml",
        &format!(
            "mqtt:\n  host: 127.0.0.1\n  port: {auth_port}\n  username: otp2mqtt\n  password: wrong\nsensors:\n  - token: {TOKEN}\n"
        ),
    );
    let mut bridge = BridgeProcess::run(&config);
    wait_for_log(&bridge, "refused the login", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        bridge.wait(Duration::ZERO).is_none(),
        "the bridge must keep retrying, not exit"
    );
    let log = bridge.log();
    assert_eq!(
        log.matches("refused the login").count(),
        1,
        "one line per state change:\n{log}"
    );
    assert!(log.contains(&format!("127.0.0.1:{auth_port}")), "{log}");
    assert!(!log.contains("wrong"), "{log}");
    // Backoff, not a spin: a handful of attempts in ~5 s, not thousands.
    let attempts = broker.log().matches("not authorised").count();
    assert!(
        (1..10).contains(&attempts),
        "{attempts} attempts:\n{}",
        broker.log()
    );
}

#[test]
fn the_documented_acl_lets_otp2mqtt_work_and_keeps_codes_from_other_users() {
    let dir = tempfile::tempdir().unwrap().keep();
    let passwd = password_file(&dir, "otp2mqtt", PASSWORD);
    for (user, password) in [("homeassistant", "ha-pass"), ("guest", "guest-pass")] {
        assert!(
            Command::new("mosquitto_passwd")
                .args(["-b", passwd.to_str().unwrap(), user, password])
                .status()
                .unwrap()
                .success()
        );
    }
    write(&dir, "passwd", &std::fs::read_to_string(&passwd).unwrap());
    let acl = write(
        &dir,
        "acl",
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/mosquitto/acl"))
            .unwrap(),
    );
    let port = free_port();
    let broker = Broker::start_with(&format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n",
        passwd.display(),
        acl.display()
    ));
    let config = write(
        &dir,
        "c.yaml",
        &format!(
            "mqtt:\n  host: 127.0.0.1\n  port: {port}\n  username: otp2mqtt\n  password: {PASSWORD}\nsensors:\n  - token: {TOKEN}\n    verify: {{}}\n"
        ),
    );
    let home_assistant = Observer::connect_as(
        port,
        &["homeassistant/#", "otp2mqtt/#"],
        Some(("homeassistant", "ha-pass")),
    );
    let guest = Observer::connect_as(port, &["#"], Some(("guest", "guest-pass")));
    let bridge = BridgeProcess::run(&config);
    home_assistant.wait_until(Duration::from_secs(10), &|| bridge.log(), |m| {
        m.iter().any(|r| r.topic == "otp2mqtt/otp_sensor/state")
            && m.iter()
                .any(|r| r.topic == "homeassistant/sensor/otp2mqtt/otp_sensor/config")
    });
    // Home Assistant's birth message reaches otp2mqtt through the ACL.
    std::thread::sleep(Duration::from_millis(3_500));
    home_assistant.clear();
    home_assistant.publish("homeassistant/status", b"online", false);
    home_assistant.wait_until(Duration::from_secs(5), &|| bridge.log(), |m| {
        m.iter()
            .any(|r| r.topic == "homeassistant/sensor/otp2mqtt/otp_sensor/config")
    });
    // The dashboard keypad (Home Assistant) may submit a code and read the answer;
    // the guest may do neither.
    guest.publish("otp2mqtt/otp_sensor/verify", b"123456", false);
    home_assistant.publish(
        "otp2mqtt/otp_sensor/verify",
        b"{\"code\": \"12\", \"id\": \"ha\"}",
        false,
    );
    let answers = home_assistant.wait_until(Duration::from_secs(5), &|| bridge.log(), |m| {
        m.iter()
            .any(|r| r.topic == "otp2mqtt/otp_sensor/verify/result")
    });
    let results: Vec<String> = answers
        .iter()
        .filter(|r| r.topic == "otp2mqtt/otp_sensor/verify/result")
        .map(|r| r.text())
        .collect();
    assert!(
        results.iter().all(|r| r.contains("\"id\":\"ha\"")),
        "only Home Assistant's attempt is answered: {results:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !broker.log().contains("Denied PUBLISH") {
        assert!(
            Instant::now() < deadline,
            "the guest's code was not denied:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let results = home_assistant.on("otp2mqtt/otp_sensor/verify/result");
    assert_eq!(
        results.len(),
        1,
        "{:?}",
        results.iter().map(|r| r.text()).collect::<Vec<_>>()
    );
    assert!(
        guest
            .messages()
            .iter()
            .all(|m| !m.topic.starts_with("otp2mqtt/")),
        "a user outside the ACL read the codes"
    );
    assert!(
        !broker.log().contains("Denied PUBLISH from otp2mqtt"),
        "{}",
        broker.log()
    );
}

/// A private CA with a server certificate for 127.0.0.1/localhost and a client certificate.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &Path, prefix: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{prefix} test CA"));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["otp2mqtt".to_string()]).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "otp2mqtt");
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    Pki {
        ca: write(dir, &format!("{prefix}-ca.pem"), &ca_cert.pem()),
        server_cert: write(dir, &format!("{prefix}-server.pem"), &server_cert.pem()),
        server_key: write(
            dir,
            &format!("{prefix}-server.key"),
            &server_key.serialize_pem(),
        ),
        client_cert: write(dir, &format!("{prefix}-client.pem"), &client_cert.pem()),
        client_key: write(
            dir,
            &format!("{prefix}-client.key"),
            &client_key.serialize_pem(),
        ),
    }
}

fn tls_broker(require_certificate: bool) -> (Broker, u16, Pki) {
    let dir = tempfile::tempdir().unwrap().keep();
    let pki = make_pki(&dir, "good");
    let port = free_port();
    let broker = Broker::start_with(&format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {require_certificate}\n",
        pki.ca.display(),
        pki.server_cert.display(),
        pki.server_key.display()
    ));
    (broker, port, pki)
}

fn run_until_state(broker: &Broker, config: &Path) -> BridgeProcess {
    let observer = Observer::connect(broker.port, &["otp2mqtt/#"]);
    let bridge = BridgeProcess::run(config);
    observer.wait_until(Duration::from_secs(10), &|| bridge.log(), |m| {
        m.iter().any(|r| r.topic == "otp2mqtt/otp_sensor/state")
    });
    bridge
}

#[test]
fn tls_with_a_private_ca() {
    let (broker, tls_port, pki) = tls_broker(false);
    let config = write(
        broker.dir(),
        "c.yaml",
        &format!(
            "mqtt:\n  host: localhost\n  port: {tls_port}\n  tls:\n    ca_file: {}\nsensors:\n  - token: {TOKEN}\n",
            pki.ca.display()
        ),
    );
    run_until_state(&broker, &config);
}

#[test]
fn tls_by_ip_address_with_a_server_name() {
    let (broker, tls_port, pki) = tls_broker(false);
    let config = write(
        broker.dir(),
        "c.toml",
        &format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {tls_port}\n[mqtt.tls]\nca_file = \"{}\"\nserver_name = \"localhost\"\n[[sensors]]\ntoken = \"{TOKEN}\"\n",
            pki.ca.display()
        ),
    );
    run_until_state(&broker, &config);
}

#[test]
fn mutual_tls_with_a_client_certificate() {
    let (broker, tls_port, pki) = tls_broker(true);
    let config = write(
        broker.dir(),
        "c.yaml",
        &format!(
            "mqtt:\n  host: localhost\n  port: {tls_port}\n  tls:\n    ca_file: {}\n    cert_file: {}\n    key_file: {}\nsensors:\n  - token: {TOKEN}\n",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    );
    let bridge = run_until_state(&broker, &config);
    let key = std::fs::read_to_string(&pki.client_key).unwrap();
    let key_body = key.lines().nth(1).unwrap();
    assert!(!bridge.log().contains(key_body));
}

#[test]
fn a_wrong_ca_or_a_missing_client_certificate_is_refused_with_the_reason() {
    let (broker, tls_port, pki) = tls_broker(true);
    let other = make_pki(broker.dir(), "other");
    let wrong_ca = write(
        broker.dir(),
        "wrong-ca.yaml",
        &format!(
            "mqtt:\n  host: localhost\n  port: {tls_port}\n  tls:\n    ca_file: {}\nsensors:\n  - token: {TOKEN}\n",
            other.ca.display()
        ),
    );
    let bridge = BridgeProcess::run(&wrong_ca);
    wait_for_log(&bridge, "UnknownIssuer", Duration::from_secs(10));
    assert!(bridge.log().contains(&format!("localhost:{tls_port}")));

    let no_client_cert = write(
        broker.dir(),
        "no-client-cert.yaml",
        &format!(
            "mqtt:\n  host: localhost\n  port: {tls_port}\n  tls:\n    ca_file: {}\nsensors:\n  - token: {TOKEN}\n",
            pki.ca.display()
        ),
    );
    let bridge = BridgeProcess::run(&no_client_cert);
    wait_for_log(
        &bridge,
        "waiting for the MQTT broker",
        Duration::from_secs(10),
    );
    assert!(retained(broker.port, "homeassistant/#").is_empty());
}

#[test]
fn unusable_tls_and_secret_files_stop_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = write(dir.path(), "not.pem", "hello");
    write(dir.path(), "empty.token", "\n");
    for (tls_or_sensor, needle) in [
        (
            format!("  tls:\n    ca_file: {}\n", not_pem.display()),
            "tls.ca_file",
        ),
        (
            "  tls:\n    ca_file: /nonexistent/ca.pem\n".to_string(),
            "/nonexistent/ca.pem",
        ),
        (
            "  tls:\n    cert_file: /nonexistent/c.pem\n".to_string(),
            "tls.key_file",
        ),
        (
            "  password_file: /nonexistent/pw\n  username: u\n".to_string(),
            "/nonexistent/pw",
        ),
        (
            "  password: a\n  password_file: b\n  username: u\n".to_string(),
            "mqtt.password_file",
        ),
    ] {
        let config = write(
            dir.path(),
            "c.yaml",
            &format!("mqtt:\n{tls_or_sensor}sensors:\n  - token: {TOKEN}\n"),
        );
        let mut bridge = BridgeProcess::run(&config);
        assert_eq!(
            bridge.wait(Duration::from_secs(10)).unwrap().code(),
            Some(78),
            "{}",
            bridge.log()
        );
        assert!(bridge.log().contains(needle), "{needle}: {}", bridge.log());
    }
    for (sensor, needle) in [
        ("token_file: /nonexistent/t".to_string(), "/nonexistent/t"),
        ("token_file: empty.token".to_string(), "is empty"),
        (
            format!("token: {TOKEN}\n    token_file: empty.token"),
            "given only one",
        ),
    ] {
        let config = write(
            dir.path(),
            "c.yaml",
            &format!("sensors:\n  - name: Door\n    {sensor}\n"),
        );
        let mut bridge = BridgeProcess::run(&config);
        assert_eq!(
            bridge.wait(Duration::from_secs(10)).unwrap().code(),
            Some(78),
            "{}",
            bridge.log()
        );
        let log = bridge.log();
        assert!(
            log.contains(needle) || (needle == "given only one" && log.contains("give only one")),
            "{needle}: {log}"
        );
        assert!(
            log.contains("Door") && log.contains("token_file") && !log.contains(TOKEN),
            "{log}"
        );
    }
}
