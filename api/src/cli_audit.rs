//! `colloquy audit`: walks the hash chain (`verify`), makes the operator's signing key
//! (`keygen`) and signs a tenant's verified chain head (`checkpoint`) for an outside party to
//! keep (docs/adr/0010).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use colloquy_domain::TenantId;
use colloquy_infra::audit::{self, Checkpoint};
use colloquy_infra::{Config, Store};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walks the hash chain recomputing every link, with progress and events/s; names the first
    /// position where the stored history no longer matches (and exits 1).
    Verify {
        /// Only this tenant's chain (default: every tenant's, which also finds removed positions).
        #[arg(long)]
        tenant: Option<String>,
        /// The first position to check (links before it are taken as stored).
        #[arg(long, default_value_t = 1)]
        from: i64,
        /// A signed checkpoint file the history must still pass through; repeat for several.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        /// The operator's public key (hex) that signed the checkpoints.
        #[arg(long)]
        public_key: Option<String>,
        #[command(flatten)]
        config: Config,
    },
    /// Writes a new Ed25519 signing key (hex) to a file only its owner can read, and prints the
    /// public key to hand to whoever verifies checkpoints.
    Keygen {
        /// The key file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verifies a tenant's chain, then prints its head signed with the key: a checkpoint (JSON)
    /// for an outside party to keep.
    Checkpoint {
        /// The tenant.
        #[arg(long, default_value = colloquy_api::DEFAULT_TENANT)]
        tenant: String,
        /// The signing key file (`audit keygen`).
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        config: Config,
    },
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { tenant, from, checkpoints, public_key, config } => {
            let checkpoints = read_checkpoints(&checkpoints, public_key.as_deref())?;
            verify(&config, tenant.as_deref(), from, &checkpoints).await
        }
        AuditCommand::Keygen { out } => keygen(&out),
        AuditCommand::Checkpoint { tenant, key, config } => checkpoint(&config, &tenant, &key).await,
    }
}

fn tenant_of(name: &str) -> anyhow::Result<TenantId> {
    TenantId::parse(name).map_err(|error| anyhow::anyhow!("--tenant: {error}"))
}

/// The checkpoint files, each with its signature checked against the operator's key.
fn read_checkpoints(files: &[PathBuf], public_key: Option<&str>) -> anyhow::Result<Vec<Checkpoint>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let Some(public_key) = public_key else { bail!("--checkpoint needs --public-key, the operator's") };
    let public_key = audit::public_key(public_key).map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
    let mut checkpoints = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let checkpoint: Checkpoint =
            serde_json::from_str(&text).with_context(|| format!("{} is not a checkpoint", file.display()))?;
        checkpoint.check_signature(&public_key).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        checkpoints.push(checkpoint);
    }
    Ok(checkpoints)
}

async fn verify(
    config: &Config,
    tenant: Option<&str>,
    from: i64,
    checkpoints: &[Checkpoint],
) -> anyhow::Result<()> {
    let tenant = tenant.map(tenant_of).transpose()?;
    let store = Store::open(&config.store_location()).await?;
    if let Some(foreign) = checkpoints.iter().find(|c| c.store_id != store.id()) {
        bail!("the checkpoint of position {} is of another store ({})", foreign.position, foreign.store_id);
    }
    let head = colloquy_infra::log::read_head(&store).await?;
    let bar = ProgressBar::new(u64::try_from(head).unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} positions  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let verification = audit::verify(&store, tenant.as_ref(), from, checkpoints, |position| {
        bar.set_position(u64::try_from(position).unwrap_or(0));
    })
    .await?;
    bar.finish_and_clear();
    store.close().await;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let rate = verification.events as f64 / seconds;
    if let Some(broken) = verification.broken {
        let tenant = broken.tenant_id.map(|t| format!(" (tenant {t})")).unwrap_or_default();
        bail!(
            "the chain breaks at position {}{tenant}: {}; {} events before it verified",
            broken.position,
            broken.reason,
            verification.events
        );
    }
    #[allow(clippy::print_stdout)]
    {
        println!(
            "verified {} events through position {} in {seconds:.2} s ({rate:.0} events/s); {} checkpoints matched",
            verification.events, verification.last_position, verification.checkpoints_matched
        );
    }
    Ok(())
}

fn keygen(out: &PathBuf) -> anyhow::Result<()> {
    use std::io::Write as _;
    let key = audit::generate_key();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(out).with_context(|| format!("creating {}", out.display()))?;
    writeln!(file, "{}", hex::encode(key.to_bytes()))?;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", hex::encode(key.verifying_key().to_bytes()));
    }
    Ok(())
}

async fn checkpoint(config: &Config, tenant: &str, key: &PathBuf) -> anyhow::Result<()> {
    let tenant = tenant_of(tenant)?;
    let text = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let key = audit::signing_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let store = Store::open(&config.store_location()).await?;
    let verification = audit::verify(&store, Some(&tenant), 1, &[], |_| {}).await?;
    store.close().await;
    if let Some(broken) = verification.broken {
        bail!("not signing a broken chain: it breaks at position {}: {}", broken.position, broken.reason);
    }
    let Some((position, hash)) = verification.heads.get(tenant.as_str()) else {
        bail!("tenant {tenant} has no events");
    };
    let checkpoint =
        Checkpoint::sign(&key, store.id(), tenant.as_str(), (*position, hash), chrono::Utc::now());
    #[allow(clippy::print_stdout)]
    {
        println!("{}", serde_json::to_string_pretty(&checkpoint)?);
    }
    Ok(())
}
