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
use colloquy_infra::Config;

/// What `audit export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line: every stored field and the link.
    Jsonl,
    /// One CloudEvents 1.0 JSON envelope per line, as JetStream carries them.
    Cloudevents,
}

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
        /// Verify an export (`audit export --format jsonl`, of whole tenants) instead of the store.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        config: Config,
    },
    /// Streams a tenant's history in log order, with progress: JSON Lines of every stored field
    /// and link (`jsonl`, verifiable with `verify --file`), or CloudEvents (`cloudevents`).
    Export {
        /// The tenant.
        #[arg(long, default_value = colloquy_api::DEFAULT_TENANT)]
        tenant: String,
        /// Only events recorded at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events recorded before this time (RFC 3339).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only this aggregate's events (its id).
        #[arg(long)]
        aggregate: Option<String>,
        /// `jsonl` or `cloudevents`.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// The file to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        config: Config,
    },
    /// Appends an export's events, in order, to a new empty store and rebuilds every read model
    /// from them, so that any figure can be reproduced offline.
    Replay {
        /// The export (`jsonl` or `cloudevents`, told apart line by line).
        #[arg(long)]
        file: PathBuf,
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
        AuditCommand::Verify { file: Some(file), .. } => verify_file(&file),
        AuditCommand::Verify { tenant, from, checkpoints, public_key, config, file: None } => {
            let checkpoints = read_checkpoints(&checkpoints, public_key.as_deref())?;
            verify(&config, tenant.as_deref(), from, &checkpoints).await
        }
        AuditCommand::Export { tenant, since, until, aggregate, format, out, config } => {
            let only = Only { since, until, aggregate };
            export(&config, &tenant, &only, format, out.as_ref()).await
        }
        AuditCommand::Replay { file, config } => replay(&config, &file).await,
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
    let store = config.open_store(&[]).await?;
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
    let store = config.open_store(&[]).await?;
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

fn bar(length: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {unit}  {{per_sec}}  eta {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn verify_file(file: &PathBuf) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let started = Instant::now();
    let mut unreadable = None;
    let lines = reader.lines().enumerate().map_while(|(n, line)| {
        let parsed = line.ok().and_then(|line| serde_json::from_str::<audit::Exported>(&line).ok());
        if parsed.is_none() {
            unreadable = Some(n + 1);
        }
        parsed
    });
    let verified = audit::verify_exported(lines);
    if let Some(line) = unreadable {
        bail!("line {line} of {} is not an exported event (`audit export --format jsonl`)", file.display());
    }
    match verified {
        Err(broken) => bail!("the export breaks at position {}: {}", broken.position, broken.reason),
        Ok(count) => {
            let seconds = started.elapsed().as_secs_f64().max(1e-9);
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "verified {count} exported events in {seconds:.2} s ({:.0} events/s)",
                    count as f64 / seconds
                );
            }
            Ok(())
        }
    }
}

/// What an export keeps.
struct Only {
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
    aggregate: Option<String>,
}

impl Only {
    fn keeps(&self, event: &colloquy_infra::StoredEvent) -> bool {
        let at = event.recorded_at();
        self.aggregate.as_ref().is_none_or(|id| *id == event.aggregate_id)
            && self.since.is_none_or(|since| at.is_some_and(|at| at >= since))
            && self.until.is_none_or(|until| at.is_some_and(|at| at < until))
    }
}

async fn export(
    config: &Config,
    tenant: &str,
    only: &Only,
    format: ExportFormat,
    out: Option<&PathBuf>,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tenant = tenant_of(tenant)?;
    let store = config.open_store(&[]).await?;
    let head = colloquy_infra::log::read_head(&store).await?;
    let mut writer: Box<dyn std::io::Write> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let bar = bar(u64::try_from(head).unwrap_or(0), "positions");
    let (started, mut after, mut written) = (Instant::now(), 0, 0u64);
    loop {
        let page = audit::page(&store, Some(&tenant), after).await?;
        let Some(last) = page.last().map(|e| e.position) else { break };
        for event in &page {
            let Some(exported) = audit::Exported::of(event) else {
                bail!("position {} cannot be exported: the store no longer has its event", event.position);
            };
            let stored = colloquy_infra::StoredEvent {
                position: Some(exported.position),
                aggregate_type: exported.aggregate_type.clone(),
                aggregate_id: exported.aggregate_id.clone(),
                sequence: exported.sequence,
                event_type: exported.event_type.clone(),
                event_version: exported.event_version.clone(),
                payload: colloquy_infra::RawJson::from_text(exported.payload.get().to_owned())?,
                metadata: colloquy_infra::RawJson::from_text(exported.metadata.get().to_owned())?,
            };
            if !only.keeps(&stored) {
                continue;
            }
            match format {
                ExportFormat::Jsonl => serde_json::to_writer(&mut writer, &exported)?,
                // Personal data as a reader sees it (erased where its key is gone); the `jsonl`
                // lines keep it sealed, as stored, which is what the chain covers.
                ExportFormat::Cloudevents => {
                    let mut revealed = [stored];
                    store.keys().reveal_in_place(&mut revealed).await?;
                    writer.write_all(colloquy_infra::envelope::cloud_event_json(&revealed[0]).as_bytes())?
                }
            }
            writer.write_all(b"\n")?;
            written += 1;
        }
        after = last;
        bar.set_position(u64::try_from(last).unwrap_or(0));
    }
    writer.flush()?;
    bar.finish_and_clear();
    store.close().await;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "exported {written} events of {tenant} in {seconds:.2} s ({:.0} events/s)",
        written as f64 / seconds
    );
    Ok(())
}

/// Events appended per transaction by a replay.
const REPLAY_BATCH: usize = 1_000;

async fn replay(config: &Config, file: &PathBuf) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let store = config.open_store(&colloquy_projections::read_model_tables()).await?;
    let head = colloquy_infra::log::read_head(&store).await?;
    if head > 0 {
        bail!("the store already holds {head} events: replay into a new, empty store");
    }
    let size = std::fs::metadata(file).with_context(|| format!("opening {}", file.display()))?.len();
    let reader = std::io::BufReader::new(std::fs::File::open(file)?);
    let bar = bar(size, "bytes");
    let (started, mut batch, mut appended) = (Instant::now(), Vec::with_capacity(REPLAY_BATCH), 0u64);
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        let event = parse_line(&line).with_context(|| format!("line {} of {}", n + 1, file.display()))?;
        batch.push(event);
        if batch.len() == REPLAY_BATCH {
            appended += batch.len() as u64;
            store.append(std::mem::take(&mut batch)).await.map_err(|e| anyhow::anyhow!("appending: {e}"))?;
        }
    }
    if !batch.is_empty() {
        appended += batch.len() as u64;
        store.append(batch).await.map_err(|e| anyhow::anyhow!("appending: {e}"))?;
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!("appended {appended} events in {seconds:.2} s ({:.0} events/s)", appended as f64 / seconds);
    let log = colloquy_infra::GlobalLog::start(store.clone()).await?;
    for projection in colloquy_projections::all() {
        let name = projection.name();
        let projector = colloquy_projections::Projector::new(log.clone(), projection);
        let started = Instant::now();
        let reached = projector.rebuild(|_| {}).await?;
        eprintln!("rebuilt {name} to position {reached} in {:.2} s", started.elapsed().as_secs_f64());
    }
    store.close().await;
    Ok(())
}

/// An exported line (either format) as the event to append.
fn parse_line(line: &str) -> anyhow::Result<cqrs_es::persist::SerializedEvent> {
    let value: serde_json::Value = serde_json::from_str(line)?;
    let stored = if value.get("specversion").is_some() {
        colloquy_infra::envelope::from_cloud_event(line.as_bytes())
            .ok_or_else(|| anyhow::anyhow!("not a CloudEvents envelope of an event"))?
    } else {
        let exported: audit::Exported = serde_json::from_str(line)?;
        colloquy_infra::StoredEvent {
            position: Some(exported.position),
            aggregate_type: exported.aggregate_type,
            aggregate_id: exported.aggregate_id,
            sequence: exported.sequence,
            event_type: exported.event_type,
            event_version: exported.event_version,
            payload: colloquy_infra::RawJson::from_text(exported.payload.get().to_owned())?,
            metadata: colloquy_infra::RawJson::from_text(exported.metadata.get().to_owned())?,
        }
    };
    Ok(cqrs_es::persist::SerializedEvent {
        aggregate_id: stored.aggregate_id,
        sequence: usize::try_from(stored.sequence).unwrap_or(0),
        aggregate_type: stored.aggregate_type,
        event_type: stored.event_type,
        event_version: stored.event_version,
        payload: stored.payload.to_value(),
        metadata: stored.metadata.to_value(),
    })
}
