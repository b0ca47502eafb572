//! `switchboard-gateway`: run the gateway, or check its configuration.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use switchboard_gateway::{Config, server};
use tokio_util::sync::CancellationToken;

/// The Switchboard realtime gateway: Socket.IO v4 clients connect here; API
/// services publish through Redis.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML config file; SWITCHBOARD_* environment variables override it.
    #[arg(long, short, global = true, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the configuration and exit: 0 if valid, 2 if not.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("switchboard-gateway: {err}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            // Keys and templates are checked by building the authenticator.
            if let Err(err) = switchboard_gateway::auth::Authenticator::from_config(&config.auth) {
                eprintln!("switchboard-gateway: {err}");
                return ExitCode::from(2);
            }
            println!(
                "configuration is valid: listen {}, bus {}",
                config
                    .listen_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                if config.redis.enabled() {
                    format!("redis ({})", config.redis.mode)
                } else {
                    "embedded".into()
                }
            );
            ExitCode::SUCCESS
        }
        Command::Run => run(config),
    }
}

fn run(config: Config) -> ExitCode {
    switchboard_gateway::logging::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("switchboard-gateway: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        // Lives until the first signal, which cancels `shutdown`; the
        // process ends after `server::run` returns, whatever it is doing.
        tokio::spawn(wait_for_signal(shutdown.clone()));
        match server::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!("{err:#}");
                eprintln!("switchboard-gateway: {err:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the gateway with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
