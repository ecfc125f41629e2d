//! The `colloquy` binary: `serve` runs everything; `relay` and `project` run those parts alone
//! for scale-out; `projections rebuild|status` operate the read models; `tokens` the API tokens;
//! `audit` the hash chain.

use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

mod cli_audit;

use colloquy_api::Roles;
use colloquy_infra::checkpoints::consumer_lags;
use colloquy_infra::relay::RELAY_CHECKPOINT;
use colloquy_infra::{Config, GlobalLog, LogFormat};
use colloquy_projections::Projector;

/// jemalloc rather than glibc's allocator: the same work leaves a smaller RSS
/// (docs/benchmarks/lab-notes.md, "The server's allocator"); glibc keeps freed memory scattered
/// through its arenas, and mimalloc kept more still. Built unprefixed, it is also the `malloc` of SQLite's C
/// code, whose heap glibc spread over an arena per connection thread; and it returns
/// freed pages after a second, from a background thread (`.cargo/config.toml`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Colloquy: the event-sourced conversation engine.
#[derive(Debug, Parser)]
#[command(name = "colloquy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the HTTP API, the relay and the projectors.
    Serve(Config),
    /// Runs only the relay (global log to JetStream, or to nothing without NATS).
    Relay(Config),
    /// Runs only the projectors.
    Project(Config),
    /// Operates the read models.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Manages API tokens (stored only as hashes; a secret is shown once, at creation).
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Audits history: verifies the hash chain, signs checkpoints of it.
    Audit {
        #[command(subcommand)]
        command: cli_audit::AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Creates a token and prints its secret (the tenant is created if missing).
    Create {
        /// The tenant (account) it belongs to.
        #[arg(long, default_value = colloquy_api::DEFAULT_TENANT)]
        tenant: String,
        /// Its name: the actor recorded in the events it causes.
        #[arg(long)]
        name: String,
        /// A scope to grant; repeat for several (e.g. --scope conversations:read).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Days until it expires (never, when absent).
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        config: Config,
    },
    /// Lists a tenant's tokens (never their secrets).
    List {
        /// The tenant.
        #[arg(long, default_value = colloquy_api::DEFAULT_TENANT)]
        tenant: String,
        #[command(flatten)]
        config: Config,
    },
    /// Revokes a token by id.
    Revoke {
        /// The tenant.
        #[arg(long, default_value = colloquy_api::DEFAULT_TENANT)]
        tenant: String,
        /// The token's id (from `tokens list`).
        id: uuid::Uuid,
        #[command(flatten)]
        config: Config,
    },
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Clears a read model and replays the whole log into it, showing progress and events/s.
    Rebuild {
        /// The projection (see `projections status`).
        name: String,
        #[command(flatten)]
        config: Config,
    },
    /// Shows every projection's and the relay's position and lag behind the log.
    Status {
        #[command(flatten)]
        config: Config,
    },
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

/// jemalloc's figures for `/metrics`, refreshed (its statistics are cached per epoch) at each read.
fn jemalloc_stats() -> Option<colloquy_api::metrics::AllocatorStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    let read =
        |value: Result<usize, tikv_jemalloc_ctl::Error>| value.ok().and_then(|v| u64::try_from(v).ok());
    Some(colloquy_api::metrics::AllocatorStats {
        allocated: read(stats::allocated::read())?,
        active: read(stats::active::read())?,
        metadata: read(stats::metadata::read())?,
        resident: read(stats::resident::read())?,
        retained: read(stats::retained::read())?,
    })
}

async fn run(config: &Config, roles: Roles) -> anyhow::Result<()> {
    init_tracing(config.log_format);
    colloquy_api::metrics::set_allocator_stats(jemalloc_stats);
    let mut running = colloquy_api::process::start(config, roles).await?;
    #[allow(clippy::print_stdout)]
    {
        if let Some(token) = &running.generated_token {
            // Shown once: only its hash is stored.
            println!("Created tenant 'default' with admin token (shown only now):\n\n    {token}\n");
        }
        if roles.http {
            println!("colloquy listening on http://{}", running.addr);
        }
    }
    let stop = running.shutdown_handle();
    let waited = tokio::spawn(async move { running.wait().await });
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests and batches");
    stop.shutdown();
    waited.await.context("waiting for shutdown")?
}

async fn rebuild(name: &str, config: &Config) -> anyhow::Result<()> {
    // Its warnings, and with `COLLOQUY_LOG` the projector's statements and timings, as `serve`'s.
    init_tracing(config.log_format);
    let projection = colloquy_projections::by_name(name).with_context(|| {
        let names: Vec<&str> = colloquy_projections::all().iter().map(|p| p.name()).collect();
        format!("no projection {name:?}; there are: {}", names.join(", "))
    })?;
    let store = config.open_store(&colloquy_projections::read_model_tables()).await?;
    let log = GlobalLog::start(store.clone()).await?;
    let head = colloquy_infra::log::read_head(&store).await?;
    let projector = Projector::new(log, projection);
    let bar = ProgressBar::new(u64::try_from(head).unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let reached =
        projector.rebuild(|position| bar.set_position(u64::try_from(position).unwrap_or(0))).await?;
    bar.finish();
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    #[allow(clippy::print_stdout)]
    {
        println!(
            "rebuilt {name}: {reached} events in {seconds:.2} s ({:.0} events/s)",
            reached as f64 / seconds
        );
    }
    store.close().await;
    Ok(())
}

async fn status(config: &Config) -> anyhow::Result<()> {
    let store = config.open_store(&[]).await?;
    let head = colloquy_infra::log::read_head(&store).await?;
    let projections: Vec<String> =
        colloquy_projections::all().iter().map(|p| format!("projection:{}", p.name())).collect();
    let lags = consumer_lags(&store, head, &projections).await?;
    #[allow(clippy::print_stdout)]
    {
        println!("{:<32} {:>12} {:>12}", "consumer", "position", "lag");
        println!("{:<32} {:>12} {:>12}", "log head", head, "");
        for consumer in lags.iter().filter(|c| projections.contains(&c.name) || c.name == RELAY_CHECKPOINT) {
            println!("{:<32} {:>12} {:>12}", consumer.name, consumer.position, consumer.lag);
        }
    }
    store.close().await;
    Ok(())
}

async fn tokens(command: TokensCommand) -> anyhow::Result<()> {
    use colloquy_infra::tokens;
    let (tenant, config) = match &command {
        TokensCommand::Create { tenant, config, .. }
        | TokensCommand::List { tenant, config }
        | TokensCommand::Revoke { tenant, config, .. } => (tenant.clone(), config),
    };
    let tenant = colloquy_domain::TenantId::parse(&tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let store = config.open_store(&[]).await?;
    let now = chrono::Utc::now();
    let outcome = match command {
        TokensCommand::Create { name, scopes, expires_in_days, .. } => {
            // Days past chrono's range are past year 9999 too: `create_token` refuses both.
            let expires_at = expires_in_days.map(|days| {
                now.checked_add_signed(chrono::Duration::days(i64::from(days)))
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
            });
            let issued = tokens::create_token(&store, &tenant, &name, &scopes, expires_at, now).await?;
            #[allow(clippy::print_stdout)]
            {
                println!("id:     {}\nsecret: {} (shown only now)", issued.token_id, issued.secret);
            }
            Ok(())
        }
        TokensCommand::List { .. } => {
            #[allow(clippy::print_stdout)]
            for token in tokens::list_tokens(&store, &tenant).await? {
                let state = match (token.revoked_at, token.expires_at) {
                    (Some(at), _) => format!("revoked {at}"),
                    (None, Some(at)) if at <= now => format!("expired {at}"),
                    (None, Some(at)) => format!("expires {at}"),
                    (None, None) => "active".to_owned(),
                };
                println!("{}  {:<24} {:<40} {state}", token.id, token.name, token.scopes.join(","));
            }
            Ok(())
        }
        TokensCommand::Revoke { id, .. } => {
            if tokens::revoke_token(&store, &tenant, id, now).await? {
                Ok(())
            } else {
                Err(anyhow::anyhow!("tenant {tenant} has no token {id}"))
            }
        }
    };
    store.close().await;
    outcome
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(config) => run(&config, Roles::ALL).await,
        Command::Relay(config) => run(&config, Roles { http: false, relay: true, projectors: false }).await,
        Command::Project(config) => run(&config, Roles { http: false, relay: false, projectors: true }).await,
        Command::Projections { command: ProjectionsCommand::Rebuild { name, config } } => {
            rebuild(&name, &config).await
        }
        Command::Projections { command: ProjectionsCommand::Status { config } } => status(&config).await,
        Command::Tokens { command } => tokens(command).await,
        Command::Audit { command } => cli_audit::run(command).await,
    }
}
