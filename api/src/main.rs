//! The `colloquy` binary: `colloquy serve` runs the HTTP API.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use colloquy_infra::{Config, LogFormat};

/// Colloquy: the event-sourced conversation engine.
#[derive(Debug, Parser)]
#[command(name = "colloquy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the HTTP API on the configured store.
    Serve(Config),
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("COLLOQUY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            init_tracing(config.log_format);
            let mut running = colloquy_api::start(&config).await?;
            if let Some(token) = &running.generated_token {
                // Shown once: only its hash is stored.
                #[allow(clippy::print_stdout)]
                {
                    println!("Created tenant 'default' with admin token (shown only now):\n\n    {token}\n");
                }
            }
            #[allow(clippy::print_stdout)]
            {
                println!("colloquy listening on http://{}", running.addr);
            }
            let stop = running.shutdown_handle();
            shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            if let Some(stop) = stop {
                let _ = stop.send(());
            }
            running.wait().await?;
        }
    }
    Ok(())
}
