//! `otp2mqtt purge`: removes every entity of this instance from Home Assistant,
//! for a user who uninstalls, renames the instance or starts over.
//!
//! Clears (empty retained payload) every retained discovery config of this
//! instance, configured or not, and the retained availability, then disconnects.
//! Configs of other instances and other programs are never touched.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::QoS;
use tokio::time::{Instant, timeout_at};
use tracing::info;

use crate::config::Settings;
use crate::connection::{self, LinkEvent};
use crate::messages::{self, Topics};

/// How long to wait for the broker before giving up (purge is interactive).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long collecting retained configs and their acknowledgements may take.
pub const WORK_TIMEOUT: Duration = Duration::from_secs(30);

/// What a purge removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Discovery config topics cleared.
    pub cleared: Vec<String>,
}

pub async fn purge(settings: &Settings) -> anyhow::Result<PurgeReport> {
    let topics = Topics::new(settings);
    let broker = settings.mqtt.broker_address();
    let last_will = messages::availability(&topics, false);
    let mut link = connection::connect(
        &settings.mqtt,
        &last_will,
        // Room for every config to clear, configured or left by an earlier
        // configuration; the channel allocates only what is queued.
        settings.sensors.len() * 3 + 100_000,
    );

    let connect_deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match timeout_at(connect_deadline, link.events.recv()).await {
            Ok(Some(LinkEvent::Connected)) => break,
            Ok(Some(_)) => continue,
            Ok(None) => bail!("the MQTT connection to {broker} ended unexpectedly"),
            Err(_) => bail!(
                "could not connect to the MQTT broker {broker} within {CONNECT_TIMEOUT:?} (see the warnings above for the reason)"
            ),
        }
    }

    // Retained messages follow the SUBACK in order; a marker we publish after
    // subscribing comes back after all of them, so its arrival proves the list
    // of retained configs complete without guessing a delay.
    let marker = topics.marker(rand::random());
    link.client
        .try_subscribe(topics.discovery_filter(), QoS::AtLeastOnce)
        .and_then(|()| link.client.try_subscribe(marker.clone(), QoS::AtLeastOnce))
        .and_then(|()| {
            link.client
                .try_publish(marker.clone(), QoS::AtLeastOnce, false, "purge")
        })
        .context("cannot queue the purge subscription")?;
    let mut expected_acks = 1usize;
    let mut acks = 0usize;

    // The configured sensors' configs are cleared even if the broker holds none
    // (a broker without persistence), so Home Assistant's copy goes too.
    let mut to_clear: HashSet<String> = settings
        .sensors
        .iter()
        .flat_map(|sensor| messages::discovery_topics(&topics, sensor))
        .collect();
    let deadline = Instant::now() + WORK_TIMEOUT;
    let mut marker_seen = false;
    while !marker_seen {
        match timeout_at(deadline, link.events.recv()).await {
            Ok(Some(LinkEvent::Publish { topic, payload })) => {
                if topic == marker {
                    marker_seen = true;
                } else if !payload.is_empty() && topics.is_own_discovery_topic(&topic) {
                    to_clear.insert(topic);
                }
            }
            Ok(Some(LinkEvent::PublishAcked)) => acks += 1,
            Ok(Some(LinkEvent::Disconnected)) => {
                bail!("lost the connection to {broker} during the purge; run it again")
            }
            Ok(Some(LinkEvent::Connected)) => {}
            Ok(None) => bail!("the MQTT connection to {broker} ended unexpectedly"),
            Err(_) => bail!("the broker {broker} did not answer within {WORK_TIMEOUT:?}"),
        }
    }

    let mut cleared: Vec<String> = to_clear.into_iter().collect();
    cleared.sort();
    for topic in &cleared {
        info!(topic, "clearing discovery config");
        if !link.send(messages::clear_retained(topic.clone())) {
            bail!("cannot queue the clearing of {topic}");
        }
        expected_acks += 1;
    }
    // Tell anyone still listening, then leave nothing retained behind (every
    // replica's availability topic included).
    link.send(messages::availability(&topics, false));
    expected_acks += 1;
    for availability in topics.all_availability() {
        link.send(messages::clear_retained(availability));
        expected_acks += 1;
    }
    while acks < expected_acks {
        match timeout_at(deadline, link.events.recv()).await {
            Ok(Some(LinkEvent::PublishAcked)) => acks += 1,
            Ok(Some(LinkEvent::Disconnected)) => {
                bail!("lost the connection to {broker} during the purge; run it again")
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("the MQTT connection to {broker} ended unexpectedly"),
            Err(_) => {
                bail!("the broker {broker} did not acknowledge the purge within {WORK_TIMEOUT:?}")
            }
        }
    }
    link.shut_down(
        messages::clear_retained(topics.availability()),
        Duration::from_secs(5),
    )
    .await;
    Ok(PurgeReport { cleared })
}
