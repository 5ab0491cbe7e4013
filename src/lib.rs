//! otp2mqtt: Home Assistant's `otp` sensor as an MQTT bridge.
//!
//! Data flows one way: config → sensors → messages → broker. The pure core
//! ([`config`], [`sensor`], [`schedule`], [`messages`]) knows nothing of the
//! network or the real clock; [`connection`] owns the MQTT connection and
//! [`bridge`] decides what to publish when.

pub mod app;
pub mod backoff;
pub mod bridge;
pub mod check;
pub mod cli;
pub mod clock;
pub mod clock_sync;
pub mod config;
pub mod connection;
pub mod health;
pub mod messages;
pub mod new_token;
pub mod otpauth;
pub mod purge;
pub mod schedule;
pub mod secret;
pub mod sensor;
pub mod show_codes;
pub mod tls;
pub mod verify;
