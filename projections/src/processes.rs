//! Process managers: event-driven work that sends commands, in two halves, so that no command
//! is sent inside a projector's transaction and none is lost or sent for an event twice.
//!
//! - The **projection half** is a [`Projection`](crate::Projection) that, for each event that
//!   calls for work, [`record`]s a job in `process_jobs`, in the batch's transaction: the job
//!   commits with the checkpoint, exactly once per event, in log order.
//! - The **actor half** is a [`Process`], which [`run`] hands each job that is due, oldest
//!   first (a round's jobs a few at a time; the processes of one projection half are lanes of
//!   one runner, a round taking each lane's due jobs at that lane's [`Pace`]), with an [`Origin`] whose
//!   causation id is the job's event and whose correlation id is that event's. On PostgreSQL a
//!   round first claims its jobs for a while ([`CLAIM`]), so that processes running one process
//!   manager side by side each take other jobs. A job acted on is marked done; one that fails is
//!   tried again later, with a growing pause. A crash between the act and the mark repeats the
//!   act (once the claim runs out), so an act must be idempotent (a command that records nothing
//!   when its work is already done).
//!
//! Jobs are kept once done, so a rebuild of the projection half (which replays the log) never
//! does a job again. `due_at` lets a job wait for its time: a durable timer is a job that a
//! projection [`schedule`]s (one per subject, moved by each later event, [`cancel`]led when no
//! longer wanted). [`run`] sleeps until the earliest due job, or until the projection half
//! commits more; it costs nothing while nothing is due (docs/adr/0005).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use sqlx::Row;
use tokio::sync::mpsc;
use tokio::sync::watch;
use uuid::Uuid;

use colloquy_domain::{Actor, ActorKind, TenantId};
use colloquy_infra::{on_tx, Durability, File, Origin, Store, StoreError, StoredEvent, Tx};

use crate::deadlines::Deadlines;
use crate::rows;
use crate::runtime::ProjectionError;

/// The table of every process's jobs. A runtime table: on SQLite, in the read models' file.
pub const JOBS_TABLE: &str = "process_jobs";

/// The least time between two looks of [`run`] woken by its projection half.
const POLL: Duration = Duration::from_millis(100);

/// Jobs of a lane taken per look, unless the process says ([`Pace`]).
const JOBS_PER_ROUND: i64 = 50;

/// Jobs of a lane's round acted on at once, unless the process says ([`Pace`]): their commands'
/// appends share the store's group commits.
const ACTS_AT_ONCE: usize = 16;

/// How many of a lane's jobs a round takes, and how many of them it acts on at once. A round
/// acts on every lane's jobs together, each lane at its own pace, and ends when all have ended;
/// behind a lane that filled its round, a later lane takes only one wave (`at_once`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Jobs taken per round.
    pub jobs_per_round: i64,
    /// Of those, acted on at once.
    pub at_once: usize,
    /// Whether its jobs are deadlines (timers): a round of them acted on late holds back the
    /// process's background projections ([`Deadlines`]).
    pub deadlines: bool,
}

impl Pace {
    /// Most processes' pace: acts that send a command or two each.
    pub const DEFAULT: Pace =
        Pace { jobs_per_round: JOBS_PER_ROUND, at_once: ACTS_AT_ONCE, deadlines: false };
}

/// Jobs acted on whose marks are not written yet, past which a round waits for them.
const MOST_UNSETTLED: usize = 1_000;

/// The longest pause before a failed job is tried again.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(300);

/// How long a round's claim on its jobs holds: another process takes a job whose claim ran out
/// (its process died before it settled the round). Far longer than a round takes; a round that
/// takes longer has its jobs acted on twice, which acts allow.
const CLAIM: Duration = Duration::from_secs(10);

/// A job as its projection half records it.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Unique within the process: a second record of it is ignored (a replayed event).
    pub id: String,
    /// The tenant whose commands it sends.
    pub tenant: String,
    /// What it acts on (`conversation/<id>`), for operators' questions.
    pub subject: Option<String>,
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
            subject: Some(format!("{}/{}", event.aggregate_type, event.aggregate_id)),
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
    write(tx, process, std::slice::from_ref(job), "DO NOTHING").await
}

/// Schedules `jobs` for `process` in a projection batch's transaction: timers, one per job id,
/// which an event later in the log than the one that last scheduled it sets again (a new due
/// time, pending again); an earlier one (a replay) leaves it. One job per id (a statement may
/// not set one row twice), written a few statements for the lot.
pub async fn schedule(tx: &mut Tx<'_>, process: &str, jobs: &[NewJob]) -> Result<(), sqlx::Error> {
    let again = "DO UPDATE SET tenant_id = excluded.tenant_id, subject = excluded.subject,
                 position = excluded.position, due_at = excluded.due_at, job = excluded.job,
                 correlation_id = excluded.correlation_id, causation_id = excluded.causation_id,
                 attempts = 0, last_error = NULL, done = false, claimed_until = 0
                 WHERE process_jobs.position < excluded.position";
    write(tx, process, jobs, again).await
}

/// Schedules `jobs` for `process` as [`schedule`] does, for jobs that gather a subject's events
/// (many events, one act), each at most once per `every`: a job's `due_at` is its event's time.
/// A job waiting for its due keeps it; otherwise (done, or due already and perhaps being acted
/// on before this event was read) it falls due at the event's time, but not sooner than `every`
/// after its last due. A quiet subject's event is acted on at once; a busy subject's events are
/// gathered, a round of them each `every`.
pub async fn schedule_gathering(
    tx: &mut Tx<'_>,
    process: &str,
    jobs: &[NewJob],
    every: Duration,
) -> Result<(), sqlx::Error> {
    let every = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    let again = format!(
        "DO UPDATE SET tenant_id = excluded.tenant_id, subject = excluded.subject,
         position = excluded.position, job = excluded.job,
         due_at = CASE WHEN NOT process_jobs.done AND process_jobs.due_at > excluded.due_at
                       THEN process_jobs.due_at
                       WHEN process_jobs.due_at + {every} > excluded.due_at
                       THEN process_jobs.due_at + {every}
                       ELSE excluded.due_at END,
         correlation_id = excluded.correlation_id, causation_id = excluded.causation_id,
         attempts = 0, last_error = NULL, done = false, claimed_until = 0
         WHERE process_jobs.position < excluded.position"
    );
    write(tx, process, jobs, &again).await
}

/// Cancels the pending jobs of `process` (timers no longer wanted), each by its id and the
/// position of the event that cancels it, in a projection batch's transaction; one scheduled by
/// a later event stays.
pub async fn cancel(tx: &mut Tx<'_>, process: &str, jobs: &[(String, i64)]) -> Result<(), sqlx::Error> {
    let mut remaining = jobs;
    while !remaining.is_empty() {
        let (chunk, rest) = remaining.split_at(rows::statement_rows(remaining.len()));
        remaining = rest;
        let numbered = rows::numbered(tx);
        let process_param = if numbered { format!("${}", chunk.len() * 2 + 1) } else { "?".to_owned() };
        let sql = format!(
            "UPDATE process_jobs SET done = true, position = v.column2
               FROM (VALUES {}) AS v
              WHERE process_jobs.process = {process_param} AND process_jobs.job_id = v.column1
                AND NOT process_jobs.done AND process_jobs.position < v.column2",
            rows::parameter_rows(numbered, chunk.len(), 2)
        );
        on_tx!(tx, |conn| {
            let mut query = sqlx::query(&sql);
            for (job_id, position) in chunk {
                query = query.bind(job_id).bind(*position);
            }
            query.bind(process).execute(conn).await?;
        });
    }
    Ok(())
}

/// Writes `jobs` of `process`, `on_conflict` saying what becomes of one already there, a few
/// statements for the lot.
async fn write(
    tx: &mut Tx<'_>,
    process: &str,
    jobs: &[NewJob],
    on_conflict: &str,
) -> Result<(), sqlx::Error> {
    let mut remaining = jobs;
    while !remaining.is_empty() {
        let (chunk, rest) = remaining.split_at(rows::statement_rows(remaining.len()));
        remaining = rest;
        let sql = format!(
            "INSERT INTO process_jobs (process, job_id, tenant_id, subject, position, due_at, job, correlation_id, causation_id)
             VALUES {} ON CONFLICT (process, job_id) {on_conflict}",
            rows::parameter_rows(rows::numbered(tx), chunk.len(), 9)
        );
        on_tx!(tx, |conn| {
            let mut query = sqlx::query(&sql);
            for job in chunk {
                query = query
                    .bind(process)
                    .bind(&job.id)
                    .bind(&job.tenant)
                    .bind(&job.subject)
                    .bind(job.position)
                    .bind(job.due_at.map_or(0, due_millis))
                    .bind(job.job.to_string())
                    .bind(&job.correlation_id)
                    .bind(&job.causation_id);
            }
            query.execute(conn).await?;
        });
    }
    Ok(())
}

/// `at` in Unix milliseconds, rounded up: a job never runs before its time.
fn due_millis(at: DateTime<Utc>) -> i64 {
    let millis = at.timestamp_millis();
    if at.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        millis
    } else {
        millis + 1
    }
}

/// A job still to do, as operators see it (`GET /v1/timers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The process.
    pub process: String,
    /// Its id within the process.
    pub job_id: String,
    /// What it acts on.
    pub subject: Option<String>,
    /// When it may run (`None`: at once).
    pub due_at: Option<DateTime<Utc>>,
    /// How many times it was tried.
    pub attempts: i32,
    /// Why the last try failed.
    pub last_error: Option<String>,
}

/// The pending jobs of `tenant` on `subject`, earliest due first.
pub async fn pending_on(store: &Store, tenant: &TenantId, subject: &str) -> Result<Vec<Pending>, StoreError> {
    let sql = "SELECT process, job_id, subject, due_at, attempts, last_error FROM process_jobs
               WHERE tenant_id = $1 AND subject = $2 AND NOT done ORDER BY due_at, position";
    type Row = (String, String, Option<String>, i64, i32, Option<String>);
    let rows: Vec<Row> = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query_as(sql).bind(tenant.as_str()).bind(subject).fetch_all(pool).await?
    });
    Ok(rows
        .into_iter()
        .map(|(process, job_id, subject, due_at, attempts, last_error)| Pending {
            process,
            job_id,
            subject,
            due_at: (due_at > 0).then(|| DateTime::from_timestamp_millis(due_at)).flatten(),
            attempts,
            last_error,
        })
        .collect())
}

/// A job that is due, as [`Process::act`] gets it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The process it is a job of (a lane of [`run`]).
    pub process: &'static str,
    /// Its id within the process.
    pub id: String,
    /// The tenant whose commands it sends.
    pub tenant: TenantId,
    /// What to do.
    pub job: Value,
    /// How many times it was tried before.
    pub attempts: i32,
    /// The position of the event that last set it: a timer set again meanwhile is not settled.
    position: i64,
    /// When it fell due, in Unix milliseconds.
    due_at: i64,
    correlation_id: Option<String>,
    causation_id: Option<String>,
}

impl Job {
    /// The position of the event that last set it.
    pub fn position(&self) -> i64 {
        self.position
    }
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

    /// The projection half that records its jobs, whose batches wake it (its name unless it
    /// says: one projection may feed several processes, each with a lane of jobs of its own).
    fn projection(&self) -> &'static str {
        self.name()
    }

    /// The id of the system actor its commands are recorded as (its name unless it says).
    fn actor_id(&self) -> &'static str {
        self.name()
    }

    /// How many of its jobs a round takes and acts on at once ([`Pace::DEFAULT`] unless it says).
    fn pace(&self) -> Pace {
        Pace::DEFAULT
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

/// The jobs of `process` due at `now`: the earliest due first (by the event that set them among
/// those due together), so that each look reads the head of the due index and no more, however
/// long the backlog; handed over oldest event first. On PostgreSQL they are claimed for
/// [`CLAIM`], so that several processes running `process` each take other jobs (rows another is
/// claiming are skipped, not waited for). On SQLite, one process's store, they are read: a claim
/// would be a write, waiting for the read models' one writer behind the projectors' batches.
async fn claim(
    store: &Store,
    process: &'static str,
    limit: i64,
    now: DateTime<Utc>,
    unsettled: &Unsettled,
) -> Result<Vec<Job>, StoreError> {
    // A look first, which writes nothing: a process wakes at each batch its projection half
    // applies, mostly with nothing due.
    let any = "SELECT count(*) FROM (SELECT 1 FROM process_jobs
                WHERE process = $1 AND NOT done AND due_at <= $2 AND claimed_until <= $2 LIMIT 1) AS due";
    let due: i64 = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query_scalar(any).bind(process).bind(now.timestamp_millis()).fetch_one(pool).await?
    });
    if due == 0 {
        return Ok(Vec::new());
    }
    let until = (now + CLAIM).timestamp_millis();
    let rows = match store.reads().sqlite() {
        Some(pool) => {
            // Jobs acted on and not yet marked are still pending here: read past them. The set
            // is copied before the read: a mark committed after it was copied may be missed by
            // the read, and its job must still be passed over (it leaves the set once marked).
            let held = unsettled.copy();
            let skipped = held.len();
            let sql = "SELECT * FROM process_jobs WHERE process = $1 AND NOT done AND due_at <= $2
                        ORDER BY due_at, position LIMIT $3";
            let query = sqlx::query(sql).bind(process).bind(now.timestamp_millis());
            let read = limit.saturating_add(i64::try_from(skipped).unwrap_or(i64::MAX));
            let rows = query.bind(read).fetch_all(pool).await?;
            let rows = rows.into_iter().map(claimed).collect::<Result<Vec<_>, _>>()?;
            let rows = rows.into_iter().filter(|row| !held.contains(&(process, row.0.clone(), row.4)));
            rows.take(usize::try_from(limit).unwrap_or(usize::MAX)).collect()
        }
        None => claim_rows(store, process, limit, now, until).await?,
    };
    jobs_of(process, rows)
}

/// Claims the due jobs of `process` on PostgreSQL, skipping rows another process is claiming.
async fn claim_rows(
    store: &Store,
    process: &str,
    limit: i64,
    now: DateTime<Utc>,
    until: i64,
) -> Result<Vec<ClaimedRow>, StoreError> {
    let mut tx = store.begin(File::ReadModels, Durability::Relaxed).await?;
    let rows = match &mut *tx {
        Tx::Postgres(tx) => {
            let sql = "UPDATE process_jobs AS j SET claimed_until = $4
                         FROM (SELECT process, job_id FROM process_jobs
                                WHERE process = $1 AND NOT done AND due_at <= $2 AND claimed_until <= $2
                                ORDER BY due_at, position LIMIT $3 FOR UPDATE SKIP LOCKED) AS due
                        WHERE j.process = due.process AND j.job_id = due.job_id
                       RETURNING j.*";
            let query = sqlx::query(sql).bind(process).bind(now.timestamp_millis()).bind(limit);
            query
                .bind(until)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(claimed)
                .collect::<Result<Vec<_>, _>>()?
        }
        // `claim` reads SQLite's jobs instead.
        Tx::Sqlite(_) => Vec::new(),
    };
    tx.commit().await?;
    Ok(rows)
}

/// The jobs of claimed rows, oldest event first.
fn jobs_of(process: &'static str, rows: Vec<ClaimedRow>) -> Result<Vec<Job>, StoreError> {
    let mut jobs = rows
        .into_iter()
        .map(|(id, tenant, job, attempts, position, due_at, correlation_id, causation_id)| {
            let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{process} job {id}: {e}"));
            Ok(Job {
                process,
                tenant: TenantId::parse(&tenant).map_err(|e| corrupt(&e))?,
                job: serde_json::from_str(&job).map_err(|e| corrupt(&e))?,
                attempts,
                position,
                due_at,
                correlation_id,
                causation_id,
                id,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // RETURNING keeps no order.
    jobs.sort_by(|a, b| (a.position, &a.id).cmp(&(b.position, &b.id)));
    Ok(jobs)
}

type ClaimedRow = (String, String, String, i32, i64, i64, Option<String>, Option<String>);

/// A claimed job's columns, in either dialect.
fn claimed<R: Row>(row: R) -> Result<ClaimedRow, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok((
        row.try_get("job_id")?,
        row.try_get("tenant_id")?,
        row.try_get("job")?,
        row.try_get("attempts")?,
        row.try_get("position")?,
        row.try_get("due_at")?,
        row.try_get("correlation_id")?,
        row.try_get("causation_id")?,
    ))
}

/// Marks rounds' jobs: each acted on is done, each that failed is put off by its pause, with its
/// error. Each only as the event that last set it left it (or cancelled): a timer set again
/// meanwhile stays pending. On SQLite, whose one writer takes transactions in turn, one
/// transaction marks the rounds handed over together. On PostgreSQL too, but a row a projection
/// batch holds (batches lock the same rows in log order, and hold them for seconds under load) is
/// skipped, not waited for: waiting in another order could deadlock with a batch (seen under
/// load), and a skipped job is taken again once its claim runs out, and its act then changes
/// nothing (a batch holding it has mostly set it again anyway). A mark is not made durable: one
/// lost in a crash, or not made, repeats an act once the claim runs out, which acts allow.
async fn settle(store: &Store, outcomes: &[Outcome]) -> Result<(), StoreError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin(File::ReadModels, Durability::Relaxed).await?;
    if store.is_postgres() {
        let (done, failed): (Vec<&Outcome>, Vec<&Outcome>) =
            outcomes.iter().partition(|(_, failure)| failure.is_none());
        mark_done_unless_held(&mut tx, &done).await?;
        for outcome in failed {
            mark(&mut tx, outcome).await?;
        }
    } else {
        for outcome in outcomes {
            mark(&mut tx, outcome).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Marks `done` jobs (of any lane) on PostgreSQL, a few statements for the lot, skipping rows a projection
/// batch holds (as [`settle`] says).
async fn mark_done_unless_held(tx: &mut Tx<'_>, done: &[&Outcome]) -> Result<(), StoreError> {
    let mut remaining = done;
    while !remaining.is_empty() {
        let (chunk, rest) = remaining.split_at(rows::statement_rows(remaining.len()));
        remaining = rest;
        // Counted also when its projection half cancelled it meanwhile (its act's event).
        let sql = format!(
            "UPDATE process_jobs AS j SET done = true, attempts = j.attempts + 1, last_error = NULL
               FROM (SELECT p.process, p.job_id FROM process_jobs AS p
                       JOIN (VALUES {}) AS v (process, job_id, position)
                         ON p.process = v.process AND p.job_id = v.job_id
                      WHERE p.position = v.position OR p.done
                        FOR UPDATE OF p SKIP LOCKED) AS held
              WHERE j.process = held.process AND j.job_id = held.job_id",
            rows::parameter_rows(true, chunk.len(), 3)
        );
        on_tx!(tx, |conn| {
            let mut query = sqlx::query(&sql);
            for (job, _) in chunk {
                query = query.bind(job.process).bind(&job.id).bind(job.position);
            }
            query.execute(conn).await?;
        });
    }
    Ok(())
}

/// Marks one job of a round in `tx`, as [`settle`] says (on PostgreSQL, a failed one).
async fn mark(tx: &mut Tx<'_>, (job, failure): &Outcome) -> Result<(), StoreError> {
    let process = job.process;
    match failure {
        None => {
            // Counted also when its projection half cancelled it meanwhile (its act's event).
            let sql = "UPDATE process_jobs SET done = true, attempts = attempts + 1, last_error = NULL
                       WHERE process = $1 AND job_id = $2 AND (position = $3 OR done)";
            on_tx!(tx, |conn| {
                sqlx::query(sql).bind(process).bind(&job.id).bind(job.position).execute(conn).await?;
            });
        }
        Some((error, pause)) => {
            // On PostgreSQL unless a projection batch holds the row (as `settle` says).
            let sql = if rows::numbered(tx) {
                "UPDATE process_jobs AS j SET attempts = j.attempts + 1, last_error = $3, due_at = $4,
                        claimed_until = 0
                   FROM (SELECT process, job_id FROM process_jobs
                          WHERE process = $1 AND job_id = $2 AND position = $5 FOR UPDATE SKIP LOCKED) AS held
                  WHERE j.process = held.process AND j.job_id = held.job_id"
            } else {
                "UPDATE process_jobs SET attempts = attempts + 1, last_error = $3, due_at = $4,
                        claimed_until = 0
                  WHERE process = $1 AND job_id = $2 AND position = $5"
            };
            let due_at = Utc::now() + *pause;
            on_tx!(tx, |conn| {
                sqlx::query(sql)
                    .bind(process)
                    .bind(&job.id)
                    .bind(error.to_string())
                    .bind(due_at.timestamp_millis())
                    .bind(job.position)
                    .execute(conn)
                    .await?;
            });
        }
    }
    Ok(())
}

/// The pause before a job that failed `attempts` times (counting this one) is tried again:
/// one second, doubling, at most [`MAX_RETRY_PAUSE`].
pub fn retry_pause(attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(0);
    Duration::from_secs(1u64 << doublings).min(MAX_RETRY_PAUSE)
}

/// When the earliest pending job of `process` may be claimed: when it is due, or when another
/// process's claim on it runs out (`None` when none is pending). Read from the head of the due
/// index, [`HEAD`] rows: past them every job is due no sooner than the last one read, so a head
/// of claimed jobs answers that last due (a look then, which finds the claims or their end).
async fn earliest(store: &Store, process: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let sql = "SELECT due_at, claimed_until FROM process_jobs WHERE process = $1 AND NOT done
                ORDER BY due_at LIMIT $2";
    let head: Vec<(i64, i64)> = colloquy_infra::on_pool!(store, |pool| {
        sqlx::query_as(sql).bind(process).bind(HEAD).fetch_all(pool).await?
    });
    Ok(earliest_of(&head, HEAD).map(|due| DateTime::from_timestamp_millis(due).unwrap_or_default()))
}

/// The earliest time any of `head` (pending jobs' due and claim, by due; `full` rows when more
/// may follow) may be claimed.
fn earliest_of(head: &[(i64, i64)], full: i64) -> Option<i64> {
    let soonest = head.iter().map(|(due, claimed_until)| *due.max(claimed_until)).min()?;
    let more = i64::try_from(head.len()).is_ok_and(|rows| rows >= full);
    Some(match head.last() {
        Some((last_due, _)) if more => soonest.min(*last_due),
        _ => soonest,
    })
}

/// Rows [`earliest`] reads: more than the jobs rounds of a few processes claim at once.
const HEAD: i64 = 4 * JOBS_PER_ROUND;

/// The longest [`run`] sleeps without looking: a safety net for jobs written where it could not
/// see them (a projector of another process, another process's retry).
const LONGEST_SLEEP: Duration = Duration::from_secs(30);

/// What a round's acts came to: each job, with its error and pause when it failed.
type Outcome = (Job, Option<(ActError, Duration)>);

/// The jobs acted on whose marks are not written yet, by process, id and the position that set
/// them: a round on SQLite (which reads its jobs, not claims them) reads past them, and a round
/// waits while too many are.
#[derive(Debug, Clone, Default)]
struct Unsettled(Arc<std::sync::Mutex<HashSet<UnsettledJob>>>);

/// A job's process, id and the position that set it.
type UnsettledJob = (&'static str, String, i64);

impl Unsettled {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<UnsettledJob>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.set().len()
    }

    fn copy(&self) -> HashSet<UnsettledJob> {
        self.set().clone()
    }

    fn add(&self, outcomes: &[Outcome]) {
        self.set().extend(outcomes.iter().map(|(job, _)| (job.process, job.id.clone(), job.position)));
    }

    fn remove(&self, outcomes: &[Outcome]) {
        let mut set = self.set();
        for (job, _) in outcomes {
            set.remove(&(job.process, job.id.clone(), job.position));
        }
    }
}

/// Writes the marks of the rounds `run` hands it, as they come: the rounds that came while one
/// mark was written are marked together next (on SQLite in one transaction, which waits its turn
/// for the read models' writer behind the projectors' batches, so rounds need not wait for it).
async fn settle_rounds(
    store: Store,
    name: String,
    mut rounds: mpsc::UnboundedReceiver<Vec<Outcome>>,
    unsettled: Unsettled,
) {
    while let Some(mut outcomes) = rounds.recv().await {
        while let Ok(more) = rounds.try_recv() {
            outcomes.extend(more);
        }
        if let Err(error) = settle(&store, &outcomes).await {
            // On PostgreSQL their jobs are taken again once their claim runs out; on SQLite at
            // the next round.
            tracing::warn!(process = %name, %error, "a round's jobs could not be marked");
        }
        unsettled.remove(&outcomes);
    }
}

/// Acts on `job` of `process`, with its origin.
async fn act(process: Arc<dyn Process>, job: Job) -> (Job, Result<(), ActError>) {
    let outcome = process.act(&job, &origin(process.actor_id(), &job)).await;
    (job, outcome)
}

/// Acts on the jobs of `lanes` (the processes of one projection half) as they fall due, until
/// `stop`: a round takes each lane's due jobs, as many as its [`Pace`] says, the first lane's
/// first, and acts on each lane's at that lane's pace, so that an earlier lane's jobs (a timer's
/// deadline) never wait behind a later one's backlog (the events its clocks have still to see);
/// behind a full round of an earlier lane, a later lane still takes one wave of jobs, so it
/// never starves. It sleeps until the earliest pending job is due, or
/// until `recorded` moves (the projection half's checkpoint: it may have recorded jobs), at most
/// [`POLL`] apart, and at the longest [`LONGEST_SLEEP`]. Marks are written by a task of their own
/// while the next rounds act. A deadline lane's round acted on late is noted in `deadlines`.
pub async fn run(
    store: Store,
    lanes: Vec<Arc<dyn Process>>,
    mut recorded: watch::Receiver<i64>,
    mut stop: watch::Receiver<bool>,
    deadlines: Deadlines,
) -> Result<(), ProjectionError> {
    let name = lanes.iter().map(|lane| lane.name()).collect::<Vec<_>>().join("+");
    let unsettled = Unsettled::default();
    let (to_settle, rounds) = mpsc::unbounded_channel();
    let settler = tokio::spawn(settle_rounds(store.clone(), name.clone(), rounds, unsettled.clone()));
    loop {
        if *stop.borrow() {
            drop(to_settle);
            let _ = settler.await;
            return Ok(());
        }
        if unsettled.len() >= MOST_UNSETTLED {
            tokio::time::sleep(POLL).await;
            continue;
        }
        let now = Utc::now();
        // Each lane's due jobs, up to its pace, the first lane first: behind a lane that filled
        // its round (a backlog of deadlines), a later lane takes one wave (its `at_once`), so it
        // never starves; a lane that filled its share may have more due.
        let mut jobs = Vec::with_capacity(lanes.len());
        let mut full = false;
        for lane in &lanes {
            let pace = lane.pace();
            let wave = i64::try_from(pace.at_once).unwrap_or(i64::MAX);
            let room = if full { wave.min(pace.jobs_per_round) } else { pace.jobs_per_round };
            let claimed = claim(&store, lane.name(), room, now, &unsettled).await?;
            full |= i64::try_from(claimed.len()).unwrap_or(i64::MAX) >= room;
            let earliest = claimed.iter().map(|job| job.due_at).min();
            if let Some(due) = earliest.filter(|_| pace.deadlines).and_then(DateTime::from_timestamp_millis) {
                deadlines.note(due, now);
            }
            jobs.push(claimed);
        }
        // A round's jobs are acted on together, each lane's a few at a time at its own pace (a
        // light lane's acts never queue behind a heavy lane's): each is another job id, and two
        // on one aggregate queue on its slot in the repository.
        let acted: usize = jobs.iter().map(Vec::len).sum();
        let mut acts = futures::stream::select_all(lanes.iter().zip(jobs).map(|(lane, jobs)| {
            let lane = Arc::clone(lane);
            let at_once = lane.pace().at_once;
            futures::stream::iter(jobs).map(move |job| act(Arc::clone(&lane), job)).buffer_unordered(at_once)
        }));
        let mut outcomes = Vec::with_capacity(acted);
        while let Some((job, outcome)) = acts.next().await {
            let failure = outcome.err().map(|error| {
                let pause = retry_pause(job.attempts + 1);
                tracing::warn!(process = job.process, job = %job.id, %error, retry_in_s = pause.as_secs(), "a job failed; it will be tried again");
                (error, pause)
            });
            outcomes.push((job, failure));
        }
        drop(acts);
        if !outcomes.is_empty() {
            unsettled.add(&outcomes);
            if to_settle.send(outcomes).is_err() {
                return Err(ProjectionError::Store(StoreError::Corrupt(format!(
                    "{name}: its marks' task ended"
                ))));
            }
        }
        if full {
            continue;
        }
        let mut soonest = None;
        for lane in &lanes {
            if let Some(due) = earliest(&store, lane.name()).await? {
                soonest = Some(soonest.map_or(due, |soonest: DateTime<Utc>| soonest.min(due)));
            }
        }
        let sleep = match soonest {
            Some(due) => (due - Utc::now()).to_std().unwrap_or_default().min(LONGEST_SLEEP),
            None => LONGEST_SLEEP,
        };
        if sleep.is_zero() {
            // Due, but left by `claim` for a later round (the limit), not marked yet, or retried
            // already.
            tokio::time::sleep(POLL).await;
            continue;
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(sleep) => {}
            _ = recorded.changed() => tokio::time::sleep(POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_claim_is_a_due_or_the_end_of_a_claim_and_never_later_than_an_unread_job() {
        // Due at 10, claimed until 25; due at 20: the one due at 20 comes first.
        assert_eq!(earliest_of(&[(10, 25), (20, 0)], 4), Some(20));
        // Both claimed past the next: the first claim's end.
        assert_eq!(earliest_of(&[(10, 25), (20, 30)], 4), Some(25));
        // A full head of claims: jobs past it may be due from the last due on.
        assert_eq!(earliest_of(&[(10, 25), (20, 30)], 2), Some(20));
        assert_eq!(earliest_of(&[], 2), None);
    }

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
