//! Micro-benchmarks of the per-sensor work of the pure core: one code (per HMAC),
//! one discovery config, one state + attributes pair. Times here multiplied by
//! the number of sensors are the floor of what a step or an announce costs.
//!
//! `cargo bench --bench codes` (results and their reading: benches/RESULTS.md).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use otp2mqtt::config::{Settings, load_with_environment};
use otp2mqtt::messages::{self, Topics};
use otp2mqtt::schedule::UnixTime;
use otp2mqtt::sensor::{Algorithm, Sensor};

/// A mid-window time, so the attributes hold real timestamps.
const NOW: UnixTime = UnixTime(Duration::from_millis(1_750_000_015_250));

/// Settings loaded the way the bridge loads them, with one sensor per algorithm.
fn settings() -> Settings {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.yaml");
    std::fs::write(
        &path,
        concat!(
            "sensors:\n",
            "  - name: Sha One\n",
            "    token: GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n",
            "  - name: Sha Two\n",
            "    token: GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA\n",
            "    algorithm: SHA256\n",
            "    digits: 8\n",
        ),
    )
    .expect("write the bench config");
    load_with_environment(&path, Some(Default::default())).expect("the bench config loads")
}

fn code_generation(c: &mut Criterion) {
    let mut group = c.benchmark_group("code_at");
    for (algorithm, secret_len) in [
        (Algorithm::Sha1, 20),
        (Algorithm::Sha256, 32),
        (Algorithm::Sha512, 64),
    ] {
        let secret: Vec<u8> = (0..secret_len).map(|i| i as u8 * 7 + 1).collect();
        let sensor = Sensor::new("s".into(), "S".into(), &secret, 6, 30, algorithm);
        group.bench_function(algorithm.as_str(), |b| {
            b.iter(|| black_box(&sensor).code_at(black_box(NOW)))
        });
    }
    group.finish();
}

fn payloads(c: &mut Criterion) {
    let settings = settings();
    let topics = Topics::new(&settings);
    let sensor = &settings.sensors[0];
    let state_topic = topics.state(&sensor.id);
    let attributes_topic = topics.attributes(sensor);

    c.bench_function("discovery_config", |b| {
        b.iter(|| messages::discovery_config(black_box(&topics), black_box(sensor)))
    });
    c.bench_function("state_message", |b| {
        b.iter(|| messages::state(black_box(&state_topic), black_box(sensor), NOW))
    });
    c.bench_function("attributes_message", |b| {
        b.iter(|| messages::attributes(black_box(&attributes_topic), black_box(sensor), NOW))
    });
    // What the bridge does per sensor at every boundary (bridge::publish_codes).
    c.bench_function("state_and_attributes_per_sensor", |b| {
        b.iter(|| {
            (
                messages::attributes(black_box(&attributes_topic), sensor, NOW),
                messages::state(black_box(&state_topic), sensor, NOW),
            )
        })
    });
}

criterion_group!(benches, code_generation, payloads);
criterion_main!(benches);
