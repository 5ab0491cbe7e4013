//! Runs one CLI command to completion and turns its outcome into an exit code.

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
    match command {
        Command::Healthcheck(args) => {
            let settings = match config::load(&args.config) {
                Ok(settings) => settings,
                Err(error) => return config_error(&error),
            };
            let Some(path) = settings.health_file else {
                eprintln!(
                    "otp2mqtt: unhealthy: config file {}: `health_file` is not set, so `run` keeps no status to check",
                    args.config.display()
                );
                return ExitCode::FAILURE;
            };
            match health::check(&path, SystemClock::new().read().wall) {
                Ok(()) => {
                    println!("healthy: connected and publishing");
                    ExitCode::SUCCESS
                }
                Err(reason) => {
                    eprintln!("otp2mqtt: unhealthy: {reason}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Purge(args) => {
            let settings = match config::load(&args.config) {
                Ok(settings) => settings,
                Err(error) => return config_error(&error),
            };
            match purge::purge(&settings).await {
                Ok(report) => {
                    println!(
                        "removed {} entities of instance '{}' from {} (discovery configs and availability cleared)",
                        report.cleared.len(),
                        settings.instance_id,
                        settings.mqtt.broker_address()
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("otp2mqtt: error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            let settings = match config::load(&args.config) {
                Ok(settings) => settings,
                Err(error) => return config_error(&error),
            };
            warn_if_clock_unsynchronised();
            match bridge::run(settings, Arc::new(SystemClock::new()), shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("otp2mqtt: error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token(args) => new_token::run(&args),
        Command::Code(args) => {
            let settings = match config::load(&args.config.config) {
                Ok(settings) => settings,
                Err(error) => return config_error(&error),
            };
            show_codes::run(&settings, args.watch, &SystemClock::new(), shutdown).await
        }
        Command::Check(args) => check::run(&args).await,
    }
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

fn config_error(error: &config::ConfigError) -> ExitCode {
    eprintln!("otp2mqtt: error: {error}");
    ExitCode::from(EXIT_CONFIG)
}
