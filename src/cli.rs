//! The command line: subcommands and their options.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "otp2mqtt",
    version,
    about = "Publishes TOTP codes (RFC 6238) to MQTT as Home Assistant sensors, changing exactly at :00 and :30",
    after_help = "Config keys can be overridden with environment variables: OTP2MQTT__MQTT__HOST=broker, OTP2MQTT__MQTT__PASSWORD=…"
)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace) or a full tracing filter.
    #[arg(long, global = true, env = "OTP2MQTT_LOG", default_value = "info")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge: announce the sensors to Home Assistant and publish their codes
    #[command(after_help = "Example:\n  otp2mqtt run --config /etc/otp2mqtt/otp2mqtt.yaml")]
    Run(ConfigArgs),
    /// Remove every entity of this instance from Home Assistant (clear its retained discovery configs and availability), then exit
    #[command(
        after_help = "Run it when uninstalling otp2mqtt or renaming its instance:\n  otp2mqtt purge --config /etc/otp2mqtt/otp2mqtt.yaml"
    )]
    Purge(ConfigArgs),
    /// Exit 0 when the running bridge is connected and publishing, 1 otherwise (for container and Kubernetes probes)
    #[command(
        after_help = "Needs `health_file` in the config (the same file `run` uses); reads the file, never the broker:\n  otp2mqtt healthcheck --config /config/otp2mqtt.yaml"
    )]
    Healthcheck(ConfigArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Config file (.yaml, .yml or .toml)
    #[arg(short, long, env = "OTP2MQTT_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}
