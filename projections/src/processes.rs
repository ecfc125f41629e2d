//! Process managers: event-driven work that sends commands, in two halves, so that no command
//! is sent inside a projector's transaction and none is lost or sent for an event twice.
//!
//! - The **projection half** is a [`Projection`](crate::Projection) that, for each event that
//!   calls for work, [`record`]s a job in `process_jobs`, in the batch's transaction: the job
//!   commits with the checkpoint, exactly once per event, in log order.
//! - The **actor half** is a [`Process`], which [`run`] hands each job that is due, oldest
//!   first, with an [`Origin`] whose causation id is the job's event and whose correlation id is
//!   that event's. A job acted on is marked done; one that fails is tried again later, with a
//!   growing pause. A crash between the act and the mark repeats the act, so an act must be
//!   idempotent (a command that records nothing when its work is already done).
//!
//! Jobs are kept once done, so a rebuild of the projection half (which replays the log) never
//! does a job again. `due_at` lets a job wait for its time (a timer, a retry).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use tokio::sync::watch;
use uuid::Uuid;

use colloquy_domain::{Actor, ActorKind, TenantId};
use colloquy_infra::{on_tx, Durability, File, Origin, Store, StoreError, StoredEvent, Tx};

use crate::runtime::ProjectionError;

/// The table of every process's jobs. A runtime table: on SQLite, in the read models' file.
pub const JOBS_TABLE: &str = "process_jobs";

/// How often [`run`] looks for jobs that are due.
const POLL: Duration = Duration::from_millis(200);

/// Jobs taken per look.
const JOBS_PER_ROUND: i64 = 50;

/// The longest pause before a failed job is tried again.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(300);

/// A job as its projection half records it.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Unique within the process: a second record of it is ignored (a replayed event).
    pub id: String,
    /// The tenant whose commands it sends.
    pub tenant: String,
    /// The position of the event that called for it.
    pub position: i64,
    /// When it may run (at once when `None`).
    pub due_at: Option<DateTime<Utc>>,
    /// What to do, in the process's own terms.
    pub job: Value,
    /// The correlation id of the commands it sends.
    pub correlation_id: Option<String>,
    /// The id of the event that caused it.
    pub causation_id: Option<String>,
}

impl NewJob {
    /// The job that `event` calls for, identified by the event's id, correlated and caused as
    /// its commands must be. `None` for an event without an id or a tenant (none is stored so).
    pub fn caused_by(event: &StoredEvent, job: Value) -> Option<Self> {
        let event_id = event.metadata.str_field("event_id")?;
        Some(Self {
            tenant: event.tenant_id()?,
            position: event.position.unwrap_or_default(),
            due_at: None,
            job,
            correlation_id: event.metadata.str_field("correlation_id"),
            causation_id: Some(event_id.clone()),
            id: event_id,
        })
    }
}

/// Records `job` for `process`, in a projection batch's transaction (a job already recorded
/// stays as it is).
pub async fn record(tx: &mut Tx<'_>, process: &str, job: &NewJob) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO process_jobs (process, job_id, tenant_id, position, due_at, job, correlation_id, causation_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (process, job_id) DO NOTHING";
    let due_at = job.due_at.map_or(0, |at| at.timestamp_millis());
    on_tx!(tx, |conn| {
        sqlx::query(sql)
            .bind(process)
            .bind(&job.id)
            .bind(&job.tenant)
            .bind(job.position)
            .bind(due_at)
            .bind(job.job.to_string())
            .bind(&job.correlation_id)
            .bind(&job.causation_id)
            .execute(conn)
            .await?;
    });
    Ok(())
}

/// A job that is due, as [`Process::act`] gets it.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its id within the process.
    pub id: String,
    /// The tenant whose commands it sends.
    pub tenant: TenantId,
    /// What to do.
    pub job: Value,
    /// How many times it was tried before.
    pub attempts: i32,
    correlation_id: Option<String>,
    causation_id: Option<String>,
}

/// Why an act did not finish: the job is tried again later.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ActError(pub String);

impl From<StoreError> for ActError {
    fn from(error: StoreError) -> Self {
        Self(error.to_string())
    }
}

/// The actor half of a process manager.
#[async_trait::async_trait]
pub trait Process: Send + Sync + 'static {
    /// The process's name: its jobs' `process`.
    fn name(&self) -> &'static str;

    /// The id of the system actor its commands are recorded as (its name unless it says).
    fn actor_id(&self) -> &'static str {
        self.name()
    }

    /// Does `job`, sending its commands with `origin`. Idempotent: a job may be acted on again
    /// after a crash. An error leaves the job to be tried again.
    async fn act(&self, job: &Job, origin: &Origin) -> Result<(), ActError>;
}

/// The origin of a job's commands: the system actor named by the process, caused by the job's
/// event and correlated with it.
fn origin(actor_id: &str, job: &Job) -> Origin {
    Origin {
        tenant: job.tenant.clone(),
        actor: Actor { kind: ActorKind::System, id: actor_id.to_owned() },
        via_token: None,
        request_id: None,
        correlation_id: job.correlation_id.as_deref().and_then(|id| Uuid::parse_str(id).ok()),
        causation_id: job.causation_id.as_deref().and_then(|id| Uuid::parse_str(id).ok()),
    }
}

/// The jobs of `process` due at `now`, oldest event first.
async fn due(store: &Store, process: &str, now: DateTime<Utc>) -> Result<Vec<Job>, StoreError> {
    let sql = "SELECT job_id, tenant_id, job, attempts, correlation_id, causation_id FROM process_jobs
               WHERE process = $1 AND NOT done AND due_at <= $2 ORDER BY position, job_id LIMIT $3";
    let rows = colloquy_infra::on_pool!(store, |pool| {
        let rows = sqlx::query(sql).bind(process).bind(now.timestamp_millis()).bind(JOBS_PER_ROUND);
        let rows = rows.fetch_all(pool).await?;
        rows.iter()
            .map(|row| -> Result<_, sqlx::Error> {
                Ok((
                    row.try_get::<String, _>("job_id")?,
                    row.try_get::<String, _>("tenant_id")?,
                    row.try_get::<String, _>("job")?,
                    row.try_get::<i32, _>("attempts")?,
                    row.try_get::<Option<String>, _>("correlation_id")?,
                    row.try_get::<Option<String>, _>("causation_id")?,
                ))
            })
            .collect::<Result<Vec<_>, _>>()?
    });
    rows.into_iter()
        .map(|(id, tenant, job, attempts, correlation_id, causation_id)| {
            let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{process} job {id}: {e}"));
            Ok(Job {
                tenant: TenantId::parse(&tenant).map_err(|e| corrupt(&e))?,
                job: serde_json::from_str(&job).map_err(|e| corrupt(&e))?,
                attempts,
                correlation_id,
                causation_id,
                id,
            })
        })
        .collect()
}

/// Marks a job done, or (with `failure`) leaves it for a later try, `pause` from now.
async fn settle(
    store: &Store,
    process: &str,
    job: &Job,
    failure: Option<(&ActError, Duration)>,
) -> Result<(), StoreError> {
    let mut tx = store.begin(File::ReadModels, Durability::Durable).await?;
    match failure {
        None => {
            let sql = "UPDATE process_jobs SET done = true, attempts = attempts + 1, last_error = NULL
                       WHERE process = $1 AND job_id = $2";
            on_tx!(&mut *tx, |conn| {
                sqlx::query(sql).bind(process).bind(&job.id).execute(conn).await?;
            });
        }
        Some((error, pause)) => {
            let sql = "UPDATE process_jobs SET attempts = attempts + 1, last_error = $3, due_at = $4
                       WHERE process = $1 AND job_id = $2";
            let due_at = Utc::now() + pause;
            on_tx!(&mut *tx, |conn| {
                sqlx::query(sql)
                    .bind(process)
                    .bind(&job.id)
                    .bind(error.to_string())
                    .bind(due_at.timestamp_millis())
                    .execute(conn)
                    .await?;
            });
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The pause before a job that failed `attempts` times (counting this one) is tried again:
/// one second, doubling, at most [`MAX_RETRY_PAUSE`].
pub fn retry_pause(attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(0);
    Duration::from_secs(1u64 << doublings).min(MAX_RETRY_PAUSE)
}

/// Acts on `process`'s jobs as they fall due, until `stop`.
pub async fn run(
    store: Store,
    process: Arc<dyn Process>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let name = process.name();
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        for job in due(&store, name, Utc::now()).await? {
            let acted = process.act(&job, &origin(process.actor_id(), &job)).await;
            match &acted {
                Ok(()) => settle(&store, name, &job, None).await?,
                Err(error) => {
                    let pause = retry_pause(job.attempts + 1);
                    tracing::warn!(process = name, job = %job.id, %error, retry_in_s = pause.as_secs(), "a job failed; it will be tried again");
                    settle(&store, name, &job, Some((error, pause))).await?;
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_job_waits_longer_after_each_failure_up_to_five_minutes() {
        let pauses: Vec<u64> = [1, 2, 3, 4, 9, 10, 40].iter().map(|a| retry_pause(*a).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 256, 300, 300]);
    }

    #[test]
    fn a_job_is_caused_by_its_event_and_correlated_with_it() {
        let event = StoredEvent {
            position: Some(7),
            aggregate_type: "group".into(),
            aggregate_id: "g".into(),
            sequence: 3,
            event_type: "GroupLeft".into(),
            event_version: "1.0".into(),
            payload: serde_json::json!({"GroupLeft": {}}).into(),
            metadata: serde_json::json!({"event_id": "e-1", "tenant_id": "acme", "correlation_id": "c-1"})
                .into(),
        };
        let job = NewJob::caused_by(&event, serde_json::json!({"group_id": "g"})).expect("a job");
        assert_eq!(
            (
                job.id.as_str(),
                job.tenant.as_str(),
                job.position,
                job.causation_id.as_deref(),
                job.correlation_id.as_deref()
            ),
            ("e-1", "acme", 7, Some("e-1"), Some("c-1"))
        );
        let mut without_id = event;
        without_id.metadata = serde_json::json!({"tenant_id": "acme"}).into();
        assert!(NewJob::caused_by(&without_id, Value::Null).is_none());
    }
}
