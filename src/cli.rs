//! The command line: subcommands and their options.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{DEFAULT_DIGITS, DEFAULT_PERIOD, DEFAULT_SENSOR_NAME, MAX_PERIOD};
use crate::sensor::Algorithm;

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

    /// Make a new random TOTP secret: print it, its otpauth:// URI, a QR code to scan and a config snippet
    #[command(
        after_help = "Examples:\n  otp2mqtt token\n  otp2mqtt token --name \"Front Door\" --issuer \"Home Assistant\"\n  otp2mqtt token --name Garage --digits 8 --period 60 --algorithm SHA256\n  otp2mqtt token --invert        # dark QR on a light terminal background\n\nThe secret is 160 bits from the operating system's secure random source, new on every call.\nScan the QR code with the authenticator app, paste the snippet under `sensors:` in the config,\nthen compare the app with `otp2mqtt code --config FILE`."
    )]
    Token(TokenArgs),

    /// Show each sensor's current code and the seconds it stays valid (no broker needed)
    #[command(
        after_help = "Examples:\n  otp2mqtt code --config /etc/otp2mqtt/otp2mqtt.yaml\n  otp2mqtt code --config otp2mqtt.yaml --watch   # redraw at every code change; Ctrl-C stops\n\nCompare with the authenticator app: the same code means the app and the bridge agree."
    )]
    Code(CodeArgs),

    /// Check the config, list the sensors, warn about weak settings and report the clock's NTP synchronisation
    #[command(
        after_help = "Examples:\n  otp2mqtt check --config /etc/otp2mqtt/otp2mqtt.yaml\n  otp2mqtt check --config otp2mqtt.yaml --connect\n\nExit status: 0 when usable; 78 when the config is broken; 1 when the system clock is not\nNTP-synchronised (its codes drift away from the phone's; pass --allow-unsynced-clock to accept it)\nor, with --connect, when the broker cannot be reached or refuses the login.\nSecrets are never printed."
    )]
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Config file (.yaml, .yml or .toml)
    #[arg(short, long, env = "OTP2MQTT_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Account name shown in the authenticator app, and the sensor's name in the config snippet
    #[arg(long, value_name = "NAME", default_value = DEFAULT_SENSOR_NAME)]
    pub name: String,

    /// Issuer shown in the authenticator app
    #[arg(long, value_name = "ISSUER", default_value = "Home Assistant")]
    pub issuer: String,

    /// Code length (6, 7 or 8)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DIGITS,
          value_parser = clap::value_parser!(u8).range(6..=8))]
    pub digits: u8,

    /// Step length in seconds; many apps (Google Authenticator among them) only do 30
    #[arg(long, value_name = "S", default_value_t = DEFAULT_PERIOD,
          value_parser = clap::value_parser!(u64).range(1..=MAX_PERIOD))]
    pub period: u64,

    /// HMAC algorithm: SHA1 (what every app supports), SHA256 or SHA512
    #[arg(long, value_name = "A", default_value = "SHA1", value_parser = parse_algorithm)]
    pub algorithm: Algorithm,

    /// Draw the QR code dark-on-light, for terminals with a light background
    /// (the default suits dark backgrounds)
    #[arg(long)]
    pub invert: bool,
}

fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    text.parse()
}

#[derive(Debug, clap::Args)]
pub struct CodeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Keep running and redraw at every code change, until Ctrl-C
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Also connect to the broker (as the bridge would, under a separate client id) and report the outcome
    #[arg(long)]
    pub connect: bool,

    /// Exit 0 even when the kernel reports the clock as not NTP-synchronised
    /// (for hosts whose clock is kept right by other means, such as a hypervisor)
    #[arg(long)]
    pub allow_unsynced_clock: bool,
}
