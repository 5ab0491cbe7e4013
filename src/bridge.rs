//! The publisher: owns the sensors, decides what to send and when, and talks to
//! the broker only through the [`Link`] of the connection task.
//!
//! Codes are computed from the wall clock at the moment they are sent and only
//! while connected; after every (re)connect and every Home Assistant birth the
//! whole state is announced again, so nothing depends on the broker's memory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::QoS;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::config::Settings;
use crate::connection::{self, Link, LinkEvent};
use crate::health::HealthReporter;
use crate::messages::{self, ONLINE, Topics};
use crate::schedule::{Schedule, distinct_periods};
use crate::sensor::Sensor;
use crate::verify::Verifier;

/// After an announce, the codes are sent again at these delays: Home Assistant
/// subscribes to a newly discovered entity's state topic only once it has
/// processed the discovery config, and a code sent before that is lost until the
/// next step (up to a whole period).
pub const CODE_REFRESH_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];
/// Home Assistant's birth message is answered after a short, jittered delay, as
/// its docs advise, so that a restart is not met by every bridge at once.
pub const BIRTH_DELAY_MIN: Duration = Duration::from_millis(500);
pub const BIRTH_DELAY_JITTER: Duration = Duration::from_millis(1000);
/// The longest the first announce waits for the stale-config search (normally
/// it ends within milliseconds, when its marker comes back; an ACL that forbids
/// the marker topic makes it wait this long), plus [`CLEANUP_TIME_PER_SENSOR`]:
/// a broker holding many retained configs takes a while to send them all.
pub const CLEANUP_WINDOW: Duration = Duration::from_secs(3);
pub const CLEANUP_TIME_PER_SENSOR: Duration = Duration::from_micros(100);
/// Upper bound of the shutdown sequence after the signal (offline + disconnect).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// Discovery configs (QoS 1) queued before waiting for the broker's acks.
/// Pacing the announce this way keeps thousands of ~800-byte configs from
/// piling up in memory at once (the request channel would hold them all), at
/// no cost in speed: a window this size keeps the connection busy.
pub const ANNOUNCE_WINDOW: usize = 512;

/// A sensor with its state topic, derived once.
struct PublishedSensor {
    sensor: Sensor,
    state_topic: String,
}

/// Sensors sharing a period, published together at its boundaries.
struct PeriodGroup {
    sensors: Vec<usize>,
    /// One sensor per distinct attributes topic in the group. The attributes
    /// (window, period, digits, algorithm) are the same for every sensor with
    /// the same period, digits and algorithm, so they are sent once per topic
    /// rather than once per sensor: half the messages per step.
    attribute_representatives: Vec<usize>,
}

/// The start-up search for stale discovery configs of this instance.
enum Cleanup {
    /// To do at the next connection.
    Pending,
    /// Subscribed to this instance's configs; ghosts are cleared as they arrive.
    /// The first announce waits for `marker` to come back (all retained configs
    /// precede it), so the broker never echoes our own fresh configs to us.
    Collecting {
        marker: String,
        deadline: Instant,
    },
    Done,
}

pub struct Bridge {
    topics: Topics,
    sensors: Vec<PublishedSensor>,
    /// One per entry of `schedule.periods()`.
    period_groups: Vec<PeriodGroup>,
    schedule: Schedule,
    clock: Arc<dyn Clock>,
    /// Discovery topics this configuration owns; any other retained config of
    /// this instance is a ghost to clear.
    own_discovery_topics: HashSet<String>,
    /// Pending code re-sends after an announce (see [`CODE_REFRESH_DELAYS`]).
    code_refreshes: VecDeque<Instant>,
    /// A pending re-announce answering Home Assistant's birth message.
    announce_at: Option<Instant>,
    cleanup: Cleanup,
    /// The next sensor whose discovery configs are to be queued, while an
    /// announce is under way.
    announcing: Option<usize>,
    /// Discovery configs queued but not yet acknowledged by the broker.
    unacked: usize,
    /// Status for `otp2mqtt healthcheck`, when `health_file` is set.
    health: Option<HealthReporter>,
    /// Verify topic → sensor index, for sensors that check typed codes.
    verify_routes: HashMap<String, usize>,
    /// Per sensor (same index): replay and lockout state, when verifying.
    verifiers: Vec<Option<Verifier>>,
}

/// Runs the bridge until `shutdown` is cancelled, then says `offline` and
/// disconnects. Returns an error only if the connection task dies.
pub async fn run(
    settings: Settings,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    for warning in &settings.warnings {
        warn!("{warning}");
    }
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %settings.source.display(),
        sensors = settings.sensors.len(),
        broker = settings.mqtt.broker_address(),
        instance = settings.instance_id,
        "otp2mqtt starting"
    );
    let topics = Topics::new(&settings);
    // Room for a whole step of codes (state per sensor, a few attribute
    // messages) on top of an announce window of discovery configs (up to three
    // per sensor, plus a keypad state). The channel allocates only what is queued.
    let request_capacity = settings.sensors.len() * 2 + ANNOUNCE_WINDOW * 4 + 64;
    let link = connection::connect(
        &settings.mqtt,
        &messages::availability(&topics, false),
        request_capacity,
    );
    Bridge::new(settings, topics, clock)
        .serve(link, shutdown)
        .await
}

impl Bridge {
    pub fn new(settings: Settings, topics: Topics, clock: Arc<dyn Clock>) -> Self {
        let periods = distinct_periods(settings.sensors.iter().map(|sensor| sensor.period));
        let period_groups = periods
            .iter()
            .map(|period| {
                let sensors: Vec<usize> = settings
                    .sensors
                    .iter()
                    .enumerate()
                    .filter(|(_, sensor)| sensor.period == *period)
                    .map(|(index, _)| index)
                    .collect();
                let mut seen = HashSet::new();
                let attribute_representatives = sensors
                    .iter()
                    .copied()
                    .filter(|index| seen.insert(topics.attributes(&settings.sensors[*index])))
                    .collect();
                PeriodGroup {
                    sensors,
                    attribute_representatives,
                }
            })
            .collect();
        let own_discovery_topics = settings
            .sensors
            .iter()
            .flat_map(|sensor| messages::discovery_topics(&topics, sensor))
            .collect();
        let verify_routes = settings
            .sensors
            .iter()
            .enumerate()
            .filter(|(_, sensor)| sensor.verify.is_some())
            .map(|(index, sensor)| (topics.verify(&sensor.id), index))
            .collect();
        let verifiers = settings
            .sensors
            .iter()
            .map(|sensor| sensor.verify.map(Verifier::new))
            .collect();
        let health = settings
            .health_file
            .clone()
            .map(|path| HealthReporter::new(path, periods.first().copied().unwrap_or(30)));
        let sensors = settings
            .sensors
            .into_iter()
            .map(|sensor| PublishedSensor {
                state_topic: topics.state(&sensor.id),
                sensor,
            })
            .collect();
        Bridge {
            topics,
            sensors,
            period_groups,
            schedule: Schedule::new(periods),
            clock,
            own_discovery_topics,
            code_refreshes: VecDeque::new(),
            announce_at: None,
            cleanup: Cleanup::Pending,
            announcing: None,
            unacked: 0,
            health,
            verify_routes,
            verifiers,
        }
    }

    async fn serve(mut self, mut link: Link, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut next_tick = Instant::now();
        loop {
            // A deadline far enough away to never fire, for timers that are off.
            let never = Instant::now() + Duration::from_secs(86_400);
            let refresh_at = self.code_refreshes.front().copied();
            let announce_at = self.announce_at;
            let cleanup_until = match &self.cleanup {
                Cleanup::Collecting { deadline, .. } => Some(*deadline),
                Cleanup::Pending | Cleanup::Done => None,
            };
            tokio::select! {
                // Shutdown first, then the schedule: a code is worth most in its
                // first milliseconds.
                biased;
                () = shutdown.cancelled() => break,
                () = sleep_until(next_tick) => {
                    next_tick = Instant::now() + self.tick(&link);
                }
                event = link.events.recv() => {
                    let event = event.context("the MQTT connection task ended unexpectedly")?;
                    self.on_link_event(event, &link);
                }
                () = sleep_until(refresh_at.unwrap_or(never)), if refresh_at.is_some() => {
                    self.code_refreshes.pop_front();
                    if link.is_connected() {
                        debug!("re-sending codes for entities Home Assistant just discovered");
                        self.publish_codes(&link, None);
                    }
                }
                () = sleep_until(announce_at.unwrap_or(never)), if announce_at.is_some() => {
                    self.announce_at = None;
                    // While the first cleanup runs, its announce is still to come.
                    if link.is_connected() && matches!(self.cleanup, Cleanup::Done) {
                        info!("Home Assistant came online; announcing all sensors again");
                        self.announce(&link);
                    }
                }
                () = sleep_until(cleanup_until.unwrap_or(never)), if cleanup_until.is_some() => {
                    self.finish_cleanup(&link);
                }
            }
        }
        info!("shutting down: marking sensors offline");
        if let Some(health) = &mut self.health {
            health.set_connected(false);
        }
        let offline = messages::availability(&self.topics, false);
        if link.task.is_finished() {
            bail!("the MQTT connection task ended unexpectedly");
        }
        link.shut_down(offline, SHUTDOWN_GRACE).await;
        Ok(())
    }

    /// Publishes the codes of every period whose step changed; returns how long
    /// to sleep until the next check.
    fn tick(&mut self, link: &Link) -> Duration {
        let tick = self.schedule.tick(self.clock.read());
        if let Some(jump) = tick.jump {
            warn!(
                size = ?jump.size,
                direction = if jump.forward { "forward" } else { "backward" },
                "the wall clock jumped; re-aligning codes to the new time"
            );
        }
        if !tick.due.is_empty() && link.is_connected() {
            for group in &tick.due {
                self.publish_codes(link, Some(*group));
            }
        }
        tick.sleep
    }

    fn on_link_event(&mut self, event: LinkEvent, link: &Link) {
        match event {
            LinkEvent::Connected => {
                if let Some(health) = &mut self.health {
                    health.set_connected(true);
                }
                // rumqttc does not restore subscriptions; the broker may have lost them.
                let _ = link
                    .client
                    .try_subscribe(self.topics.status.clone(), QoS::AtLeastOnce);
                for verify_topic in self.verify_routes.keys() {
                    let _ = link
                        .client
                        .try_subscribe(verify_topic.clone(), QoS::AtLeastOnce);
                }
                if matches!(self.cleanup, Cleanup::Done) {
                    self.announce(link);
                } else {
                    let marker = self.topics.marker(rand::random());
                    let _ = link
                        .client
                        .try_subscribe(self.topics.discovery_filter(), QoS::AtLeastOnce);
                    let _ = link.client.try_subscribe(marker.clone(), QoS::AtLeastOnce);
                    link.send(messages::marker(marker.clone()));
                    self.cleanup = Cleanup::Collecting {
                        marker,
                        deadline: Instant::now()
                            + CLEANUP_WINDOW
                            + CLEANUP_TIME_PER_SENSOR * self.sensors.len() as u32,
                    };
                }
            }
            LinkEvent::Disconnected => {
                if let Some(health) = &mut self.health {
                    health.set_connected(false);
                }
                // Whatever was queued died with the session; the next ConnAck
                // announces from scratch.
                self.announcing = None;
                self.unacked = 0;
                // The cleanup subscription died with the session; retry on reconnect.
                if matches!(self.cleanup, Cleanup::Collecting { .. }) {
                    self.cleanup = Cleanup::Pending;
                }
                self.code_refreshes.clear();
            }
            LinkEvent::Publish { topic, payload } => {
                if let Some(&index) = self.verify_routes.get(&topic) {
                    self.check_code(index, &payload, link);
                } else if matches!(&self.cleanup, Cleanup::Collecting { marker, .. } if *marker == topic)
                {
                    self.finish_cleanup(link);
                } else if topic == self.topics.status {
                    if payload.as_ref() == ONLINE.as_bytes() {
                        if self.announce_at.is_none() {
                            let jitter = BIRTH_DELAY_JITTER.mul_f64(rand::random::<f64>());
                            self.announce_at = Some(Instant::now() + BIRTH_DELAY_MIN + jitter);
                        }
                    } else {
                        debug!(
                            bytes = payload.len(),
                            "ignoring a Home Assistant status that is not `online`"
                        );
                    }
                } else if matches!(self.cleanup, Cleanup::Collecting { .. })
                    && !payload.is_empty()
                    && self.topics.is_own_discovery_topic(&topic)
                    && !self.own_discovery_topics.contains(&topic)
                {
                    info!(
                        topic,
                        "removing the discovery config of a sensor no longer configured"
                    );
                    link.send(messages::clear_retained(topic));
                }
            }
            LinkEvent::PublishAcked => {
                // Acks of other QoS 1 messages (availability, answers) count
                // too, which only widens the window a little.
                self.unacked = self.unacked.saturating_sub(1);
                self.continue_announce(link);
            }
        }
    }

    /// Everything Home Assistant needs, from scratch: discovery configs,
    /// availability, current codes; then schedules code re-sends. The configs
    /// go out paced by the broker's acknowledgements (see [`ANNOUNCE_WINDOW`]);
    /// the rest follows once they are all queued.
    fn announce(&mut self, link: &Link) {
        self.announcing = Some(0);
        self.continue_announce(link);
    }

    fn continue_announce(&mut self, link: &Link) {
        let Some(mut next) = self.announcing else {
            return;
        };
        while next < self.sensors.len() && self.unacked < ANNOUNCE_WINDOW {
            let sensor = &self.sensors[next].sensor;
            for config in messages::discovery_configs(&self.topics, sensor) {
                self.unacked += usize::from(link.send(config));
            }
            if sensor.verify.is_some() {
                link.send(messages::keypad_cleared(&self.topics, &sensor.id));
            }
            next += 1;
        }
        if next < self.sensors.len() {
            self.announcing = Some(next);
            return;
        }
        self.announcing = None;
        link.send(messages::availability(&self.topics, true));
        self.publish_codes(link, None);
        info!(sensors = self.sensors.len(), "announced to Home Assistant");
        let now = Instant::now();
        self.code_refreshes = CODE_REFRESH_DELAYS
            .iter()
            .map(|delay| now + *delay)
            .collect();
    }

    /// Sends attributes and codes of one period group (or all groups),
    /// computed from the wall clock now.
    fn publish_codes(&mut self, link: &Link, group: Option<usize>) {
        let now = self.clock.read().wall;
        let groups = match group {
            Some(group) => group..group + 1,
            None => 0..self.period_groups.len(),
        };
        let mut sent = 0usize;
        for group in &self.period_groups[groups] {
            // Attributes first, so a countdown template never pairs the new code
            // with the old window.
            for &index in &group.attribute_representatives {
                let sensor = &self.sensors[index].sensor;
                link.send(messages::attributes(
                    &self.topics.attributes(sensor),
                    sensor,
                    now,
                ));
            }
            for &index in &group.sensors {
                let published = &self.sensors[index];
                sent += usize::from(link.send(messages::state(
                    &published.state_topic,
                    &published.sensor,
                    now,
                )));
            }
        }
        debug!(codes = sent, "published codes");
        if let Some(health) = &mut self.health {
            health.published(now);
        }
    }

    /// Checks a code typed for sensor `index` and answers. The code itself is
    /// never logged; the outcome only at debug, a lockout at warn.
    fn check_code(&mut self, index: usize, payload: &[u8], link: &Link) {
        let sensor = &self.sensors[index].sensor;
        let Some(verifier) = self.verifiers[index].as_mut() else {
            return;
        };
        let outcome = verifier.attempt(sensor, payload, self.clock.read().wall);
        debug!(
            sensor = sensor.id,
            reason = outcome.reason.as_str(),
            "checked a code"
        );
        if outcome.lockout_started {
            if let Some(policy) = sensor.verify {
                warn!(
                    sensor = sensor.id,
                    failures = policy.max_failures,
                    lockout = ?policy.lockout,
                    "too many wrong codes: refusing every code for this sensor until the lockout ends"
                );
            }
        }
        for message in messages::verify_answer(&self.topics, &sensor.id, &outcome) {
            link.send(message);
        }
    }

    /// Ends the start-up cleanup (its marker came back, or it timed out) and
    /// makes the first announce of this connection.
    fn finish_cleanup(&mut self, link: &Link) {
        let Cleanup::Collecting { marker, .. } =
            std::mem::replace(&mut self.cleanup, Cleanup::Done)
        else {
            return;
        };
        if !link.is_connected() {
            self.cleanup = Cleanup::Pending;
            return;
        }
        let _ = link.client.try_unsubscribe(self.topics.discovery_filter());
        let _ = link.client.try_unsubscribe(marker);
        self.announce(link);
    }
}
