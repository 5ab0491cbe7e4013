//! Load bench: the real `otp2mqtt run` with N generated sensors against its own
//! Mosquitto, watched by an independent MQTT client, measuring what a Home
//! Assistant user would feel: how late the codes arrive after a step boundary,
//! and what the bridge costs in memory and CPU.
//!
//! ```sh
//! cargo bench --bench load -- [--sensors 1,1000,10000,100000] [--boundaries K]
//!                             [--period 30] [--json FILE] [--perf DIR]
//! ```
//!
//! `cargo bench` builds the release (`bench` profile) binary before running this;
//! the bench itself builds nothing. It talks to 127.0.0.1 only, every wait has a
//! deadline, and every child process is killed when its owner is dropped.
//! Under `cargo test --benches` (no `--bench` argument) it does nothing.
//! Results and how to read them: benches/RESULTS.md.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

/// The bridge binary Cargo built for this bench (release settings).
const BRIDGE_BINARY: &str = env!("CARGO_BIN_EXE_otp2mqtt");
/// Longest wait for a broker to accept connections.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the boundary codes are still counted for that boundary.
const MAX_DELIVERY_WINDOW: Duration = Duration::from_secs(20);
/// The bridge re-sends all codes 1 s and 3 s after an announce
/// (`bridge::CODE_REFRESH_DELAYS`); boundaries are measured only after that.
const AFTER_ANNOUNCE: Duration = Duration::from_millis(3500);
/// State traffic must have been quiet this long before a boundary is measured.
const QUIET: Duration = Duration::from_millis(500);

struct Options {
    sensors: Vec<usize>,
    boundaries: usize,
    period: u64,
    json: Option<PathBuf>,
    perf: Option<PathBuf>,
}

const USAGE: &str = "usage: cargo bench --bench load -- [--sensors 1,1000,10000,100000] \
[--boundaries K] [--period SECONDS] [--json FILE] [--perf DIR]";

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        sensors: vec![1, 1_000, 10_000, 100_000],
        boundaries: 1,
        period: 30,
        json: None,
        perf: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--bench" => {}
            "--sensors" => {
                options.sensors = value()?
                    .split(',')
                    .map(|n| n.trim().replace('_', "").parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|error| format!("--sensors: {error}"))?;
                if options.sensors.contains(&0) {
                    return Err("--sensors: counts must be at least 1".into());
                }
            }
            "--boundaries" => {
                options.boundaries = value()?
                    .parse()
                    .map_err(|error| format!("--boundaries: {error}"))?;
                if !(1..=20).contains(&options.boundaries) {
                    return Err("--boundaries: 1 to 20".into());
                }
            }
            "--period" => {
                options.period = value()?
                    .parse()
                    .map_err(|error| format!("--period: {error}"))?;
                if !(3..=60).contains(&options.period) {
                    return Err("--period: 3 to 60 seconds".into());
                }
            }
            "--json" => options.json = Some(PathBuf::from(value()?)),
            "--perf" => options.perf = Some(PathBuf::from(value()?)),
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not. Minutes of
    // load have no place in a test run.
    if !args.iter().any(|arg| arg == "--bench") {
        println!("load bench: skipped (run it with `cargo bench --bench load`)");
        return ExitCode::SUCCESS;
    }
    let options = match parse_options(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if !Path::new(BRIDGE_BINARY).is_file() {
        eprintln!(
            "the otp2mqtt binary is missing at {BRIDGE_BINARY}: run this through `cargo bench --bench load`, which builds it"
        );
        return ExitCode::FAILURE;
    }
    let mosquitto = match mosquitto_binary() {
        Some(path) => path,
        None => {
            eprintln!("mosquitto is not installed: sudo apt-get install -y mosquitto");
            return ExitCode::FAILURE;
        }
    };
    let machine = machine();
    println!("machine: {}", machine_line(&machine));
    println!("bridge:  {BRIDGE_BINARY}");
    let mut results = Vec::new();
    for &sensors in &options.sensors {
        println!(
            "\n== {sensors} sensors, period {} s, {} boundar{} ==",
            options.period,
            options.boundaries,
            if options.boundaries == 1 { "y" } else { "ies" }
        );
        match measure(&mosquitto, sensors, &options) {
            Ok(result) => {
                println!("{}", serde_json::to_string(&result).unwrap_or_default());
                results.push(result);
            }
            Err(error) => {
                eprintln!("{sensors} sensors: FAILED: {error}");
                results.push(json!({ "sensors": sensors, "error": error }));
            }
        }
    }
    let command = format!(
        "cargo bench --bench load -- --sensors {} --boundaries {} --period {}",
        options
            .sensors
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(","),
        options.boundaries,
        options.period
    );
    println!("\n{}", table(&results));
    println!("machine: {}\ncommand: {command}", machine_line(&machine));
    if let Some(path) = &options.json {
        let report = json!({
            "machine": machine,
            "command": command,
            "period": options.period,
            "boundaries": options.boundaries,
            "results": results,
        });
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(error) = std::fs::write(path, text) {
            eprintln!("cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("json:    {}", path.display());
    }
    if results.iter().any(|result| result.get("error").is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One run: broker, observer, bridge; start-up, then `boundaries` step boundaries.
fn measure(mosquitto: &Path, sensors: usize, options: &Options) -> Result<Value, String> {
    let dir = tempfile::tempdir().map_err(|error| format!("temp dir: {error}"))?;
    EXPECTED_DISCOVERY.store(sensors, Ordering::Relaxed);
    let broker = Broker::start(mosquitto, dir.path())?;
    let observer = Observer::connect(broker.port)?;
    let config = dir.path().join("otp2mqtt.yaml");
    std::fs::write(&config, bridge_config(broker.port, sensors, options.period))
        .map_err(|error| format!("writing the config: {error}"))?;

    let started_wall = wall_now();
    let started = Instant::now();
    let mut bridge = Bridge::start(&config, dir.path())?;
    let mut perf = options
        .perf
        .as_ref()
        .map(|dir| Perf::start(bridge.pid, &dir.join(format!("startup-{sensors}.data"))))
        .transpose()?;

    // Start-up: every discovery config delivered.
    let startup_timeout = Duration::from_secs(60) + Duration::from_millis(sensors as u64);
    let deadline = started + startup_timeout;
    let discovery_done = loop {
        if let Some(at) = observer.seen().discovery_done_at {
            break at;
        }
        bridge.check_alive()?;
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {sensors} discovery configs within {startup_timeout:?}\n{}",
                observer.seen().discovery_topics.len(),
                bridge.log()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let connected = bridge.connected_at()?;
    // Wait out the code re-sends after the announce, then for quiet.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = wall_now();
        let last = observer.seen().last_state_at.unwrap_or(Duration::ZERO);
        if now >= connected + AFTER_ANNOUNCE && now.saturating_sub(last) >= QUIET {
            break;
        }
        if Instant::now() > deadline {
            return Err("state traffic after the announce never went quiet".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(perf) = perf.take() {
        perf.stop();
    }
    let startup_rss_kb = proc_status_kb(bridge.pid, "VmHWM:")?;
    let startup_cpu = cpu_split(bridge.pid)?;

    let period = Duration::from_secs(options.period);
    let mut boundaries = Vec::new();
    for index in 0..options.boundaries {
        // The next boundary at least 0.4 s away, so the measurement starts
        // before it.
        let boundary = next_boundary(wall_now() + Duration::from_millis(400), period);
        sleep_until_wall(boundary.saturating_sub(Duration::from_millis(300)));
        let first_arrival = {
            let mut seen = observer.seen();
            seen.open_window(sensors);
            seen.states.len()
        };
        let cpu_before = cpu_split(bridge.pid)?;
        let broker_cpu_before = cpu_split(broker.pid())?;
        let own_cpu_before = cpu_ticks(std::process::id())?;
        let perf = match (&options.perf, index) {
            (Some(dir), 0) => Some(Perf::start(
                bridge.pid,
                &dir.join(format!("step-{sensors}.data")),
            )?),
            _ => None,
        };
        // Delivered: every sensor's code arrived, or the window ran out.
        let window = MAX_DELIVERY_WINDOW.min(period.saturating_sub(Duration::from_secs(2)));
        loop {
            let complete = observer.seen().distinct_in_window >= sensors;
            if complete || wall_now() > boundary + window {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Let the bridge finish what it does after the last code (attributes are
        // sent first, so nothing of this step should be left).
        std::thread::sleep(Duration::from_millis(200));
        let cpu_after = cpu_split(bridge.pid)?;
        let broker_cpu_after = cpu_split(broker.pid())?;
        let own_cpu_after = cpu_ticks(std::process::id())?;
        let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        if let Some(perf) = perf {
            perf.stop();
        }
        let arrivals: Vec<(Duration, u32)> = observer.seen().states[first_arrival..].to_vec();
        // Between boundaries: from here to shortly before the next one.
        let idle_from = wall_now();
        let idle_until = next_boundary(boundary + Duration::from_millis(1), period)
            .saturating_sub(Duration::from_millis(500));
        let idle_cpu_before = cpu_ticks(bridge.pid)?;
        let switches_before = context_switches(bridge.pid);
        sleep_until_wall(idle_until);
        let idle_cpu_after = cpu_ticks(bridge.pid)?;
        let switches_after = context_switches(bridge.pid);
        let idle_secs = idle_until.saturating_sub(idle_from).as_secs_f64();
        bridge.check_alive()?;

        let mut delays_ms: Vec<f64> = arrivals
            .iter()
            .map(|(at, _)| (at.as_secs_f64() - boundary.as_secs_f64()) * 1000.0)
            .collect();
        delays_ms.sort_by(f64::total_cmp);
        let distinct: HashSet<u32> = arrivals.iter().map(|(_, sensor)| *sensor).collect();
        boundaries.push(json!({
            "boundary_unix": boundary.as_secs(),
            "codes": distinct.len(),
            "messages": arrivals.len(),
            "first_ms": delays_ms.first().copied(),
            "median_ms": percentile(&delays_ms, 0.5),
            "p99_ms": percentile(&delays_ms, 0.99),
            "last_ms": delays_ms.last().copied(),
            "cpu_ms": ticks_to_ms(cpu_after.0 + cpu_after.1 - cpu_before.0 - cpu_before.1),
            "cpu_user_ms": ticks_to_ms(cpu_after.0 - cpu_before.0),
            "cpu_system_ms": ticks_to_ms(cpu_after.1 - cpu_before.1),
            "broker_cpu_ms": ticks_to_ms(
                broker_cpu_after.0 + broker_cpu_after.1 - broker_cpu_before.0 - broker_cpu_before.1
            ),
            "broker_cpu_system_ms": ticks_to_ms(broker_cpu_after.1 - broker_cpu_before.1),
            "observer_cpu_ms": ticks_to_ms(own_cpu_after - own_cpu_before),
            "load_average": load_average.trim(),
            "idle_seconds": idle_secs,
            "idle_cpu_ms": ticks_to_ms(idle_cpu_after - idle_cpu_before),
            "idle_wakeups_per_s": if idle_secs > 0.0 {
                (switches_after.saturating_sub(switches_before)) as f64 / idle_secs
            } else {
                0.0
            },
        }));
    }
    let peak_rss_kb = proc_status_kb(bridge.pid, "VmHWM:")?;
    let rss_kb = proc_status_kb(bridge.pid, "VmRSS:")?;
    drop(perf);
    observer.stop();
    bridge.stop();
    Ok(json!({
        "sensors": sensors,
        "period": options.period,
        "discovery_from_start_s": discovery_done.saturating_sub(started_wall).as_secs_f64(),
        "discovery_from_connect_s": discovery_done.saturating_sub(connected).as_secs_f64(),
        "connect_from_start_s": connected.saturating_sub(started_wall).as_secs_f64(),
        "startup_peak_rss_mb": startup_rss_kb as f64 / 1024.0,
        "startup_cpu_user_ms": ticks_to_ms(startup_cpu.0),
        "startup_cpu_system_ms": ticks_to_ms(startup_cpu.1),
        "peak_rss_mb": peak_rss_kb as f64 / 1024.0,
        "end_rss_mb": rss_kb as f64 / 1024.0,
        "boundaries": boundaries,
    }))
}

/// N sensors, all SHA1 / 6 digits (the common case), with distinct secrets.
fn bridge_config(port: u16, sensors: usize, period: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut text =
        format!("mqtt:\n  host: 127.0.0.1\n  port: {port}\n  client_id: otp2mqtt-load\nsensors:\n");
    // A fixed xorshift stream: the same secrets every run, no randomness crate.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for index in 0..sensors {
        let token: String = (0..32)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ALPHABET[(state % 32) as usize] as char
            })
            .collect();
        let _ = write!(
            text,
            "  - name: Load {index}\n    id: s{index}\n    token: {token}\n    period: {period}\n"
        );
    }
    text
}

fn percentile(sorted: &[f64], quantile: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() - 1) as f64 * quantile).round() as usize;
    sorted.get(rank).copied()
}

fn wall_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

fn next_boundary(after: Duration, period: Duration) -> Duration {
    let period = period.as_secs().max(1);
    Duration::from_secs((after.as_secs() / period + 1) * period)
}

/// Sleeps until a wall-clock time; bounded by how far away it is.
fn sleep_until_wall(target: Duration) {
    let remaining = target.saturating_sub(wall_now());
    if remaining > Duration::ZERO {
        std::thread::sleep(remaining.min(Duration::from_secs(120)));
    }
}

fn ticks_to_ms(ticks: u64) -> f64 {
    // SAFETY: sysconf only reads a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 * 1000.0 / per_second
}

/// utime + stime of a process, all threads (dead ones included), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    cpu_split(pid).map(|(user, system)| user + system)
}

/// (utime, stime) of a process, all threads (dead ones included), in clock ticks.
fn cpu_split(pid: u32) -> Result<(u64, u64), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| format!("/proc/{pid}/stat: {error}"))?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `rest` starts at field 3.
    let field = |n: usize| -> Result<u64, String> {
        fields
            .get(n - 3)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat has no field {n}"))
    };
    Ok((field(14)?, field(15)?))
}

/// Voluntary + involuntary context switches over all live threads: how often the
/// process woke up.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

fn proc_status_kb(pid: u32, key: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| format!("/proc/{pid}/status: {error}"))?;
    status
        .lines()
        .find(|line| line.starts_with(key))
        .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/status has no {key}"))
}

fn mosquitto_binary() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("mosquitto"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push(PathBuf::from("/usr/sbin/mosquitto"));
    candidates.into_iter().find(|path| path.is_file())
}

/// A Mosquitto of this run on a free loopback port, killed on drop.
struct Broker {
    port: u16,
    child: Child,
}

impl Broker {
    fn start(binary: &Path, dir: &Path) -> Result<Broker, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("no free loopback port: {error}"))?
            .port();
        let config = dir.join("mosquitto.conf");
        // The limits are lifted so the broker never drops a message to the
        // observer (by default it queues at most 1000 per client) and the
        // observer sees the bridge's latency, not the broker's shedding.
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
                 max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\n\
                 max_inflight_bytes 0\nmemory_limit 0\nset_tcp_nodelay true\n"
            ),
        )
        .map_err(|error| format!("writing the broker config: {error}"))?;
        let log = std::fs::File::create(dir.join("mosquitto.log"))
            .map_err(|error| format!("broker log: {error}"))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|error| format!("cannot start mosquitto: {error}"))?;
        let mut broker = Broker { port, child };
        let deadline = Instant::now() + BROKER_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!(
                    "mosquitto exited at start ({status}): {}",
                    std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
                ));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(broker);
            }
            if Instant::now() > deadline {
                return Err("mosquitto did not accept connections within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `otp2mqtt run`, logging at info to a file; killed on drop.
struct Bridge {
    pid: u32,
    child: Child,
    log: PathBuf,
}

impl Bridge {
    fn start(config: &Path, dir: &Path) -> Result<Bridge, String> {
        let log = dir.join("otp2mqtt.log");
        let stderr = std::fs::File::create(&log).map_err(|error| format!("bridge log: {error}"))?;
        let child = Command::new(BRIDGE_BINARY)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("OTP2MQTT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|error| format!("cannot start {BRIDGE_BINARY}: {error}"))?;
        Ok(Bridge {
            pid: child.id(),
            child,
            log,
        })
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("otp2mqtt exited ({status}):\n{}", self.log())),
            Err(error) => Err(format!("otp2mqtt: {error}")),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// When the bridge logged its first connection, from its log's timestamp.
    fn connected_at(&self) -> Result<Duration, String> {
        let file =
            std::fs::File::open(&self.log).map_err(|error| format!("bridge log: {error}"))?;
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("connected to MQTT broker"))
            .and_then(|line| {
                let stamp = line.split_whitespace().next()?.to_string();
                let time = humantime::parse_rfc3339_weak(&stamp).ok()?;
                time.duration_since(UNIX_EPOCH).ok()
            })
            .ok_or_else(|| format!("no connect line in the bridge log:\n{}", self.log()))
    }

    /// SIGTERM, then up to 3 s for the clean shutdown, then SIGKILL (on drop).
    fn stop(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `perf record` attached to the bridge, stopped with SIGINT.
struct Perf {
    child: Child,
}

impl Perf {
    fn start(pid: u32, output: &Path) -> Result<Perf, String> {
        if let Some(dir) = output.parent() {
            std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        }
        let child = Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-F", "999", "-g"])
            .arg("--call-graph=dwarf,16384")
            .arg("-p")
            .arg(pid.to_string())
            .arg("-o")
            .arg(output)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start perf: {error}"))?;
        // perf needs a moment to attach.
        std::thread::sleep(Duration::from_millis(100));
        Ok(Perf { child })
    }

    fn stop(mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the observer saw, with wall-clock arrival times.
#[derive(Default)]
struct Seen {
    /// Every state message: arrival time and sensor number.
    states: Vec<(Duration, u32)>,
    last_state_at: Option<Duration>,
    discovery_topics: HashSet<String>,
    discovery_done_at: Option<Duration>,
    /// Which sensors sent a code since [`Seen::open_window`], and how many did:
    /// kept up to date here so that checking for completeness costs nothing
    /// (scanning 100,000 arrivals every few ms would steal the CPU we measure).
    in_window: Vec<bool>,
    distinct_in_window: usize,
}

impl Seen {
    fn open_window(&mut self, sensors: usize) {
        self.in_window = vec![false; sensors];
        self.distinct_in_window = 0;
    }
}

/// An independent client, Home Assistant's stand-in, on its own thread.
struct Observer {
    seen: Arc<Mutex<Seen>>,
    client: AsyncClient,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    fn connect(port: u16) -> Result<Observer, String> {
        let mut options = MqttOptions::new("otp2mqtt-load-observer", "127.0.0.1", port);
        options
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true);
        let (client, mut event_loop) = AsyncClient::new(options, 16);
        event_loop.network_options.set_tcp_nodelay(true);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("observer runtime: {error}"))?;
        let thread = {
            let seen = seen.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                runtime.block_on(async move {
                    let mut acks = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let event =
                            tokio::time::timeout(Duration::from_millis(500), event_loop.poll())
                                .await;
                        match event {
                            Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                                let at = wall_now();
                                record(&seen, &publish.topic, !publish.payload.is_empty(), at);
                            }
                            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                                acks += 1;
                                if acks == 2 {
                                    let _ = subscribed_tx.send(());
                                }
                            }
                            Ok(Ok(_)) | Err(_) => {}
                            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                });
            })
        };
        // QoS 0 subscriptions: the broker forwards without waiting for acks, so
        // the observer adds as little as it can to what it measures.
        for filter in ["otp2mqtt/+/state", "homeassistant/sensor/+/+/config"] {
            client
                .try_subscribe(filter, QoS::AtMostOnce)
                .map_err(|error| format!("observer subscribe: {error}"))?;
        }
        let observer = Observer {
            seen,
            client,
            stop,
            thread: Some(thread),
        };
        subscribed_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the observer could not subscribe within 10 s".to_string())?;
        Ok(observer)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // A poisoned lock only means the observer thread panicked mid-update.
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
        if let Some(thread) = self.thread.take() {
            // The poll loop checks `stop` at least every 500 ms.
            let _ = thread.join();
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn record(seen: &Mutex<Seen>, topic: &str, has_payload: bool, at: Duration) {
    let mut seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(sensor) = topic
        .strip_prefix("otp2mqtt/s")
        .and_then(|rest| rest.strip_suffix("/state"))
        .and_then(|number| number.parse::<u32>().ok())
    {
        seen.states.push((at, sensor));
        seen.last_state_at = Some(at);
        if let Some(flag) = seen.in_window.get_mut(sensor as usize)
            && !*flag
        {
            *flag = true;
            seen.distinct_in_window += 1;
        }
    } else if topic.starts_with("homeassistant/") && has_payload {
        seen.discovery_topics.insert(topic.to_string());
        let expected = EXPECTED_DISCOVERY.load(Ordering::Relaxed);
        if seen.discovery_done_at.is_none() && seen.discovery_topics.len() >= expected {
            seen.discovery_done_at = Some(at);
        }
    }
}

/// Sensors of the current run (one run at a time).
static EXPECTED_DISCOVERY: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(usize::MAX);

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let memory_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mosquitto = Command::new(mosquitto_binary().unwrap_or_default())
        .arg("-h")
        .output()
        .ok()
        .and_then(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default();
    json!({ "cores": cores, "cpu": cpu, "memory_mb": memory_mb, "broker": mosquitto })
}

fn machine_line(machine: &Value) -> String {
    format!(
        "{} cores, {}, {} MB RAM, {}",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["memory_mb"],
        machine["broker"].as_str().unwrap_or("?")
    )
}

/// The Markdown table of the results (worst boundary per run).
fn table(results: &[Value]) -> String {
    let mut out = String::from(
        "| sensors | codes at boundary | median delay | last code | bridge CPU / step | broker CPU / step | CPU between boundaries | wakeups/s between | peak RSS (start-up) | peak RSS (end) | discovery from start | discovery from connect |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for result in results {
        let sensors = &result["sensors"];
        if let Some(error) = result.get("error") {
            let _ = writeln!(out, "| {sensors} | failed: {error} |||||||||||");
            continue;
        }
        let empty = Vec::new();
        let boundaries = result["boundaries"].as_array().unwrap_or(&empty);
        let worst = |key: &str| {
            boundaries
                .iter()
                .filter_map(|b| b[key].as_f64())
                .fold(f64::NAN, f64::max)
        };
        let fewest = boundaries
            .iter()
            .filter_map(|b| b["codes"].as_u64())
            .min()
            .unwrap_or(0);
        let idle_seconds: f64 = boundaries
            .iter()
            .filter_map(|b| b["idle_seconds"].as_f64())
            .sum();
        let idle_cpu: f64 = boundaries
            .iter()
            .filter_map(|b| b["idle_cpu_ms"].as_f64())
            .sum();
        let _ = writeln!(
            out,
            "| {sensors} | {fewest} / {sensors} | {} | {} | {:.0} ms ({:.0} user + {:.0} sys) | {:.0} ms | {:.0} ms in {:.0} s | {:.1} | {:.1} MB | {:.1} MB | {:.2} s | {:.2} s |",
            ms(worst("median_ms")),
            ms(worst("last_ms")),
            worst("cpu_ms"),
            worst("cpu_user_ms"),
            worst("cpu_system_ms"),
            worst("broker_cpu_ms"),
            idle_cpu,
            idle_seconds,
            worst("idle_wakeups_per_s"),
            result["startup_peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
            result["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
            result["discovery_from_start_s"]
                .as_f64()
                .unwrap_or(f64::NAN),
            result["discovery_from_connect_s"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
    }
    out
}

fn ms(value: f64) -> String {
    if value.is_nan() {
        "–".into()
    } else if value < 10.0 {
        format!("{value:.2} ms")
    } else {
        format!("{value:.0} ms")
    }
}
