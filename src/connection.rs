//! The one task that owns the MQTT connection: it polls rumqttc's event loop,
//! reconnects with backoff, and reports what happened as [`LinkEvent`]s.
//!
//! It never publishes and never waits on anyone: a stalled poll loop stalls
//! keep-alives and every publish, so all decisions live in the bridge.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::config::MqttSettings;
use crate::messages::{Message, Qos};

/// What the bridge hears from the connection task.
#[derive(Debug)]
pub enum LinkEvent {
    /// A new session began (first connect or reconnect): the broker may have lost
    /// every retained message and every subscription, so announce everything again.
    Connected,
    /// The connection is gone; reconnecting in the background.
    Disconnected,
    /// A message arrived on one of our subscriptions.
    Publish {
        topic: String,
        payload: bytes::Bytes,
    },
    /// The broker acknowledged one QoS 1 publish.
    PublishAcked,
}

/// The bridge's side of the connection.
pub struct Link {
    pub client: AsyncClient,
    pub events: mpsc::UnboundedReceiver<LinkEvent>,
    /// True between a ConnAck and the next error. Read before sending anything
    /// that goes stale (codes), so nothing waits in a queue for a reconnect.
    pub connected: Arc<AtomicBool>,
    pub task: JoinHandle<()>,
}

impl Link {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Hands one message to rumqttc without waiting. Returns false when it could
    /// not be queued (the request channel is full or the task is gone); callers
    /// treat that like a lost packet: the next announce repairs it.
    pub fn send(&self, message: Message) -> bool {
        let qos = match message.qos {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
        };
        match self
            .client
            .try_publish(message.topic, qos, message.retain, message.payload)
        {
            Ok(()) => true,
            Err(error) => {
                debug!(%error, "could not queue a publish");
                false
            }
        }
    }

    /// Publishes `last_words` (normally `offline`) and disconnects cleanly, so the
    /// broker does not fire the last will and Home Assistant shows "unavailable"
    /// at once. Bounded by `grace`.
    pub async fn shut_down(self, last_words: Message, grace: Duration) {
        let Link {
            client,
            task,
            connected,
            ..
        } = self;
        if connected.load(Ordering::Acquire) {
            let link_was_up = client
                .try_publish(
                    last_words.topic,
                    QoS::AtLeastOnce,
                    last_words.retain,
                    last_words.payload,
                )
                .and_then(|()| client.try_disconnect())
                .is_ok();
            if link_was_up {
                let abort = task.abort_handle();
                if tokio::time::timeout(grace, task).await.is_err() {
                    warn!(
                        "the broker did not take the disconnect within {grace:?}; closing anyway (its last will marks us offline)"
                    );
                    abort.abort();
                }
                return;
            }
        }
        task.abort();
    }
}

/// Headroom in the request channel beyond one full announce.
const CHANNEL_HEADROOM: usize = 256;
/// Largest packet accepted from the broker: MQTT's own maximum, so an oversized
/// retained message on a topic we subscribe to is read and ignored rather than
/// dropping the connection (and being sent again on every reconnect).
const MAX_INCOMING_PACKET: usize = 268_435_455;
/// Largest packet we send; discovery configs are under 1 KiB.
const MAX_OUTGOING_PACKET: usize = 64 * 1024;
/// QoS 1 messages in flight before waiting for acks; enough to stream thousands
/// of discovery configs without waiting a round trip per hundred.
const MAX_INFLIGHT: u16 = 1024;
/// Seconds a TCP connect plus CONNECT/CONNACK may take.
pub const CONNECT_TIMEOUT_SECS: u64 = 5;

/// Builds the client options: credentials, keep-alive, a retained `offline` last
/// will, clean sessions (we re-announce on every ConnAck instead of relying on
/// a broker's memory).
pub fn mqtt_options(settings: &MqttSettings, last_will: &Message) -> MqttOptions {
    let mut options = MqttOptions::new(
        settings.client_id.clone(),
        settings.host.clone(),
        settings.port,
    );
    options
        .set_keep_alive(settings.keep_alive)
        .set_clean_session(true)
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
        .set_inflight(MAX_INFLIGHT)
        .set_last_will(LastWill::new(
            last_will.topic.clone(),
            last_will.payload.clone(),
            QoS::AtLeastOnce,
            last_will.retain,
        ));
    if let Some(tls) = &settings.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.0.clone(),
        )));
    }
    if let Some(username) = &settings.username {
        let password = settings
            .password
            .as_ref()
            .map(|password| password.expose())
            .unwrap_or("");
        options.set_credentials(username.clone(), password);
    }
    options
}

/// Starts the connection task. `request_capacity` sizes the request channel so
/// that what the caller sends at once fits without blocking.
pub fn connect(settings: &MqttSettings, last_will: &Message, request_capacity: usize) -> Link {
    let options = mqtt_options(settings, last_will);
    let (client, mut event_loop) = AsyncClient::new(options, request_capacity + CHANNEL_HEADROOM);
    // Without TCP_NODELAY the second small publish of a burst waits ~40 ms for
    // Nagle's algorithm; codes are worth most in their first milliseconds.
    event_loop.network_options.set_tcp_nodelay(true);
    event_loop
        .network_options
        .set_connection_timeout(CONNECT_TIMEOUT_SECS);
    let (events_tx, events) = mpsc::unbounded_channel();
    let connected = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(drive(
        event_loop,
        events_tx,
        settings.broker_address(),
        connected.clone(),
    ));
    Link {
        client,
        events,
        connected,
        task,
    }
}

/// Polls the event loop until the bridge disconnects or goes away.
async fn drive(
    mut event_loop: EventLoop,
    events: mpsc::UnboundedSender<LinkEvent>,
    broker: String,
    connected: Arc<AtomicBool>,
) {
    let mut backoff = Backoff::new();
    // The last failure reason logged, so a broker that stays down is reported
    // once, not once per attempt.
    let mut reported_failure: Option<String> = None;
    loop {
        let event = match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected.store(true, Ordering::Release);
                backoff.reset();
                reported_failure = None;
                info!(broker, "connected to MQTT broker");
                LinkEvent::Connected
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => LinkEvent::Publish {
                topic: publish.topic,
                payload: publish.payload,
            },
            Ok(Event::Incoming(Packet::PubAck(_))) => LinkEvent::PublishAcked,
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                connected.store(false, Ordering::Release);
                info!(broker, "disconnected from MQTT broker");
                return;
            }
            Ok(_) => continue,
            Err(error) => {
                let was_connected = connected.swap(false, Ordering::AcqRel);
                let reason = describe(&error);
                if was_connected {
                    warn!(
                        broker,
                        reason, "lost the connection to the MQTT broker; reconnecting with backoff"
                    );
                    let _ = events.send(LinkEvent::Disconnected);
                } else if reported_failure.as_deref() != Some(reason.as_str()) {
                    warn!(
                        broker,
                        reason, "waiting for the MQTT broker; retrying with backoff"
                    );
                } else {
                    debug!(broker, reason, "MQTT broker still unreachable");
                }
                reported_failure = Some(reason);
                // Anything queued for the dead session would arrive stale after the
                // reconnect; the bridge re-announces everything on ConnAck instead.
                event_loop.pending.clear();
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if events.send(event).is_err() {
            // The bridge is gone: nobody left to serve.
            return;
        }
    }
}

/// A one-line reason for a connection error, in the user's terms.
pub fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => format!(
            "the broker refused the login ({code:?}): check mqtt.username and mqtt.password"
        ),
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection ({code:?})")
        }
        ConnectionError::NetworkTimeout => "timed out connecting".to_string(),
        ConnectionError::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}
