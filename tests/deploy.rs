//! The deployment files (Dockerfiles, compose, systemd, Kubernetes, Home
//! Assistant add-on) against each other and against the binary: they parse,
//! every file they name exists, and they agree on the user, the paths, the port,
//! the health check and the exit codes. No container engine is needed.
//!
//! YAML is read with yaml-rust2, the parser the binary's own config loading uses.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

/// Where the image installs the binary; probes and the unit call it there.
const BINARY: &str = "/usr/local/bin/otp2mqtt";
/// The image's default config path (`OTP2MQTT_CONFIG`).
const CONFIG_PATH: &str = "/config/otp2mqtt.yaml";
/// The image's health file (`OTP2MQTT__HEALTH_FILE`), on the /tmp tmpfs.
const HEALTH_FILE: &str = "/tmp/otp2mqtt-health.json";
/// distroless "nonroot".
const NONROOT: i64 = 65532;

fn healthcheck_command() -> Vec<String> {
    vec![BINARY.to_string(), "healthcheck".to_string()]
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|error| panic!("{relative}: {error}"))
}

/// Parses `text` as exactly one YAML document.
fn parse_yaml(text: &str, what: &str) -> Yaml {
    let mut documents =
        YamlLoader::load_from_str(text).unwrap_or_else(|error| panic!("{what}: {error}"));
    assert_eq!(documents.len(), 1, "{what}: expected one YAML document");
    let document = documents.remove(0);
    assert!(document.as_hash().is_some(), "{what}: not a YAML mapping");
    document
}

fn yaml(relative: &str) -> Yaml {
    parse_yaml(&read(relative), relative)
}

fn text<'a>(value: &'a Yaml, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {value:?}"))
}

fn strings(value: &Yaml, what: &str) -> Vec<String> {
    value
        .as_vec()
        .unwrap_or_else(|| panic!("{what}: expected a list, found {value:?}"))
        .iter()
        .map(|item| text(item, what).to_string())
        .collect()
}

fn keys(value: &Yaml, what: &str) -> BTreeSet<String> {
    value
        .as_hash()
        .unwrap_or_else(|| panic!("{what}: expected a mapping, found {value:?}"))
        .keys()
        .map(|key| text(key, what).to_string())
        .collect()
}

/// A Dockerfile as (INSTRUCTION, arguments) pairs, continuation lines joined.
struct Dockerfile {
    path: &'static str,
    instructions: Vec<(String, String)>,
}

impl Dockerfile {
    fn load(path: &'static str) -> Self {
        let mut instructions = Vec::new();
        let mut pending = String::new();
        for line in read(path).lines() {
            let trimmed = line.trim();
            if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(start) => {
                    pending.push_str(start);
                    pending.push(' ');
                }
                None => {
                    pending.push_str(trimmed);
                    let (instruction, arguments) = pending
                        .split_once(char::is_whitespace)
                        .unwrap_or((&pending, ""));
                    instructions.push((instruction.to_uppercase(), arguments.trim().to_string()));
                    pending.clear();
                }
            }
        }
        Dockerfile { path, instructions }
    }

    fn all<'a>(&'a self, instruction: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.instructions
            .iter()
            .filter(move |(name, _)| name == instruction)
            .map(|(_, arguments)| arguments.as_str())
    }

    /// Instructions of the final stage only (after the last FROM).
    fn final_stage(&self) -> &[(String, String)] {
        let last_from = self
            .instructions
            .iter()
            .rposition(|(name, _)| name == "FROM")
            .unwrap_or_else(|| panic!("{}: no FROM", self.path));
        &self.instructions[last_from..]
    }

    fn final_one(&self, instruction: &str) -> String {
        let found: Vec<_> = self
            .final_stage()
            .iter()
            .filter(|(name, _)| name == instruction)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: expected one {instruction} in the final stage",
            self.path
        );
        found[0].1.clone()
    }

    /// `KEY=value` pairs of ENV, LABEL or ARG instructions (quotes removed).
    fn pairs(&self, instruction: &str) -> HashMap<String, String> {
        let mut pairs = HashMap::new();
        for arguments in self.all(instruction) {
            for word in split_words(arguments) {
                if let Some((key, value)) = word.split_once('=') {
                    pairs.insert(key.to_string(), value.to_string());
                }
            }
        }
        pairs
    }

    /// Sources of the COPY instructions that read the build context.
    fn context_sources(&self) -> Vec<String> {
        let mut sources = Vec::new();
        for arguments in self.all("COPY") {
            let words = split_words(arguments);
            if words.iter().any(|word| word.starts_with("--from")) {
                continue;
            }
            let paths: Vec<_> = words
                .iter()
                .filter(|word| !word.starts_with("--"))
                .collect();
            assert!(paths.len() >= 2, "{}: COPY {arguments}", self.path);
            sources.extend(paths[..paths.len() - 1].iter().map(|path| path.to_string()));
        }
        sources
    }

    /// The exec-form command of HEALTHCHECK.
    fn healthcheck(&self) -> (String, Vec<String>) {
        let arguments = self.final_one("HEALTHCHECK");
        let (options, command) = arguments
            .split_once("CMD")
            .unwrap_or_else(|| panic!("{}: HEALTHCHECK without CMD", self.path));
        let command: Vec<String> = serde_json::from_str(command.trim())
            .unwrap_or_else(|error| panic!("{}: HEALTHCHECK is not exec form: {error}", self.path));
        (options.trim().to_string(), command)
    }
}

/// Splits on whitespace outside double quotes and drops the quotes.
fn split_words(arguments: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for character in arguments.chars() {
        match character {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The repository's .dockerignore is an allow-list (`*`, then `!path` lines);
/// a path is in the build context when it or one of its parents is allowed.
fn in_build_context(path: &str) -> bool {
    let dockerignore = read(".dockerignore");
    let patterns: Vec<&str> = dockerignore
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert_eq!(
        patterns.first(),
        Some(&"*"),
        ".dockerignore must stay an allow-list starting with `*` (this test reads it that way)"
    );
    let path = path.trim_start_matches("./").trim_end_matches('/');
    patterns[1..].iter().any(|pattern| {
        let allowed = pattern
            .strip_prefix('!')
            .unwrap_or_else(|| panic!(".dockerignore: '{pattern}' after `*` must start with '!'"));
        path == allowed || path.starts_with(&format!("{allowed}/"))
    })
}

fn dockerfile_paths() -> [&'static str; 2] {
    [
        "docker/Dockerfile",
        "deploy/home-assistant-addon/Dockerfile",
    ]
}

/// The otp2mqtt config embedded in the Kubernetes ConfigMap.
fn kubernetes_config() -> Yaml {
    let configmap = yaml("deploy/kubernetes/configmap.yaml");
    let file_name = Path::new(CONFIG_PATH)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    parse_yaml(
        text(&configmap["data"][file_name], "configmap data"),
        "the ConfigMap's otp2mqtt.yaml",
    )
}

fn statefulset_container() -> Yaml {
    let statefulset = yaml("deploy/kubernetes/statefulset.yaml");
    let containers = statefulset["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .expect("containers")
        .clone();
    assert_eq!(containers.len(), 1, "one container");
    containers[0].clone()
}

fn container_env(container: &Yaml) -> HashMap<String, Yaml> {
    container["env"]
        .as_vec()
        .expect("env")
        .iter()
        .map(|variable| {
            (
                text(&variable["name"], "env name").to_string(),
                variable.clone(),
            )
        })
        .collect()
}

/// Loads `yaml_text` with the binary's own config loader, from a file in a temp
/// dir, with exactly the given environment (not the test process's).
fn load_with_binary(
    yaml_text: &str,
    environment: &[(&str, String)],
) -> Result<otp2mqtt::config::Settings, otp2mqtt::config::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otp2mqtt.yaml");
    std::fs::write(&path, yaml_text).unwrap();
    let environment = environment
        .iter()
        .map(|(key, value)| (key.to_string(), value.clone()))
        .collect();
    otp2mqtt::config::load_with_environment(&path, Some(environment))
}

#[test]
fn every_deployment_yaml_and_json_file_parses() {
    for file in [
        "docker/compose.yaml",
        "docker/otp2mqtt.yaml",
        "deploy/systemd/otp2mqtt.yaml",
        "deploy/home-assistant-addon/config.yaml",
        "deploy/home-assistant-addon/build.yaml",
        "deploy/home-assistant-addon/translations/en.yaml",
    ] {
        yaml(file);
    }
    for entry in std::fs::read_dir(repo().join("deploy/kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        let relative = path
            .strip_prefix(repo())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let document = yaml(&relative);
        if !relative.ends_with("kustomization.yaml") {
            for key in ["apiVersion", "kind", "metadata"] {
                assert!(!document[key].is_badvalue(), "{relative}: no {key}");
            }
        }
    }
    kubernetes_config();
    let options: serde_json::Value =
        serde_json::from_str(&read("deploy/home-assistant-addon/test-options.json")).unwrap();
    assert!(options.is_object());
}

#[test]
fn dockerfiles_copy_only_files_that_exist_and_are_in_the_build_context() {
    for path in dockerfile_paths() {
        let dockerfile = Dockerfile::load(path);
        let sources = dockerfile.context_sources();
        assert!(
            !sources.is_empty(),
            "{path}: copies nothing from the context"
        );
        for source in sources {
            assert!(
                repo().join(&source).exists(),
                "{path}: COPY {source}: no such file in the repository (the context is the repo root)"
            );
            assert!(
                in_build_context(&source),
                "{path}: COPY {source}: excluded by .dockerignore"
            );
        }
        assert!(
            dockerfile
                .all("RUN")
                .any(|run| run.contains("cargo build --release --locked")),
            "{path}: builds with cargo build --release --locked"
        );
        assert!(
            dockerfile
                .all("FROM")
                .any(|from| from.starts_with("rust:") && from.contains("-bookworm")),
            "{path}: a rust bookworm builder stage"
        );
        let copies_binary = dockerfile
            .final_stage()
            .iter()
            .any(|(name, arguments)| name == "COPY" && arguments.ends_with(BINARY));
        assert!(copies_binary, "{path}: installs the binary at {BINARY}");
    }
    // Secrets never reach a build context.
    assert!(!in_build_context("docker/secrets/mqtt_password"));
    assert!(!in_build_context("target"));
    assert!(!in_build_context(".git"));
}

#[test]
fn the_image_runs_as_nonroot_with_the_documented_paths_and_healthcheck() {
    let dockerfile = Dockerfile::load("docker/Dockerfile");
    assert_eq!(
        dockerfile.final_one("FROM"),
        "gcr.io/distroless/cc-debian12:nonroot"
    );
    assert_eq!(dockerfile.final_one("USER"), format!("{NONROOT}:{NONROOT}"));
    assert_eq!(dockerfile.final_one("STOPSIGNAL"), "SIGTERM");
    let env = dockerfile.pairs("ENV");
    assert_eq!(env["OTP2MQTT_CONFIG"], CONFIG_PATH);
    assert_eq!(env["OTP2MQTT__HEALTH_FILE"], HEALTH_FILE);
    let (options, command) = dockerfile.healthcheck();
    assert_eq!(command, healthcheck_command());
    for option in ["--interval=30s", "--start-period=20s"] {
        assert!(options.contains(option), "HEALTHCHECK {option}");
    }
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&dockerfile.final_one("ENTRYPOINT")).unwrap(),
        vec![BINARY]
    );
    let labels = dockerfile.pairs("LABEL");
    for label in [
        "title",
        "description",
        "source",
        "licenses",
        "version",
        "revision",
    ] {
        assert!(
            labels.contains_key(&format!("org.opencontainers.image.{label}")),
            "OCI label {label}"
        );
    }
    assert_eq!(
        dockerfile.pairs("ARG")["VERSION"],
        env!("CARGO_PKG_VERSION"),
        "the image's default VERSION follows Cargo.toml"
    );
}

#[test]
fn compose_agrees_with_the_image_and_refers_only_to_existing_files() {
    let compose = yaml("docker/compose.yaml");
    let compose_dir = repo().join("docker");
    let services = &compose["services"];
    let otp2mqtt = &services["otp2mqtt"];

    // Build: context and Dockerfile exist; the Dockerfile path is relative to the context.
    let context = compose_dir.join(text(&otp2mqtt["build"]["context"], "build.context"));
    assert_eq!(
        context.canonicalize().unwrap(),
        repo().canonicalize().unwrap()
    );
    let dockerfile = text(&otp2mqtt["build"]["dockerfile"], "build.dockerfile");
    assert!(context.join(dockerfile).is_file(), "{dockerfile}");
    assert_eq!(dockerfile, "docker/Dockerfile");

    // Every bind-mounted and secret file exists.
    for (name, service) in services.as_hash().unwrap() {
        let name = text(name, "service name");
        for volume in service["volumes"].as_vec().into_iter().flatten() {
            let volume = text(volume, "volume");
            let source = volume.split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(compose_dir.join(source).exists(), "{name}: volume {volume}");
            }
        }
    }
    let secrets = &compose["secrets"];
    for (name, secret) in secrets.as_hash().unwrap() {
        let file = text(&secret["file"], "secret file");
        assert!(
            compose_dir.join(file).is_file(),
            "secret {}: {file}",
            text(name, "secret")
        );
    }

    // The otp2mqtt service: read-only, /tmp tmpfs, nonroot, the image's healthcheck.
    assert_eq!(otp2mqtt["read_only"].as_bool(), Some(true));
    assert!(strings(&otp2mqtt["tmpfs"], "tmpfs").contains(&"/tmp".to_string()));
    assert_eq!(
        text(&otp2mqtt["user"], "user"),
        format!("{NONROOT}:{NONROOT}")
    );
    assert_eq!(text(&otp2mqtt["restart"], "restart"), "unless-stopped");
    assert!(!otp2mqtt["stop_grace_period"].is_badvalue());
    assert_eq!(
        text(
            &otp2mqtt["depends_on"]["mosquitto"]["condition"],
            "depends_on"
        ),
        "service_healthy"
    );
    let healthcheck = strings(&otp2mqtt["healthcheck"]["test"], "healthcheck");
    assert_eq!(healthcheck[0], "CMD");
    assert_eq!(healthcheck[1..], healthcheck_command()[..]);
    let environment = &otp2mqtt["environment"];
    assert_eq!(text(&environment["OTP2MQTT_CONFIG"], "env"), CONFIG_PATH);
    assert_eq!(
        text(&environment["OTP2MQTT__HEALTH_FILE"], "env"),
        HEALTH_FILE
    );
    let config_mount = strings(&otp2mqtt["volumes"], "volumes")
        .into_iter()
        .find(|volume| volume.contains(CONFIG_PATH))
        .expect("the config is mounted at /config/otp2mqtt.yaml");
    assert_eq!(
        config_mount,
        format!("./otp2mqtt.yaml:{CONFIG_PATH}:ro"),
        "mounted read-only"
    );

    // The config's secret files are exactly the service's compose secrets.
    let config = yaml("docker/otp2mqtt.yaml");
    let mut wanted = vec![text(&config["mqtt"]["password_file"], "password_file").to_string()];
    for sensor in config["sensors"].as_vec().expect("sensors") {
        assert!(sensor["token"].is_badvalue(), "tokens belong in token_file");
        wanted.push(text(&sensor["token_file"], "token_file").to_string());
    }
    let mounted: Vec<String> = strings(&otp2mqtt["secrets"], "secrets")
        .iter()
        .map(|name| {
            assert!(!secrets[name.as_str()].is_badvalue(), "secret {name}");
            format!("/run/secrets/{name}")
        })
        .collect();
    assert_eq!(
        wanted.iter().collect::<BTreeSet<_>>(),
        mounted.iter().collect()
    );

    // Home Assistant only with --profile ha.
    assert_eq!(
        strings(&services["homeassistant"]["profiles"], "profiles"),
        ["ha"]
    );
    assert!(
        text(&services["homeassistant"]["image"], "image")
            .starts_with("ghcr.io/home-assistant/home-assistant:")
    );
    assert!(text(&services["mosquitto"]["image"], "image").starts_with("eclipse-mosquitto:2"));
}

#[test]
fn the_broker_port_is_the_binarys_default_everywhere() {
    let default_port = load_with_binary("sensors:\n  - token: JBSWY3DPEHPK3PXP\n", &[])
        .unwrap()
        .mqtt
        .port;
    assert_eq!(default_port, 1883);
    let port = i64::from(default_port);

    let mosquitto_conf = read("docker/mosquitto/mosquitto.conf");
    assert!(
        mosquitto_conf
            .lines()
            .any(|line| line.trim() == format!("listener {port}")),
        "mosquitto.conf listens on {port}"
    );
    let compose = yaml("docker/compose.yaml");
    let mosquitto = &compose["services"]["mosquitto"];
    for published in strings(&mosquitto["ports"], "ports") {
        assert!(published.ends_with(&format!(":{port}")), "{published}");
    }
    let broker_check = strings(&mosquitto["healthcheck"]["test"], "healthcheck").join(" ");
    assert!(
        broker_check.contains(&format!("-p {port}")),
        "{broker_check}"
    );
    assert!(
        broker_check.contains("/run/secrets/mqtt_password"),
        "logs in with the demo password"
    );

    for (what, config) in [
        ("docker/otp2mqtt.yaml", yaml("docker/otp2mqtt.yaml")),
        (
            "deploy/systemd/otp2mqtt.yaml",
            yaml("deploy/systemd/otp2mqtt.yaml"),
        ),
        ("the ConfigMap", kubernetes_config()),
    ] {
        assert_eq!(config["mqtt"]["port"].as_i64(), Some(port), "{what}");
    }
}

#[test]
fn the_compose_config_is_accepted_by_the_binary() {
    // As the container sees it, with /run/secrets/ pointing at docker/secrets/.
    let secrets_dir = repo().join("docker/secrets");
    let config = read("docker/otp2mqtt.yaml").replace(
        "/run/secrets/",
        &format!("{}/", secrets_dir.to_str().unwrap()),
    );
    let settings = load_with_binary(&config, &[])
        .unwrap_or_else(|error| panic!("docker/otp2mqtt.yaml: {error}"));
    assert_eq!(settings.mqtt.host, "mosquitto");
    assert_eq!(settings.mqtt.username.as_deref(), Some("otp2mqtt"));
    assert!(settings.mqtt.password.is_some());
    assert!(!settings.sensors.is_empty());
}

#[test]
fn the_mosquitto_demo_users_match_the_acl() {
    let passwd = read("docker/mosquitto/passwd");
    let users: BTreeSet<&str> = passwd
        .lines()
        .filter_map(|line| line.split_once(':').map(|(user, _)| user))
        .collect();
    let acl = read("deploy/mosquitto/acl");
    let acl_users: BTreeSet<&str> = acl
        .lines()
        .filter_map(|line| line.trim().strip_prefix("user "))
        .collect();
    // Every demo login has ACL rules; the ACL may also hold optional users
    // (a door keypad) that the demo does not create.
    assert!(users.is_subset(&acl_users), "{users:?} vs {acl_users:?}");
    assert!(users.contains("otp2mqtt") && users.contains("homeassistant"));
    let config = yaml("docker/otp2mqtt.yaml");
    assert!(users.contains(text(&config["mqtt"]["username"], "username")));
}

/// `Key=value` lines of a systemd unit, in order, comments skipped.
fn unit_directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with(['#', ';', '[']))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .collect()
}

#[test]
fn the_systemd_unit_is_hardened_and_its_credentials_match_the_config() {
    let unit = read("deploy/systemd/otp2mqtt.service");
    let directives = unit_directives(&unit);
    let values = |key: &str| -> Vec<String> {
        directives
            .iter()
            .filter(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
            .collect()
    };
    let one = |key: &str| -> String {
        let found = values(key);
        assert_eq!(found.len(), 1, "{key}= once");
        found[0].clone()
    };
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("CapabilityBoundingSet", ""),
        ("Restart", "on-failure"),
        ("TimeoutStopSec", "10"),
        ("Wants", "network-online.target"),
        ("After", "network-online.target mosquitto.service"),
        (
            "ExecStart",
            "/usr/local/bin/otp2mqtt run --config /etc/otp2mqtt/otp2mqtt.yaml",
        ),
    ] {
        assert_eq!(one(key), value, "{key}=");
    }
    assert!(values("SystemCallFilter").contains(&"@system-service".to_string()));
    assert_eq!(
        one("RestartPreventExitStatus"),
        otp2mqtt::app::EXIT_CONFIG.to_string(),
        "the binary's config-unusable exit status"
    );

    // Credentials: every secret file the config (or the environment) names is
    // in the credentials directory and loaded by a LoadCredential= line.
    let credentials: BTreeSet<String> = values("LoadCredential")
        .iter()
        .map(|line| {
            let (name, source) = line.split_once(':').expect("LoadCredential=NAME:PATH");
            assert_eq!(source, format!("/etc/otp2mqtt/{name}"));
            name.to_string()
        })
        .collect();
    let credentials_dir = "/run/credentials/otp2mqtt.service";
    let mut wanted = BTreeSet::new();
    let config = yaml("deploy/systemd/otp2mqtt.yaml");
    for sensor in config["sensors"].as_vec().expect("sensors") {
        let file = text(&sensor["token_file"], "token_file");
        let name = file
            .strip_prefix(&format!("{credentials_dir}/"))
            .unwrap_or_else(|| panic!("{file} is not in {credentials_dir}"));
        wanted.insert(name.to_string());
    }
    let environment: HashMap<String, String> = values("Environment")
        .iter()
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    let password_file = &environment["OTP2MQTT__MQTT__PASSWORD_FILE"];
    wanted.insert(
        password_file
            .strip_prefix("%d/")
            .expect("the password file is in %d, the credentials directory")
            .to_string(),
    );
    assert_eq!(wanted, credentials);

    // The config, the credentials and the environment together satisfy the binary.
    let dir = tempfile::tempdir().unwrap();
    let token = read("docker/secrets/front_door_token");
    for name in &credentials {
        std::fs::write(dir.path().join(name), &token).unwrap();
    }
    let config =
        read("deploy/systemd/otp2mqtt.yaml").replace(credentials_dir, dir.path().to_str().unwrap());
    let override_environment: Vec<(&str, String)> = environment
        .iter()
        .filter(|(key, _)| key.starts_with("OTP2MQTT__"))
        .map(|(key, value)| {
            (
                key.as_str(),
                value.replace("%d", dir.path().to_str().unwrap()),
            )
        })
        .collect();
    let settings = load_with_binary(&config, &override_environment)
        .unwrap_or_else(|error| panic!("deploy/systemd/otp2mqtt.yaml: {error}"));
    assert!(settings.mqtt.password.is_some());
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    // A tool of the host, not a dependency of the tests: without it, say so.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("note: systemd-analyze not found; skipping `systemd-analyze verify`");
        return;
    }
    // verify insists that ExecStart's binary exists: point it at the one cargo built.
    let dir = tempfile::tempdir().unwrap();
    let unit_path: PathBuf = dir.path().join("otp2mqtt.service");
    std::fs::write(
        &unit_path,
        read("deploy/systemd/otp2mqtt.service").replace(BINARY, env!("CARGO_BIN_EXE_otp2mqtt")),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // verify exits 0 even for ignored, misspelled directives: any line about
    // our unit is a failure.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("otp2mqtt.service"))
        .collect();
    assert!(
        output.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        output.status
    );
}

#[test]
fn kubernetes_manifests_agree_with_the_image_and_the_config() {
    let kustomization = yaml("deploy/kubernetes/kustomization.yaml");
    let listed: BTreeSet<String> = strings(&kustomization["resources"], "resources")
        .into_iter()
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml lists every manifest");

    let statefulset = yaml("deploy/kubernetes/statefulset.yaml");
    let pod = &statefulset["spec"]["template"]["spec"];
    let container = statefulset_container();

    // Non-root, read-only, nothing extra.
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(NONROOT));
    let security = &container["securityContext"];
    assert_eq!(security["runAsUser"].as_i64(), Some(NONROOT));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strings(&security["capabilities"]["drop"], "drop"), ["ALL"]);
    assert_eq!(
        text(&security["seccompProfile"]["type"], "seccomp"),
        "RuntimeDefault"
    );
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                !container["resources"][kind][resource].is_badvalue(),
                "resources.{kind}.{resource}"
            );
        }
    }
    assert!(
        text(&container["image"], "image").ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "the image tag follows Cargo.toml"
    );

    // Probes: the image's healthcheck, exec form.
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            strings(&container[probe]["exec"]["command"], probe),
            healthcheck_command(),
            "{probe}"
        );
    }

    // Environment: the pod name as this replica, the image's paths.
    let environment = container_env(&container);
    assert_eq!(
        text(
            &environment["OTP2MQTT__REPLICAS__THIS"]["valueFrom"]["fieldRef"]["fieldPath"],
            "fieldPath"
        ),
        "metadata.name"
    );
    let image_env = Dockerfile::load("docker/Dockerfile").pairs("ENV");
    for key in ["OTP2MQTT_CONFIG", "OTP2MQTT__HEALTH_FILE"] {
        if let Some(variable) = environment.get(key) {
            assert_eq!(text(&variable["value"], key), image_env[key], "{key}");
        }
    }

    // Mounts: config and secrets read-only, /tmp an emptyDir.
    let volumes: HashMap<String, Yaml> = pod["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .map(|volume| (text(&volume["name"], "volume").to_string(), volume.clone()))
        .collect();
    let mounts: HashMap<String, Yaml> = container["volumeMounts"]
        .as_vec()
        .expect("volumeMounts")
        .iter()
        .map(|mount| {
            (
                text(&mount["mountPath"], "mountPath").to_string(),
                mount.clone(),
            )
        })
        .collect();
    let volume_at = |path: &str| -> &Yaml {
        let mount = mounts
            .get(path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        &volumes[text(&mount["name"], "mount name")]
    };
    let config_dir = Path::new(CONFIG_PATH).parent().unwrap().to_str().unwrap();
    assert_eq!(mounts[config_dir]["readOnly"].as_bool(), Some(true));
    assert_eq!(
        text(&volume_at(config_dir)["configMap"]["name"], "configMap"),
        text(
            &yaml("deploy/kubernetes/configmap.yaml")["metadata"]["name"],
            "name"
        )
    );
    let health_dir = Path::new(HEALTH_FILE).parent().unwrap().to_str().unwrap();
    assert!(!volume_at(health_dir)["emptyDir"].is_badvalue());
    assert_eq!(mounts["/secrets"]["readOnly"].as_bool(), Some(true));
    let secret = yaml("deploy/kubernetes/secret.yaml");
    assert_eq!(
        text(&volume_at("/secrets")["secret"]["secretName"], "secretName"),
        text(&secret["metadata"]["name"], "name")
    );

    // The config's secret files are keys of the Secret.
    let config = kubernetes_config();
    let secret_keys = keys(&secret["stringData"], "stringData");
    let mut files = vec![text(&config["mqtt"]["password_file"], "password_file")];
    for sensor in config["sensors"].as_vec().expect("sensors") {
        assert!(sensor["token"].is_badvalue(), "tokens belong in the Secret");
        files.push(text(&sensor["token_file"], "token_file"));
    }
    for file in files {
        let key = file
            .strip_prefix("/secrets/")
            .unwrap_or_else(|| panic!("{file} is not under /secrets"));
        assert!(secret_keys.contains(key), "the Secret has no key {key}");
    }

    // One member per replica, named as the StatefulSet names its pods.
    let name = text(&statefulset["metadata"]["name"], "name");
    let replicas = statefulset["spec"]["replicas"].as_i64().expect("replicas");
    assert_eq!(replicas, 2);
    let expected: Vec<String> = (0..replicas)
        .map(|index| format!("{name}-{index}"))
        .collect();
    assert_eq!(
        strings(&config["replicas"]["members"], "replicas.members"),
        expected
    );
    assert!(
        config["replicas"]["this"].is_badvalue(),
        "`this` comes from the pod name, not the shared ConfigMap"
    );
}

#[test]
fn the_addon_follows_the_supervisor_format_and_otp2mqtts_config_keys() {
    let config = yaml("deploy/home-assistant-addon/config.yaml");
    for key in ["name", "version", "slug", "description"] {
        assert!(config[key].as_str().is_some(), "config.yaml: {key}");
    }
    assert_eq!(
        text(&config["version"], "version"),
        env!("CARGO_PKG_VERSION")
    );
    let arch = strings(&config["arch"], "arch");
    for one in &arch {
        assert!(
            ["aarch64", "amd64", "armhf", "armv7", "i386"].contains(&one.as_str()),
            "arch {one}"
        );
    }
    assert_eq!(config["init"].as_bool(), Some(false));
    assert!(strings(&config["services"], "services").contains(&"mqtt:need".to_string()));

    // Options and schema: otp2mqtt's keys, plus the add-on's own log_level.
    let addon_only: BTreeSet<String> = ["log_level".to_string()].into();
    let schema = &config["schema"];
    let schema_keys = keys(schema, "schema");
    assert!(keys(&config["options"], "options").is_subset(&schema_keys));
    let config_keys: BTreeSet<String> = schema_keys.difference(&addon_only).cloned().collect();
    assert_eq!(
        config_keys,
        ["instance_id", "sensors"].map(String::from).into()
    );
    let sensor_schema = &schema["sensors"].as_vec().expect("sensors schema")[0];
    assert_eq!(
        keys(sensor_schema, "sensor schema"),
        ["name", "token", "id", "digits", "period", "algorithm"]
            .map(String::from)
            .into()
    );
    assert_eq!(text(&sensor_schema["token"], "token"), "password");

    // The sample /data/options.json: the defaults plus one sensor.
    let options: serde_json::Value =
        serde_json::from_str(&read("deploy/home-assistant-addon/test-options.json")).unwrap();
    let options = options.as_object().unwrap();
    for (key, default) in config["options"].as_hash().unwrap() {
        let key = text(key, "option");
        if let Some(default) = default.as_str() {
            assert_eq!(options[key], default, "default of {key}");
        }
    }
    for key in options.keys() {
        assert!(schema_keys.contains(key), "test-options.json: {key}");
    }
    let sensors = options["sensors"].as_array().unwrap();
    assert_eq!(sensors.len(), 1);
    assert!(sensors[0]["token"].is_string());

    // Build: one base per arch; translations name schema keys only.
    let build = yaml("deploy/home-assistant-addon/build.yaml");
    assert_eq!(
        keys(&build["build_from"], "build_from"),
        arch.iter().cloned().collect()
    );
    let translations = yaml("deploy/home-assistant-addon/translations/en.yaml");
    assert!(keys(&translations["configuration"], "configuration").is_subset(&schema_keys));

    // run.sh: strips exactly the add-on's own keys and runs the binary.
    let run = read("deploy/home-assistant-addon/run.sh");
    assert!(run.starts_with("#!/usr/bin/with-contenv bashio"));
    for key in &addon_only {
        assert!(run.contains(&format!("del(.{key})")), "run.sh drops {key}");
    }
    assert!(run.contains(&format!("exec {BINARY} run --config")));
    for field in ["host", "port", "username", "password", "ssl"] {
        assert!(
            run.contains(&format!("bashio::services mqtt '{field}'")),
            "run.sh reads the broker's {field}"
        );
    }
    assert_eq!(
        text(&config["slug"], "slug"),
        "otp2mqtt",
        "the image name in config.yaml uses the slug"
    );
    assert!(text(&config["image"], "image").contains("{arch}"));
}

/// Writes each `stringData` entry of the Kubernetes Secret into `dir`, as the
/// Secret volume would.
fn materialise_secret(dir: &Path) {
    let secret = yaml("deploy/kubernetes/secret.yaml");
    for (key, value) in secret["stringData"].as_hash().expect("stringData") {
        let name = key.as_str().unwrap();
        std::fs::write(dir.join(name), text(value, name)).unwrap();
    }
}

#[test]
fn the_kubernetes_config_is_accepted_by_the_binary_in_each_pod() {
    let secrets = tempfile::tempdir().unwrap();
    materialise_secret(secrets.path());
    let config_text = {
        let configmap = yaml("deploy/kubernetes/configmap.yaml");
        text(&configmap["data"]["otp2mqtt.yaml"], "configmap data")
            .replace("/secrets/", &format!("{}/", secrets.path().display()))
    };
    let members = strings(
        &kubernetes_config()["replicas"]["members"],
        "replicas.members",
    );
    let mut discovery = Vec::new();
    for pod in &members {
        let settings = load_with_binary(
            &config_text,
            &[
                ("OTP2MQTT__REPLICAS__THIS", pod.clone()),
                (
                    "OTP2MQTT__HEALTH_FILE",
                    "/tmp/otp2mqtt-health.json".to_string(),
                ),
            ],
        )
        .unwrap_or_else(|error| panic!("pod {pod}: {error}"));
        assert_eq!(settings.replicas.as_ref().unwrap().this, *pod);
        assert!(
            settings.mqtt.client_id.ends_with(pod.as_str()),
            "distinct client ids"
        );
        assert!(settings.health_file.is_some());
        let topics = otp2mqtt::messages::Topics::new(&settings);
        discovery.push(otp2mqtt::messages::discovery_config(&topics, &settings.sensors[0]).payload);
    }
    // Every pod announces the same discovery config: publishing it twice is harmless.
    assert!(discovery.windows(2).all(|pair| pair[0] == pair[1]));
}

#[test]
fn the_compose_config_is_accepted_with_the_images_environment() {
    let config = read("docker/otp2mqtt.yaml").replace(
        "/run/secrets/",
        &format!("{}/", repo().join("docker/secrets").display()),
    );
    let settings = load_with_binary(
        &config,
        &[(
            "OTP2MQTT__HEALTH_FILE",
            "/tmp/otp2mqtt-health.json".to_string(),
        )],
    )
    .unwrap_or_else(|error| panic!("docker/otp2mqtt.yaml: {error}"));
    assert_eq!(
        settings.health_file.as_deref(),
        Some(Path::new("/tmp/otp2mqtt-health.json"))
    );
}

/// The add-on's run.sh turns /data/options.json into the config with one jq
/// filter; run that very filter on sample options and have `otp2mqtt check`
/// judge the result, with the broker settings run.sh exports.
#[test]
fn addon_options_become_a_config_that_otp2mqtt_check_accepts() {
    let script = read("deploy/home-assistant-addon/run.sh");
    let filter = script
        .split_once("jq '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(filter, _)| filter)
        .expect("run.sh runs jq with a quoted filter");
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new("jq")
        .arg(filter)
        .arg(repo().join("deploy/home-assistant-addon/test-options.json"))
        .output()
        .expect("jq is needed for this test (Debian: sudo apt-get install -y jq)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config = dir.path().join("otp2mqtt.json");
    std::fs::write(&config, &output.stdout).unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "from-the-supervisor\n").unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_otp2mqtt"))
        .args([
            "check",
            "--allow-unsynced-clock",
            "--config",
            config.to_str().unwrap(),
        ])
        .env("OTP2MQTT__MQTT__HOST", "core-mosquitto")
        .env("OTP2MQTT__MQTT__PORT", "1883")
        .env("OTP2MQTT__MQTT__USERNAME", "addons")
        .env("OTP2MQTT__MQTT__PASSWORD_FILE", &password)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout.contains("sensor.otp_sensor"), "{stdout}");
    assert!(!stdout.contains("from-the-supervisor"));
}

/// `cargo build` refuses a manifest whose declared targets are missing, so every
/// target file Cargo.toml names must reach the image builders.
#[test]
fn the_build_context_holds_every_cargo_target() {
    let manifest = read("Cargo.toml");
    let mut needed = vec![
        "Cargo.toml".to_string(),
        "Cargo.lock".to_string(),
        "src/main.rs".to_string(),
    ];
    let mut in_bench = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bench = line == "[[bench]]";
        } else if in_bench {
            if let Some(name) = line.strip_prefix("name = ") {
                needed.push(format!("benches/{}.rs", name.trim_matches('"')));
            }
        }
    }
    assert!(needed.len() > 3, "Cargo.toml declares benches: {needed:?}");
    for dockerfile in dockerfile_paths() {
        let text = read(dockerfile);
        for file in &needed {
            assert!(repo().join(file).is_file(), "{file}");
            assert!(
                in_build_context(file),
                "{file} is not in the build context (.dockerignore)"
            );
            let top = file.split('/').next().unwrap();
            assert!(
                text.lines().any(|line| line.starts_with("COPY ")
                    && !line.contains("--from")
                    && line
                        .split_whitespace()
                        .any(|word| word == top || word == file)),
                "{dockerfile} does not COPY {top}"
            );
        }
    }
}
