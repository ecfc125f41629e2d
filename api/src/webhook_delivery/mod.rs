//! Delivering webhooks (docs/adr/0012): every process that runs the projectors runs [`run`],
//! which shares the subscriptions out through leases on their `webhook_state` rows and runs one
//! task per subscription it holds (`deliver.rs`), so that a slow subscriber delays no other and
//! each is delivered by one process at a time, in log order. `send.rs` makes a request,
//! `sign.rs` signs it, `safety.rs` keeps it from internal addresses, `stats.rs` counts
//! what came of it for `/metrics`.

pub mod deliver;
pub mod safety;
pub mod send;
pub mod sign;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use colloquy_infra::{Config, GlobalLog, StoreError};
use colloquy_projections::webhooks::{self, deliveries, state, Subscription};

use deliver::{now_ms, Ended, Holder};

/// How often the subscriptions are read again (a new one starts within this).
const SCAN_EVERY: Duration = Duration::from_millis(500);

/// How often old attempts are removed from the delivery log.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What the operator decides about webhooks (`COLLOQUY_WEBHOOK_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Whether internal addresses may be called.
    pub allow_private: bool,
    /// How long a failing delivery is retried before the subscription is paused.
    pub retry_for: Duration,
    /// The first retry's pause.
    pub retry_base: Duration,
    /// How long a request may take.
    pub timeout: Duration,
    /// How long a process holds a subscription without renewing it.
    pub lease: Duration,
}

impl Settings {
    /// The settings `config` gives.
    pub fn from_config(config: &Config) -> Self {
        Self {
            allow_private: config.webhook_allow_private,
            retry_for: Duration::from_secs(config.webhook_retry_for_secs),
            retry_base: Duration::from_millis(config.webhook_retry_base_ms.max(1)),
            timeout: Duration::from_millis(config.webhook_timeout_ms.max(100)),
            lease: Duration::from_millis(config.webhook_lease_ms.max(300)),
        }
    }

    /// A sender with these settings.
    pub fn sender(&self) -> Result<send::Sender, StoreError> {
        send::Sender::new(self.allow_private, self.timeout)
            .map_err(|e| StoreError::Corrupt(format!("the webhooks' HTTP client: {e}")))
    }
}

struct Task {
    handle: JoinHandle<Result<Ended, StoreError>>,
    subscription: watch::Sender<Subscription>,
    stop: watch::Sender<bool>,
}

/// Delivers the subscriptions this process holds until `stop`.
pub async fn run(
    log: GlobalLog,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let store = log.store().clone();
    let name = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let feed = crate::log_feed::LogFeed::new(log.clone());
    let holder = Arc::new(Holder { log, feed, name, sender: settings.sender()?, settings });
    let mut tasks: HashMap<(String, String), Task> = HashMap::new();
    let mut pruned: Option<tokio::time::Instant> = None;
    let outcome = loop {
        if let Err(error) = scan(&holder, &mut tasks).await {
            break Err(error);
        }
        if pruned.is_none_or(|at| at.elapsed() > PRUNE_EVERY) {
            let removed = deliveries::prune(&store, now_ms() - deliveries::RETENTION_MS).await?;
            if removed > 0 {
                tracing::info!(removed, "removed webhook delivery attempts past their retention");
            }
            pruned = Some(tokio::time::Instant::now());
        }
        tokio::select! {
            _ = stop.changed() => break Ok(()),
            () = tokio::time::sleep(SCAN_EVERY) => {}
        }
    };
    for task in tasks.values() {
        let _ = task.stop.send(true);
    }
    for ((tenant, id), task) in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task.handle).await;
        state::release(&store, (&tenant, &id), &holder.name).await?;
    }
    outcome
}

/// Ends the tasks that ended or whose subscription went, hands changed subscriptions to theirs,
/// and starts one for each subscription this process can take.
async fn scan(holder: &Arc<Holder>, tasks: &mut HashMap<(String, String), Task>) -> Result<(), StoreError> {
    let store = holder.log.store();
    let finished: Vec<_> =
        tasks.iter().filter(|(_, task)| task.handle.is_finished()).map(|(k, _)| k.clone()).collect();
    for key in finished {
        if let Some(task) = tasks.remove(&key) {
            match task.handle.await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(tenant = %key.0, webhook = %key.1, %error, "webhook deliveries failed; starting again")
                }
                Err(error) => {
                    tracing::error!(tenant = %key.0, webhook = %key.1, %error, "webhook deliveries panicked")
                }
            }
        }
    }
    let receiving = webhooks::receiving(store).await?;
    let wanted: HashMap<(String, String), Subscription> =
        receiving.into_iter().map(|s| ((s.tenant_id.clone(), s.id.clone()), s)).collect();
    for (key, task) in tasks.iter() {
        match wanted.get(key) {
            Some(subscription) => {
                task.subscription.send_if_modified(|held| {
                    let changed = held != subscription;
                    if changed {
                        *held = subscription.clone();
                    }
                    changed
                });
            }
            None => {
                let _ = task.stop.send(true);
            }
        }
    }
    let now = now_ms();
    let free = state::takeable(store, &holder.name, now).await?;
    for key in free {
        let Some(subscription) = wanted.get(&key) else { continue };
        if tasks.contains_key(&key) {
            continue;
        }
        let until = now + i64::try_from(holder.settings.lease.as_millis()).unwrap_or(30_000);
        let Some(claimed) = state::claim(store, (&key.0, &key.1), &holder.name, (now, until)).await? else {
            continue;
        };
        let (subscription_tx, subscription_rx) = watch::channel(subscription.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let holder = holder.clone();
        let release = key.clone();
        let handle = tokio::spawn(async move {
            let ended = deliver::run(&holder, subscription_rx, claimed, stop_rx).await;
            if matches!(ended, Ok(Ended::Stopped)) {
                state::release(holder.log.store(), (&release.0, &release.1), &holder.name).await?;
            }
            ended
        });
        tasks.insert(key, Task { handle, subscription: subscription_tx, stop: stop_tx });
    }
    Ok(())
}
