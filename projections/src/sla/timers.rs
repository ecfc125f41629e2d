//! The `sla_timers` table: every SLA timer of every conversation, folded from the `sla` streams,
//! with its state, breach and next deadline; and each running timer's job in `process_jobs`,
//! due at its next deadline (a warning or the breach), which the timer service acts on.

use std::collections::BTreeMap;

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

/// A timer as a batch folds it.
#[derive(Debug)]
struct Folding {
    timer: Timer,
    /// The ids of the event that set its times and of that event's correlation: its jobs'
    /// cause.
    cause: (Option<String>, Option<String>),
    /// The position of the last event folded into it.
    position: i64,
    /// The batch's last event folded into it (`None`: none yet, it is as stored).
    last: Option<StoredEvent>,
}

/// A batch's `sla` events folded into their timers: the timers the batch does not start read
/// together first, and each written once, with its job, at the end ([`Timers::write`]).
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// By tenant, conversation and timer id; `None` for a timer that never started.
    folding: BTreeMap<(String, String, String), Option<Folding>>,
}

impl Timers {
    /// Reads, in a few statements, every stored timer that `events` (a batch's `sla` events, in
    /// order) move before starting it: one read a batch, not one a timer.
    pub(super) async fn read_before(
        &mut self,
        tx: &mut Tx<'_>,
        events: &[(&StoredEvent, SlaEvent)],
    ) -> Result<(), ProjectionError> {
        let mut started = std::collections::BTreeSet::new();
        let mut wanted = std::collections::BTreeSet::new();
        for (stored, event) in events {
            let Some(timer_id) = event.timer_id() else { continue };
            let key =
                (stored.tenant_id().unwrap_or_default(), stored.aggregate_id.clone(), timer_id.to_owned());
            if matches!(event, SlaEvent::SlaTimerStarted { .. }) {
                started.insert(key);
            } else if !started.contains(&key) && !self.folding.contains_key(&key) {
                wanted.insert(key);
            }
        }
        let wanted: Vec<_> = wanted.into_iter().collect();
        let mut remaining = &wanted[..];
        while !remaining.is_empty() {
            let (chunk, rest) = remaining.split_at(crate::rows::statement_rows(remaining.len()));
            remaining = rest;
            let sql = format!(
                "SELECT tenant_id, conversation_id, timer_id, timer, position, cause_id, correlation_id
                   FROM sla_timers WHERE (tenant_id, conversation_id, timer_id) IN (VALUES {})",
                crate::rows::parameter_rows(crate::rows::numbered(tx), chunk.len(), 3)
            );
            type Found = (String, String, String, String, i64, Option<String>, Option<String>);
            let rows: Vec<Found> = on_tx!(tx, |conn| {
                let mut query = sqlx::query_as(&sql);
                for (tenant, conversation, timer_id) in chunk {
                    query = query.bind(tenant).bind(conversation).bind(timer_id);
                }
                query.fetch_all(conn).await?
            });
            // A key with no row stays unread: the event that moves it says so in the log.
            for (tenant, conversation, timer_id, json, position, cause_id, correlation_id) in rows {
                let timer: Timer = serde_json::from_str(&json).map_err(encode)?;
                let folding = Folding { timer, cause: (cause_id, correlation_id), position, last: None };
                self.folding.insert((tenant, conversation, timer_id), Some(folding));
            }
        }
        Ok(())
    }

    /// Folds one `sla` event into its timer, read before ([`Timers::read_before`]); whether it
    /// moved one (and so the conversation's inbox row, which [`show_in_inbox`] sets once the batch
    /// is written).
    pub(super) fn apply(&mut self, stored: &StoredEvent, event: SlaEvent) -> bool {
        let Some(timer_id) = event.timer_id().map(str::to_owned) else { return false };
        let key = (stored.tenant_id().unwrap_or_default(), stored.aggregate_id.clone(), timer_id);
        let position = stored.position.unwrap_or_default();
        // The event that set the timer's times: its warnings' and breach's cause.
        let sets_times = matches!(
            event,
            SlaEvent::SlaTimerStarted { .. }
                | SlaEvent::SlaTimerResumed { .. }
                | SlaEvent::SlaTimerRetargeted { .. }
        );
        let this_cause = (stored.metadata.str_field("event_id"), stored.metadata.str_field("correlation_id"));
        if let Some(timer) = Timer::started(event.clone()) {
            let last = Some(stored.clone());
            self.folding.insert(key, Some(Folding { timer, cause: this_cause, position, last }));
            return true;
        }
        if !self.folding.contains_key(&key) {
            tracing::warn!(conversation = %key.1, timer_id = %key.2, "an SLA event for a timer that never started");
            self.folding.insert(key.clone(), None);
        }
        let Some(Some(folding)) = self.folding.get_mut(&key) else { return false };
        // Already folded (a replayed batch).
        if folding.position >= position {
            return false;
        }
        folding.timer.apply(event);
        if sets_times {
            folding.cause = this_cause;
        }
        folding.position = position;
        folding.last = Some(stored.clone());
        true
    }

    /// Writes each timer the batch moved, and moves its job to its next deadline (or cancels
    /// it).
    pub(super) async fn write(self, tx: &mut Tx<'_>, process: &str) -> Result<(), ProjectionError> {
        let folded: Vec<_> = self
            .folding
            .into_iter()
            .filter_map(|((tenant, conversation, timer_id), folding)| {
                let folding = folding?;
                let last = folding.last.clone()?;
                Some((tenant, conversation, timer_id, folding, last))
            })
            .collect();
        let mut rows = Vec::with_capacity(folded.len());
        for (tenant, conversation, timer_id, folding, _) in &folded {
            let json = serde_json::to_string(&folding.timer).map_err(encode)?;
            rows.push((tenant, conversation, timer_id, folding, json));
        }
        let mut remaining = &rows[..];
        while !remaining.is_empty() {
            let (chunk, rest) = remaining.split_at(crate::rows::statement_rows(remaining.len()));
            remaining = rest;
            let sql = format!(
                "INSERT INTO sla_timers (tenant_id, conversation_id, timer_id, metric, state, breached, next_deadline,
                                        due_at, timer, cause_id, correlation_id, position)
                 VALUES {}
                 ON CONFLICT (tenant_id, conversation_id, timer_id) DO UPDATE SET
                   state = excluded.state, breached = excluded.breached, next_deadline = excluded.next_deadline,
                   due_at = excluded.due_at, timer = excluded.timer, cause_id = excluded.cause_id,
                   correlation_id = excluded.correlation_id, position = excluded.position
                 WHERE sla_timers.position < excluded.position",
                crate::rows::parameter_rows(crate::rows::numbered(tx), chunk.len(), 12)
            );
            on_tx!(tx, |conn| {
                let mut query = sqlx::query(&sql);
                for (tenant, conversation, timer_id, folding, json) in chunk {
                    let timer = &folding.timer;
                    query = query
                        .bind(*tenant)
                        .bind(*conversation)
                        .bind(*timer_id)
                        .bind(timer.metric.as_str())
                        .bind(state_name(timer.state))
                        .bind(timer.breached_at.is_some())
                        .bind(timer.next_deadline())
                        .bind(timer.due_at)
                        .bind(json)
                        .bind(&folding.cause.0)
                        .bind(&folding.cause.1)
                        .bind(folding.position);
                }
                query.execute(conn).await?;
            });
        }
        let (mut scheduled, mut cancelled) = (Vec::new(), Vec::new());
        for (tenant, conversation, timer_id, folding, last) in folded {
            let id = job_id(&tenant, &conversation, &timer_id);
            match folding.timer.next_deadline() {
                Some(due) => {
                    let job =
                        json!({ "kind": "fire", "conversation_id": conversation, "timer_id": timer_id });
                    if let Some(mut job) = NewJob::caused_by(&last, job) {
                        job.id = id;
                        job.subject = Some(format!("conversation/{conversation}"));
                        job.due_at = Some(due);
                        (job.causation_id, job.correlation_id) = folding.cause;
                        scheduled.push(job);
                    }
                }
                None => cancelled.push((id, folding.position)),
            }
        }
        processes::schedule(tx, process, &scheduled).await?;
        processes::cancel(tx, process, &cancelled).await?;
        Ok(())
    }
}

/// Sets the rows of [`INBOX_TABLE`] of the conversations whose timers a batch `moved` (by tenant
/// and conversation, with the position of the last event that moved them) to what their timers
/// amount to now, or removes those with none live: a few statements for the lot.
pub(super) async fn show_in_inbox(
    tx: &mut Tx<'_>,
    moved: &BTreeMap<(String, String), i64>,
) -> Result<(), ProjectionError> {
    let keys: Vec<&(String, String)> = moved.keys().collect();
    let mut live: BTreeMap<(String, String), Vec<Timer>> = BTreeMap::new();
    let mut remaining = &keys[..];
    while !remaining.is_empty() {
        let (chunk, rest) = remaining.split_at(crate::rows::statement_rows(remaining.len()));
        remaining = rest;
        let sql = format!(
            "SELECT tenant_id, conversation_id, timer FROM sla_timers
              WHERE (tenant_id, conversation_id) IN (VALUES {}) AND state IN ('running', 'paused')",
            crate::rows::parameter_rows(crate::rows::numbered(tx), chunk.len(), 2)
        );
        let rows: Vec<(String, String, String)> = on_tx!(tx, |conn| {
            let mut query = sqlx::query_as(&sql);
            for (tenant, conversation) in chunk {
                query = query.bind(tenant).bind(conversation);
            }
            query.fetch_all(conn).await?
        });
        for (tenant, conversation, json) in rows {
            live.entry((tenant, conversation))
                .or_default()
                .push(serde_json::from_str(&json).map_err(encode)?);
        }
    }
    let (mut shown, mut gone) = (Vec::new(), Vec::new());
    for (key, position) in moved {
        match live.get(key).and_then(Due::of) {
            Some(due) => shown.push((key, due, *position)),
            None => gone.push(key),
        }
    }
    let mut remaining = &shown[..];
    while !remaining.is_empty() {
        let (chunk, rest) = remaining.split_at(crate::rows::statement_rows(remaining.len()));
        remaining = rest;
        let sql = format!(
            "INSERT INTO sla_inbox (sla_tenant_id, sla_conversation_id, sla_state, sla_next_due_at, sla_position)
             VALUES {}
             ON CONFLICT (sla_tenant_id, sla_conversation_id) DO UPDATE SET
               sla_state = excluded.sla_state, sla_next_due_at = excluded.sla_next_due_at,
               sla_position = excluded.sla_position
             WHERE sla_inbox.sla_position < excluded.sla_position",
            crate::rows::parameter_rows(crate::rows::numbered(tx), chunk.len(), 5)
        );
        on_tx!(tx, |conn| {
            let mut query = sqlx::query(&sql);
            for ((tenant, conversation), due, position) in chunk {
                query = query
                    .bind(tenant)
                    .bind(conversation)
                    .bind(due.state.as_str())
                    .bind(due.next_due_at)
                    .bind(*position);
            }
            query.execute(conn).await?;
        });
    }
    let mut remaining = &gone[..];
    while !remaining.is_empty() {
        let (chunk, rest) = remaining.split_at(crate::rows::statement_rows(remaining.len()));
        remaining = rest;
        let sql = format!(
            "DELETE FROM sla_inbox WHERE (sla_tenant_id, sla_conversation_id) IN (VALUES {})",
            crate::rows::parameter_rows(crate::rows::numbered(tx), chunk.len(), 2)
        );
        on_tx!(tx, |conn| {
            let mut query = sqlx::query(&sql);
            for (tenant, conversation) in chunk {
                query = query.bind(tenant).bind(conversation);
            }
            query.execute(conn).await?;
        });
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
