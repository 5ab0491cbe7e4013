//! Test fixtures with real parts: a Mosquitto broker per test on its own loopback
//! port, the real `otp2mqtt` binary as a child process, a Home Assistant-like
//! MQTT observer, and an independent TOTP implementation (RustCrypto's HMAC, not
//! totp-rs) to check codes against.

#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Finds the `mosquitto` binary, or fails the test loudly: these tests never
/// skip silently.
pub fn mosquitto_binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("mosquitto"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push(PathBuf::from("/usr/sbin/mosquitto"));
    candidates.push(PathBuf::from("/usr/local/sbin/mosquitto"));
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "mosquitto is not installed, and the integration tests need a real broker.\n\
             Install it with:  sudo apt-get install -y mosquitto   (Debian/Ubuntu)\n\
             or: brew install mosquitto (macOS), dnf install mosquitto (Fedora)."
            )
        })
}

/// A free loopback port, found by binding port 0.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Mosquitto process owned by one test; killed by PID on drop.
pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra lines appended to the generated config (TLS, passwords…).
    extra_config: String,
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_with("")
    }

    pub fn start_with(extra_config: &str) -> Broker {
        let mut broker = Broker::unstarted_with(extra_config);
        broker.restart();
        broker
    }

    /// A broker with a port reserved but not yet running (for "bridge first" tests).
    pub fn unstarted() -> Broker {
        Self::unstarted_with("")
    }

    pub fn unstarted_with(extra_config: &str) -> Broker {
        mosquitto_binary();
        Broker {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra_config: extra_config.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts (or starts again) on the same port, without persistence: a restart
    /// loses every retained message and subscription, the worst case.
    pub fn restart(&mut self) {
        self.stop();
        let config = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                // Per-listener settings: the first listener stays anonymous for
                // observers; tests add password or TLS listeners for the bridge.
                // Mosquitto queues at most 1000 messages per client by default and
                // drops the rest, which would hide retained configs from observers.
                "per_listener_settings true\npersistence false\nmax_queued_messages 0\nlog_dest stderr\nlog_type all\nlistener {} 127.0.0.1\nallow_anonymous true\n{}\n",
                self.port, self.extra_config
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mosquitto exited at start ({status}):\n{}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // It binds before reading TLS and password files and may still exit.
                std::thread::sleep(Duration::from_millis(20));
                if self.child.as_mut().unwrap().try_wait().unwrap().is_none() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes a config file for the bridge in `dir`.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The real `otp2mqtt` binary, run as a user would; stderr goes to a file.
pub struct BridgeProcess {
    child: Child,
    log: PathBuf,
}

impl BridgeProcess {
    pub fn run(config: &Path) -> BridgeProcess {
        Self::spawn(&["run", "--config", config.to_str().unwrap()], &[])
    }

    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> BridgeProcess {
        let log = tempfile::Builder::new()
            .prefix("otp2mqtt-log")
            .tempfile()
            .unwrap()
            .into_temp_path()
            .keep()
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_otp2mqtt"));
        command
            .args(args)
            .env_remove("OTP2MQTT_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (key, value) in env {
            command.env(key, value);
        }
        BridgeProcess {
            child: command.spawn().expect("cannot start otp2mqtt"),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Waits for the process to end, up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One message as an observer received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub at: SystemTime,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// An independent MQTT client recording everything on its subscriptions, the way
/// Home Assistant listens. Runs its own thread and runtime, so tests stay sync.
pub struct Observer {
    messages: Arc<Mutex<Vec<Received>>>,
    client: AsyncClient,
    runtime: tokio::runtime::Runtime,
}

impl Observer {
    /// Connects and subscribes to `filters`; returns once the broker acknowledged
    /// the subscriptions (so retained messages are on their way).
    pub fn connect(port: u16, filters: &[&str]) -> Observer {
        Self::connect_as(port, filters, None)
    }

    /// Like [`Observer::connect`], logging in with `(user, password)`.
    pub fn connect_as(port: u16, filters: &[&str], login: Option<(&str, &str)>) -> Observer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let mut options = MqttOptions::new(
            format!("observer-{}", rand::random::<u32>()),
            "127.0.0.1",
            port,
        );
        options.set_max_packet_size(1 << 20, 1 << 20);
        options.set_keep_alive(Duration::from_secs(5));
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        let (client, mut event_loop) = AsyncClient::new(options, 1000);
        let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
        let wanted = filters.len();
        let sink = messages.clone();
        runtime.spawn(async move {
            let mut acks = 0;
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        sink.lock().unwrap().push(Received {
                            topic: publish.topic,
                            payload: publish.payload.to_vec(),
                            retain: publish.retain,
                            at: SystemTime::now(),
                        });
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acks += 1;
                        if acks == wanted {
                            let _ = subscribed_tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        for filter in filters {
            client.try_subscribe(*filter, QoS::AtLeastOnce).unwrap();
        }
        subscribed_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("observer could not subscribe");
        Observer {
            messages,
            client,
            runtime,
        }
    }

    pub fn subscribe(&self, filter: &str) {
        self.client.try_subscribe(filter, QoS::AtLeastOnce).unwrap();
    }

    pub fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .unwrap();
    }

    pub fn messages(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.messages.lock().unwrap().clear();
    }

    pub fn on(&self, topic: &str) -> Vec<Received> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// Waits until `condition` holds over the messages so far; panics with them
    /// (and `context`) after `timeout`.
    pub fn wait_until(
        &self,
        timeout: Duration,
        context: &dyn Fn() -> String,
        condition: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if condition(&messages) {
                return messages;
            }
            if Instant::now() > deadline {
                let dump: Vec<String> = messages
                    .iter()
                    .map(|m| format!("{} {:?} {}", m.topic, m.retain, m.text()))
                    .collect();
                panic!(
                    "condition not met within {timeout:?}\nmessages:\n{}\ncontext:\n{}",
                    dump.join("\n"),
                    context()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Retained messages under `filter` right now, as a fresh client sees them.
pub fn retained(port: u16, filter: &str) -> Vec<Received> {
    let observer = Observer::connect(port, &[filter]);
    // Retained messages follow the SUBACK; a marker published after them arrives
    // after all of them, which proves the list complete without a fixed sleep.
    let marker = format!("otp2mqtt-test/marker/{}", rand::random::<u64>());
    observer.subscribe(&marker);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        observer.publish(&marker, b"x", false);
        std::thread::sleep(Duration::from_millis(50));
        if !observer.on(&marker).is_empty() || Instant::now() > deadline {
            break;
        }
    }
    observer
        .messages()
        .into_iter()
        .filter(|m| m.retain && m.topic != marker && !m.payload.is_empty())
        .collect()
}

/// RFC 6238 TOTP, written from the RFC with RustCrypto HMAC: independent of totp-rs.
pub fn independent_totp(
    secret: &[u8],
    algorithm: &str,
    digits: u32,
    period: u64,
    unix: u64,
) -> String {
    use hmac::{Hmac, Mac};
    let counter = (unix / period).to_be_bytes();
    let hash: Vec<u8> = match algorithm {
        "SHA1" => {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).unwrap();
            mac.update(&counter);
            mac.finalize().into_bytes().to_vec()
        }
        "SHA256" => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
            mac.update(&counter);
            mac.finalize().into_bytes().to_vec()
        }
        "SHA512" => {
            let mut mac = Hmac::<sha2::Sha512>::new_from_slice(secret).unwrap();
            mac.update(&counter);
            mac.finalize().into_bytes().to_vec()
        }
        other => panic!("unknown algorithm {other}"),
    };
    let offset = (hash[hash.len() - 1] & 0x0f) as usize;
    let binary = u32::from_be_bytes([
        hash[offset],
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]) & 0x7fff_ffff;
    format!(
        "{:0width$}",
        binary % 10u32.pow(digits),
        width = digits as usize
    )
}

/// Base32 (RFC 4648) decoding for test secrets, also independent of the code under test.
pub fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=' && *c != b' ') {
        let value = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .unwrap() as u64;
        bits = (bits << 5) | value;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// True when `code` is right for the window `at` falls in, or for the window just
/// before (a code sent a hair before a boundary can arrive a hair after it).
pub fn code_fits(
    code: &str,
    secret: &[u8],
    algorithm: &str,
    digits: u32,
    period: u64,
    at: SystemTime,
) -> bool {
    let now = unix_seconds(at);
    let slack = unix_seconds(at - Duration::from_millis(200));
    code == independent_totp(secret, algorithm, digits, period, now)
        || code == independent_totp(secret, algorithm, digits, period, slack)
}

/// Reads a whole file into a string (helper for logs).
pub fn read_to_string(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

/// Runs the real `otp2mqtt` binary to completion with `args`, as a user would
/// from a shell (no inherited log level or config path).
pub fn otp2mqtt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_otp2mqtt"))
        .args(args)
        .env_remove("OTP2MQTT_LOG")
        .env_remove("OTP2MQTT_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("cannot run otp2mqtt")
}

/// What the kernel says about NTP synchronisation, read here independently of
/// the code under test: `Some(true)` when `STA_UNSYNC` is set, `None` off Linux
/// or when the call fails.
pub fn kernel_clock_unsynchronised() -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        let mut timex: libc::timex = unsafe { std::mem::zeroed() };
        if unsafe { libc::adjtimex(&mut timex) } == -1 {
            return None;
        }
        Some(timex.status & libc::STA_UNSYNC != 0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}
