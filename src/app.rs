//! Runs one CLI command to completion and turns its outcome into an exit code.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cli::Command;
use crate::clock::{Clock, SystemClock};
use crate::{bridge, check, clock_sync, config, health, new_token, purge, show_codes};

/// Exit code for an unusable config (sysexits' EX_CONFIG), so a service manager
/// can tell "fix the file" from "try again" (`RestartPreventExitStatus=78`).
pub const EXIT_CONFIG: u8 = 78;

/// Runs `command`; `shutdown` is cancelled on SIGINT/SIGTERM.
pub async fn run(command: Command, shutdown: CancellationToken) -> ExitCode {
    let outcome = match command {
        Command::Run(args) => run_bridge(&args.config, shutdown).await,
        Command::Purge(args) => purge_instance(&args.config).await,
        Command::Healthcheck(args) => healthcheck(&args.config),
        Command::Code(args) => match config::load(&args.config.config) {
            Ok(settings) => {
                return show_codes::run(&settings, args.watch, &SystemClock::new(), shutdown).await;
            }
            Err(error) => Err(Failure::Config(error)),
        },
        Command::Token(args) => return new_token::run(&args),
        Command::Check(args) => return check::run(&args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(error)) => {
            eprintln!("otp2mqtt: error: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Runtime(error)) => {
            eprintln!("otp2mqtt: error: {error:#}");
            ExitCode::FAILURE
        }
        Err(Failure::Unhealthy(reason)) => {
            eprintln!("otp2mqtt: unhealthy: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// How a command failed, which decides its exit status.
enum Failure {
    /// The config is unusable: fix the file ([`EXIT_CONFIG`]).
    Config(config::ConfigError),
    /// Something at run time: worth retrying (1).
    Runtime(anyhow::Error),
    /// `healthcheck` found the bridge not working (1).
    Unhealthy(String),
}

impl From<config::ConfigError> for Failure {
    fn from(error: config::ConfigError) -> Self {
        Failure::Config(error)
    }
}

async fn run_bridge(path: &Path, shutdown: CancellationToken) -> Result<(), Failure> {
    let settings = config::load(path)?;
    warn_if_clock_unsynchronised();
    bridge::run(settings, Arc::new(SystemClock::new()), shutdown)
        .await
        .map_err(Failure::Runtime)
}

async fn purge_instance(path: &Path) -> Result<(), Failure> {
    let settings = config::load(path)?;
    let report = purge::purge(&settings).await.map_err(Failure::Runtime)?;
    println!(
        "removed {} entities of instance '{}' from {} (discovery configs and availability cleared)",
        report.cleared.len(),
        settings.instance_id,
        settings.mqtt.broker_address()
    );
    Ok(())
}

fn healthcheck(path: &Path) -> Result<(), Failure> {
    let settings = config::load(path)?;
    let health_file = settings.health_file.ok_or_else(|| {
        Failure::Unhealthy(format!(
            "config file {}: `health_file` is not set, so `run` keeps no status to check",
            path.display()
        ))
    })?;
    health::check(&health_file, SystemClock::new().read().wall).map_err(Failure::Unhealthy)?;
    println!("healthy: connected and publishing");
    Ok(())
}

/// A clock nobody keeps right is the number one cause of "the codes don't
/// match": say so once, loudly, at start-up.
fn warn_if_clock_unsynchronised() {
    let clock = clock_sync::read();
    if clock.is_unsynchronised() {
        tracing::warn!(
            "the system clock is not NTP-synchronised: codes will drift away from the phones' codes; enable NTP (chrony, ntpd or `timedatectl set-ntp true`)"
        );
    } else {
        tracing::info!(clock = %clock, "system clock");
    }
}
