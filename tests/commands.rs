//! The companion commands `token`, `code` and `check` as a user runs them: the
//! real binary as a process, its output parsed, codes checked against an
//! independent TOTP implementation, QR codes decoded back with another crate.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use support::*;

const SHA1_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const SHA256_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA";
const SHORT_SECRET: &str = "IHEDPEBEVA2WVHB7";

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn describe(output: &std::process::Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        stdout(output),
        stderr(output)
    )
}

// ---------------------------------------------------------------- token

/// The QR code's lines: after the "Scan this QR code" line and a blank line, up
/// to the next empty line (quiet-zone lines are spaces, not empty).
fn qr_lines(output: &str) -> Vec<&str> {
    let lines: Vec<&str> = output
        .lines()
        .skip_while(|line| !line.starts_with("Scan this QR code"))
        .skip(2)
        .take_while(|line| !line.is_empty())
        .collect();
    assert!(
        lines
            .iter()
            .all(|line| line.chars().all(|c| matches!(c, ' ' | '█' | '▀' | '▄'))),
        "{output}"
    );
    lines
}

/// Decodes a QR code drawn with Unicode half blocks, as a phone camera would see
/// it on the screen: drawn cells are light text on a dark terminal (the
/// default), or dark text on a light one (`inverted`).
fn decode_terminal_qr(lines: &[&str], inverted: bool) -> String {
    let rows: Vec<Vec<char>> = lines.iter().map(|line| line.chars().collect()).collect();
    let modules = rows[0].len();
    assert!(rows.iter().all(|row| row.len() == modules), "ragged QR");
    // The code is square; the last text line may hold only a top half.
    assert_eq!(rows.len(), modules.div_ceil(2), "QR not square");
    let drawn =
        |x: usize, y: usize| matches!((rows[y / 2][x], y % 2), ('█', _) | ('▀', 0) | ('▄', 1));
    const SCALE: usize = 4;
    const MARGIN: usize = 16;
    let side = modules * SCALE + 2 * MARGIN;
    let mut image = rqrr::PreparedImage::prepare_from_bitmap(side, side, |px, py| {
        if px < MARGIN || py < MARGIN || px >= side - MARGIN || py >= side - MARGIN {
            return false; // background around the terminal text: light
        }
        let (x, y) = ((px - MARGIN) / SCALE, (py - MARGIN) / SCALE);
        // Dark module: the drawn ones when inverted, the blank ones otherwise.
        drawn(x, y) == inverted
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "expected one QR code");
    grids[0].decode().expect("QR code decodes").1
}

fn query_parameters(uri: &str) -> HashMap<String, String> {
    let query = uri.split_once('?').expect("URI has a query").1;
    let mut parameters = HashMap::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').expect("name=value");
        assert!(
            parameters
                .insert(name.to_string(), value.to_string())
                .is_none(),
            "duplicate {name}"
        );
    }
    parameters
}

#[test]
fn token_prints_a_fresh_secret_its_uri_a_scannable_qr_code_and_a_snippet() {
    let output = otp2mqtt(&[
        "token",
        "--name",
        "Front Door",
        "--issuer",
        "ACME Co",
        "--digits",
        "8",
        "--period",
        "60",
        "--algorithm",
        "sha256",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let text = stdout(&output);

    // The secret on its own line: 32 base32 characters, 160 bits.
    let secret = text
        .lines()
        .map(str::trim)
        .find(|line| {
            line.len() == 32
                && line
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        })
        .expect("a line with the secret alone")
        .to_string();
    assert_eq!(base32_decode(&secret).len(), 20);

    // The URI, with every field.
    let uri = text
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("otpauth://"))
        .expect("an otpauth URI line")
        .to_string();
    assert!(
        uri.starts_with("otpauth://totp/ACME%20Co:Front%20Door?"),
        "{uri}"
    );
    let parameters = query_parameters(&uri);
    assert_eq!(parameters["secret"], secret);
    assert_eq!(parameters["issuer"], "ACME%20Co");
    assert_eq!(parameters["digits"], "8");
    assert_eq!(parameters["period"], "60");
    assert_eq!(parameters["algorithm"], "SHA256");

    // The QR code decodes to exactly the URI.
    assert_eq!(decode_terminal_qr(&qr_lines(&text), false), uri);

    // The snippet is a valid config with the same secret and settings.
    let snippet_start = text.find("sensors:\n").expect("config snippet");
    let snippet: String = text[snippet_start..]
        .lines()
        .take_while(|line| !line.is_empty())
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(snippet.contains(&format!("token: {secret}")), "{snippet}");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "otp2mqtt.yaml", &snippet);
    let check = otp2mqtt(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--allow-unsynced-clock",
    ]);
    assert!(check.status.success(), "{}", describe(&check));
    assert!(
        stdout(&check)
            .contains("front_door  Front Door  8       60 s    SHA256     sensor.front_door"),
        "{}",
        describe(&check)
    );

    // A new secret on every call.
    let again = stdout(&otp2mqtt(&["token"]));
    assert!(!again.contains(&secret));
}

#[test]
fn token_qr_code_inverts_for_light_terminals_and_defaults_match_pyotp() {
    let output = otp2mqtt(&["token", "--invert"]);
    assert!(output.status.success(), "{}", describe(&output));
    let text = stdout(&output);
    let uri = text
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("otpauth://"))
        .unwrap()
        .to_string();
    assert!(
        uri.starts_with("otpauth://totp/Home%20Assistant:OTP%20Sensor?secret="),
        "{uri}"
    );
    assert!(uri.ends_with("&algorithm=SHA1&digits=6&period=30"), "{uri}");
    assert_eq!(decode_terminal_qr(&qr_lines(&text), true), uri);
}

#[test]
fn token_refuses_bad_options() {
    for (args, needle) in [
        (&["token", "--digits", "9"][..], "--digits"),
        (&["token", "--period", "0"][..], "--period"),
        (
            &["token", "--algorithm", "MD5"][..],
            "SHA1, SHA256 or SHA512",
        ),
        (&["token", "--name", "!!!"][..], "letter or digit"),
    ] {
        let output = otp2mqtt(args);
        assert!(!output.status.success(), "{args:?}: {}", describe(&output));
        assert!(
            stderr(&output).contains(needle),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(
            stdout(&output).is_empty(),
            "{args:?}: {}",
            describe(&output)
        );
    }
}

// ---------------------------------------------------------------- code

/// Three sensors covering every algorithm and digit count.
fn three_sensor_config(extra: &str) -> String {
    format!(
        "{extra}sensors:\n  - token: {SHA1_SECRET}\n  - name: Front Door\n    token: {SHA256_SECRET}\n    digits: 8\n    period: 60\n    algorithm: SHA256\n  - name: Garage\n    token: {SHA1_SECRET}{SHA1_SECRET}\n    digits: 7\n    algorithm: sha512\n"
    )
}

struct Expected {
    name: &'static str,
    secret: Vec<u8>,
    algorithm: &'static str,
    digits: u32,
    period: u64,
}

fn three_sensor_expectations() -> Vec<Expected> {
    vec![
        Expected {
            name: "OTP Sensor",
            secret: base32_decode(SHA1_SECRET),
            algorithm: "SHA1",
            digits: 6,
            period: 30,
        },
        Expected {
            name: "Front Door",
            secret: base32_decode(SHA256_SECRET),
            algorithm: "SHA256",
            digits: 8,
            period: 60,
        },
        Expected {
            name: "Garage",
            secret: base32_decode(&format!("{SHA1_SECRET}{SHA1_SECRET}")),
            algorithm: "SHA512",
            digits: 7,
            period: 30,
        },
    ]
}

/// Checks one printed table ("Codes at <time> (UTC)", a header, one row per
/// sensor) against the independent implementation at the printed time.
fn check_code_table(table: &[String], expected: &[Expected]) {
    let time = table[0]
        .strip_prefix("Codes at ")
        .and_then(|rest| rest.strip_suffix(" (UTC)"))
        .unwrap_or_else(|| panic!("header: {table:?}"));
    let unix = humantime::parse_rfc3339(time)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(table[1].starts_with("NAME"), "{table:?}");
    for sensor in expected {
        let row = table
            .iter()
            .find(|row| row.starts_with(sensor.name))
            .unwrap_or_else(|| panic!("no row for {}: {table:?}", sensor.name));
        let fields: Vec<&str> = row[sensor.name.len()..].split_whitespace().collect();
        let code = independent_totp(
            &sensor.secret,
            sensor.algorithm,
            sensor.digits,
            sensor.period,
            unix,
        );
        assert_eq!(fields[0], code, "{} at {unix}: {row}", sensor.name);
        let left = sensor.period - unix % sensor.period;
        let shown: u64 = fields[1].parse().unwrap();
        assert!(
            shown == left || shown + 1 == left,
            "{row}: expected about {left} s"
        );
        assert_eq!(fields[2], "s");
    }
}

#[test]
fn code_prints_each_sensors_current_code_without_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    // A broker address where nothing listens: `code` must not need one.
    let config = write_config(
        dir.path(),
        "otp2mqtt.yaml",
        &three_sensor_config("mqtt:\n  host: 127.0.0.1\n  port: 1\n"),
    );
    let output = otp2mqtt(&["code", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    let lines: Vec<String> = stdout(&output).lines().map(String::from).collect();
    assert_eq!(lines.len(), 5, "{}", describe(&output));
    check_code_table(&lines, &three_sensor_expectations());
    let printed = stdout(&output) + &stderr(&output);
    assert!(
        !printed.contains("GEZD") && !printed.contains("gezd"),
        "{printed}"
    );
}

#[test]
fn code_watch_redraws_at_each_boundary_until_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "otp2mqtt.yaml",
        &format!("sensors:\n  - name: Fast\n    token: {SHA1_SECRET}\n    period: 1\n"),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_otp2mqtt"))
        .args(["code", "--watch", "--config", config.to_str().unwrap()])
        .env_remove("OTP2MQTT_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    let reader = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let expected = [Expected {
        name: "Fast",
        secret: base32_decode(SHA1_SECRET),
        algorithm: "SHA1",
        digits: 6,
        period: 1,
    }];
    let mut tables: Vec<Vec<String>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while tables.len() < 4 {
        let line = lines_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("fewer than 4 redraws in 15 s: {tables:?}"));
        if line.starts_with("Codes at ") {
            tables.push(vec![line]);
        } else if let Some(table) = tables.last_mut() {
            if !line.is_empty() {
                table.push(line);
            }
        }
    }
    // The last table may still be arriving; check the complete ones.
    let mut times = Vec::new();
    for table in &tables[..3] {
        check_code_table(table, &expected);
        times.push(table[0].clone());
    }
    times.dedup();
    assert_eq!(times.len(), 3, "one redraw per step: {tables:?}");

    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "code --watch ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
}

// ---------------------------------------------------------------- check

/// Secrets in every form they could leak in: as written, upper and lower case,
/// without spaces, and the decoded bytes in hex (how totp-rs prints a `Secret`).
fn leak_forms(secret: &str) -> Vec<String> {
    let compact: String = secret.split_whitespace().collect();
    let mut forms = vec![
        secret.to_string(),
        compact.to_uppercase(),
        compact.to_lowercase(),
        // A 12-character prefix is already too much of a secret.
        compact.to_uppercase()[..12].to_string(),
    ];
    let is_base32 = compact
        .bytes()
        .all(|b| b.is_ascii_alphabetic() || (b'2'..=b'7').contains(&b));
    if is_base32 {
        let bytes = base32_decode(&compact.to_uppercase());
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        forms.push(hex.to_uppercase());
        forms.push(hex);
    }
    forms
}

fn assert_no_secret(output: &std::process::Output, secrets: &[&str]) {
    let printed = stdout(output) + &stderr(output);
    for secret in secrets {
        for form in leak_forms(secret) {
            assert!(
                !printed.contains(&form),
                "secret leaked as {form}:\n{printed}"
            );
        }
    }
}

#[test]
fn check_passes_a_good_config_and_lists_sensors_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "otp2mqtt.yaml",
        &three_sensor_config(
            "mqtt:\n  host: 127.0.0.1\n  username: alice\n  password: hunter2-password\n",
        ),
    );
    let output = otp2mqtt(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--allow-unsynced-clock",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let text = stdout(&output);
    for row in [
        "ID          NAME        DIGITS  PERIOD  ALGORITHM  ENTITY ID",
        "otp_sensor  OTP Sensor  6       30 s    SHA1       sensor.otp_sensor",
        "front_door  Front Door  8       60 s    SHA256     sensor.front_door",
        "garage      Garage      7       30 s    SHA512     sensor.garage",
    ] {
        assert!(text.contains(row), "{row}\n{}", describe(&output));
    }
    assert!(
        text.contains("Config ") && text.contains(": valid"),
        "{text}"
    );
    assert!(text.contains("'front_door': period 60 s"), "{text}");
    assert!(text.contains("Clock: "), "{text}");
    assert!(text.contains("Result: usable"), "{text}");
    assert_no_secret(&output, &[SHA1_SECRET, SHA256_SECRET, "hunter2-password"]);
}

#[test]
fn check_judges_the_clock_as_the_kernel_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "otp2mqtt.yaml",
        &format!("sensors:\n  - token: {SHA1_SECRET}\n"),
    );
    let output = otp2mqtt(&["check", "--config", config.to_str().unwrap()]);
    match kernel_clock_unsynchronised() {
        Some(true) => {
            assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
            assert!(stdout(&output).contains("Clock: NOT synchronised"));
            assert!(stderr(&output).contains("not NTP-synchronised"));
            assert!(stderr(&output).contains("--allow-unsynced-clock"));
        }
        Some(false) => {
            assert!(output.status.success(), "{}", describe(&output));
            assert!(stdout(&output).contains("Clock: synchronised (estimated error"));
        }
        None => {
            assert!(output.status.success(), "{}", describe(&output));
            assert!(stdout(&output).contains("Clock: unknown"));
        }
    }
}

#[test]
fn check_fails_each_broken_config_with_the_reason_and_no_secret() {
    let good = format!("  - name: Door\n    token: {SHA1_SECRET}\n");
    let cases: Vec<(String, &str)> = vec![
        ("sensors: []\n".into(), "key 'sensors' is empty"),
        (
            "sensors:\n  - name: Door\n".into(),
            "key 'token' is missing",
        ),
        (
            "sensors:\n  - name: Door\n    token: GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1\n".into(),
            "key 'token' is not valid base32",
        ),
        (
            "sensors:\n  - name: Door\n    token: GEZDGNBVGY3T\n".into(),
            "key 'token' is too short",
        ),
        (
            format!("sensors:\n{good}    digits: 9\n"),
            "key 'digits' is 9",
        ),
        (
            format!("sensors:\n{good}    period: 0\n"),
            "key 'period' is 0",
        ),
        (
            format!("sensors:\n{good}    algorithm: MD5\n"),
            "key 'algorithm' unknown algorithm 'MD5'",
        ),
        (format!("sensors:\n{good}    tokn: x\n"), "tokn"),
        (
            format!("sensors:\n{good}{good}"),
            "key 'id' 'door' is already used",
        ),
        (
            format!("mqtt:\n  password: hunter2-password\nsensors:\n{good}"),
            "key 'mqtt.password' is set without `username`",
        ),
        (
            format!("mqtt:\n  keep_alive: 600\nsensors:\n{good}"),
            "key 'mqtt.keep_alive'",
        ),
        (
            format!("instance_id: my house\nsensors:\n{good}"),
            "key 'instance_id'",
        ),
        (format!("sensors:\n{good}  - [unclosed\n"), "line"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in cases {
        let config = write_config(dir.path(), "broken.yaml", &text);
        let output = otp2mqtt(&["check", "--config", config.to_str().unwrap()]);
        assert_eq!(
            output.status.code(),
            Some(78),
            "{text}\n{}",
            describe(&output)
        );
        let message = stderr(&output);
        assert!(message.contains(needle), "{needle}:\n{}", describe(&output));
        assert!(message.contains("broken.yaml"), "{}", describe(&output));
        assert!(message.contains("not usable"), "{}", describe(&output));
        assert_no_secret(&output, &[SHA1_SECRET, "hunter2-password"]);
    }

    let missing = dir.path().join("missing.yaml");
    let output = otp2mqtt(&["check", "--config", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78), "{}", describe(&output));
    assert!(
        stderr(&output).contains("not found"),
        "{}",
        describe(&output)
    );
    let ini = write_config(dir.path(), "otp2mqtt.ini", "{}");
    let output = otp2mqtt(&["check", "--config", ini.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78), "{}", describe(&output));
    assert!(stderr(&output).contains(".yaml, .yml, .toml or .json"));
}

#[test]
fn check_warns_about_short_secrets_but_passes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "otp2mqtt.yaml",
        &format!("sensors:\n  - token: {SHORT_SECRET}\n"),
    );
    let output = otp2mqtt(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--allow-unsynced-clock",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(stdout(&output).contains("the secret is 80 bits"));
    assert_no_secret(&output, &[SHORT_SECRET]);
}

/// `otp2mqtt check --connect` on the three-sensor config pointed at `port`.
fn check_connect(port: u16) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "otp2mqtt.yaml",
        &three_sensor_config(&format!("mqtt:\n  host: 127.0.0.1\n  port: {port}\n")),
    );
    otp2mqtt(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--connect",
        "--allow-unsynced-clock",
    ])
}

#[test]
fn check_connect_reaches_the_broker_and_leaves_nothing_behind() {
    let broker = Broker::start();
    let observer = Observer::connect(broker.port, &["#"]);
    let output = check_connect(broker.port);
    assert!(
        output.status.success(),
        "{}\n{}",
        describe(&output),
        broker.log()
    );
    assert!(
        stdout(&output).contains("Broker connection: OK"),
        "{}",
        describe(&output)
    );
    // A clean disconnect: no will fired, nothing published, nothing retained.
    let log = broker.log();
    assert!(log.contains("otp2mqtt-check-"), "{log}");
    assert!(log.contains("disconnected"), "{log}");
    assert!(retained(broker.port, "#").is_empty());
    assert!(
        observer
            .messages()
            .iter()
            .all(|m| m.topic.starts_with("otp2mqtt-test/")),
        "{:?}",
        observer.messages()
    );
}

#[test]
fn check_connect_reports_why_the_broker_failed() {
    let nowhere = Broker::unstarted();
    let output = check_connect(nowhere.port);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "cannot connect to the MQTT broker at 127.0.0.1:{}",
            nowhere.port
        )) && message.contains("refused"),
        "{}",
        describe(&output)
    );

    // A broker that wants a login it does not get.
    let broker = Broker::start_with("allow_anonymous false\n");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "login.yaml",
        &three_sensor_config(&format!(
            "mqtt:\n  host: 127.0.0.1\n  port: {}\n  username: alice\n  password: hunter2-password\n",
            broker.port
        )),
    );
    let output = otp2mqtt(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--connect",
        "--allow-unsynced-clock",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains("check mqtt.username and mqtt.password"),
        "{}\n{}",
        describe(&output),
        broker.log()
    );
    assert_no_secret(&output, &[SHA1_SECRET, "hunter2-password"]);
}

// ---------------------------------------------------------------- run, help

#[test]
fn run_warns_at_start_up_when_the_clock_is_unsynchronised() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "otp2mqtt.yaml",
        &format!(
            "mqtt:\n  host: 127.0.0.1\n  port: {}\nsensors:\n  - token: {SHA1_SECRET}\n",
            broker.port
        ),
    );
    let bridge = BridgeProcess::run(&config);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bridge.log().contains("connected to MQTT broker") {
        assert!(
            Instant::now() < deadline,
            "bridge did not connect:\n{}",
            bridge.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = bridge.log();
    let warned = log.contains("the system clock is not NTP-synchronised");
    match kernel_clock_unsynchronised() {
        Some(true) => assert!(warned && log.contains("WARN"), "{log}"),
        _ => assert!(!warned, "{log}"),
    }
}

#[test]
fn every_command_has_help_with_examples_and_there_is_a_version() {
    for command in ["run", "token", "code", "check"] {
        let output = otp2mqtt(&[command, "--help"]);
        assert!(output.status.success(), "{command}: {}", describe(&output));
        let help = stdout(&output);
        assert!(help.contains("Example"), "{command}:\n{help}");
        assert!(
            help.contains(&format!("otp2mqtt {command}")),
            "{command}:\n{help}"
        );
    }
    let check_help = stdout(&otp2mqtt(&["check", "--help"]));
    for needle in ["--connect", "--allow-unsynced-clock", "78"] {
        assert!(check_help.contains(needle), "{needle}:\n{check_help}");
    }
    let output = otp2mqtt(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output).trim(),
        format!("otp2mqtt {}", env!("CARGO_PKG_VERSION"))
    );
}
