//! The `sla_timers` table: every SLA timer of every conversation, folded from the `sla` streams,
//! with its state, breach and next deadline; and each running timer's job in `process_jobs`,
//! due at its next deadline (a warning or the breach), which the timer service acts on.

use serde_json::json;
use sqlx::Row;

use colloquy_domain::sla::{Due, SlaEvent, Timer, TimerState};
use colloquy_domain::TenantId;
use colloquy_infra::{Store, StoreError, StoredEvent};

use crate::on_tx;
use crate::processes::{self, NewJob};
use crate::runtime::{ProjectionError, Tx};

/// The table.
pub const TABLE: &str = "sla_timers";

/// What the inbox shows of each conversation's SLA ([`Due`]), joined to its list.
pub const INBOX_TABLE: &str = "sla_inbox";

/// The job that fires `timer_id` of `conversation`, one per timer.
pub fn job_id(tenant: &str, conversation: &str, timer_id: &str) -> String {
    format!("fire/{tenant}/{conversation}/{timer_id}")
}

fn state_name(state: TimerState) -> &'static str {
    match state {
        TimerState::Running => "running",
        TimerState::Paused => "paused",
        TimerState::Fulfilled => "fulfilled",
        TimerState::Cancelled => "cancelled",
    }
}

fn encode(error: serde_json::Error) -> ProjectionError {
    ProjectionError::from(sqlx::Error::Decode(Box::new(error)))
}

/// Folds one `sla` event into its timer's row and moves the timer's job to its next deadline.
pub(super) async fn apply(
    tx: &mut Tx<'_>,
    process: &str,
    stored: &StoredEvent,
    event: SlaEvent,
) -> Result<(), ProjectionError> {
    let Some(timer_id) = event.timer_id().map(str::to_owned) else { return Ok(()) };
    let tenant = stored.tenant_id().unwrap_or_default();
    let conversation = stored.aggregate_id.as_str();
    let position = stored.position.unwrap_or_default();
    // The event that set the timer's times: its warnings' and breach's cause.
    let sets_times = matches!(
        event,
        SlaEvent::SlaTimerStarted { .. }
            | SlaEvent::SlaTimerResumed { .. }
            | SlaEvent::SlaTimerRetargeted { .. }
    );
    let this_cause = (stored.metadata.str_field("event_id"), stored.metadata.str_field("correlation_id"));
    let (timer, cause) = match Timer::started(event.clone()) {
        Some(timer) => (timer, this_cause),
        None => {
            let sql = "SELECT timer, position, cause_id, correlation_id FROM sla_timers
                        WHERE tenant_id = $1 AND conversation_id = $2 AND timer_id = $3";
            type Found = (String, i64, Option<String>, Option<String>);
            let found: Option<Found> = on_tx!(tx, |conn| {
                sqlx::query_as(sql)
                    .bind(&tenant)
                    .bind(conversation)
                    .bind(&timer_id)
                    .fetch_optional(conn)
                    .await?
            });
            match found {
                // Already folded (a replayed batch).
                Some((_, at, _, _)) if at >= position => return Ok(()),
                Some((json, _, cause_id, correlation_id)) => {
                    let mut timer: Timer = serde_json::from_str(&json).map_err(encode)?;
                    timer.apply(event);
                    (timer, if sets_times { this_cause } else { (cause_id, correlation_id) })
                }
                None => {
                    tracing::warn!(%conversation, %timer_id, "an SLA event for a timer that never started");
                    return Ok(());
                }
            }
        }
    };
    let sql = "INSERT INTO sla_timers (tenant_id, conversation_id, timer_id, metric, state, breached, next_deadline,
                                      due_at, timer, cause_id, correlation_id, position)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
               ON CONFLICT (tenant_id, conversation_id, timer_id) DO UPDATE SET
                 state = excluded.state, breached = excluded.breached, next_deadline = excluded.next_deadline,
                 due_at = excluded.due_at, timer = excluded.timer, cause_id = excluded.cause_id,
                 correlation_id = excluded.correlation_id, position = excluded.position
               WHERE sla_timers.position < excluded.position";
    let json = serde_json::to_string(&timer).map_err(encode)?;
    let deadline = timer.next_deadline();
    on_tx!(tx, |conn| {
        sqlx::query(sql)
            .bind(&tenant)
            .bind(conversation)
            .bind(&timer_id)
            .bind(timer.metric.as_str())
            .bind(state_name(timer.state))
            .bind(timer.breached_at.is_some())
            .bind(deadline)
            .bind(timer.due_at)
            .bind(&json)
            .bind(&cause.0)
            .bind(&cause.1)
            .bind(position)
            .execute(conn)
            .await?;
    });
    show_in_inbox(tx, &tenant, conversation, position).await?;
    let id = job_id(&tenant, conversation, &timer_id);
    match deadline {
        Some(due) => {
            let job = json!({ "kind": "fire", "conversation_id": conversation, "timer_id": timer_id });
            if let Some(mut job) = NewJob::caused_by(stored, job) {
                job.id = id;
                job.subject = Some(format!("conversation/{conversation}"));
                job.due_at = Some(due);
                (job.causation_id, job.correlation_id) = cause;
                processes::schedule(tx, process, &job).await?;
            }
        }
        None => processes::cancel(tx, process, &id, position).await?,
    }
    Ok(())
}

/// Sets the conversation's row of [`INBOX_TABLE`] to what its timers amount to now (for the
/// event at `position`), or removes it when none is live.
async fn show_in_inbox(
    tx: &mut Tx<'_>,
    tenant: &str,
    conversation: &str,
    position: i64,
) -> Result<(), ProjectionError> {
    let sql = "SELECT timer FROM sla_timers WHERE tenant_id = $1 AND conversation_id = $2 AND state IN ('running', 'paused')";
    let live: Vec<String> =
        on_tx!(tx, |conn| sqlx::query_scalar(sql).bind(tenant).bind(conversation).fetch_all(conn).await?);
    let live = live.iter().map(|json| serde_json::from_str::<Timer>(json)).collect::<Result<Vec<_>, _>>();
    match Due::of(&live.map_err(encode)?) {
        Some(due) => {
            let sql = "INSERT INTO sla_inbox (sla_tenant_id, sla_conversation_id, sla_state, sla_next_due_at, sla_position)
                       VALUES ($1, $2, $3, $4, $5)
                       ON CONFLICT (sla_tenant_id, sla_conversation_id) DO UPDATE SET
                         sla_state = excluded.sla_state, sla_next_due_at = excluded.sla_next_due_at,
                         sla_position = excluded.sla_position
                       WHERE sla_inbox.sla_position < excluded.sla_position";
            on_tx!(tx, |conn| {
                let query = sqlx::query(sql).bind(tenant).bind(conversation).bind(due.state.as_str());
                query.bind(due.next_due_at).bind(position).execute(conn).await?;
            });
        }
        None => {
            let sql = "DELETE FROM sla_inbox WHERE sla_tenant_id = $1 AND sla_conversation_id = $2";
            on_tx!(tx, |conn| {
                sqlx::query(sql).bind(tenant).bind(conversation).execute(conn).await?;
            });
        }
    }
    Ok(())
}

/// The timers of `conversation` of `tenant`, in the order they started.
pub async fn of_conversation(
    store: &Store,
    tenant: &TenantId,
    conversation: &str,
) -> Result<Vec<Timer>, StoreError> {
    let sql = "SELECT timer FROM sla_timers WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY position";
    let rows = colloquy_infra::on_pool!(store, |pool| {
        let rows = sqlx::query(sql).bind(tenant.as_str()).bind(conversation).fetch_all(pool).await?;
        rows.iter().map(|row| row.try_get::<String, _>("timer")).collect::<Result<Vec<_>, _>>()?
    });
    rows.iter()
        .map(|json| {
            serde_json::from_str(json).map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))
        })
        .collect()
}
