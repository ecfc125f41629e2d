//! The `snooze_timers` process manager: a conversation snoozed until a time reopens at that time
//! (`StatusChanged` to open, reason `SnoozeExpired`), whether or not a process was running then:
//! a timer due while every process was down fires when one starts.
//!
//! - [`SnoozeTimers`], the projection half, keeps one timer per conversation in `process_jobs`:
//!   a timed snooze schedules it for `snoozed_until` (a later snooze moves it), and any other
//!   status change, or the conversation's deletion, cancels it.
//! - [`SnoozeWaker`], the actor half, sends `WakeFromSnooze` when it is due. The aggregate
//!   decides: a conversation no longer snoozed, or deleted, records nothing, so a timer that fires
//!   twice (a crash, two processes) reopens the conversation once.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use colloquy_domain::conversation::Status;
use colloquy_domain::{Conversation, ConversationCommand, ConversationError, ConversationEvent};
use colloquy_infra::{CommandError, Intent, Origin, Repository, StoredEvent};

use crate::processes::{self, ActError, Job, NewJob, Pace, Process};
use crate::runtime::{Projection, ProjectionError, Tx};

/// The projection's (and its checkpoint's, and its jobs') name.
pub const NAME: &str = "snooze_timers";

/// The actor recorded on the reopening events.
pub const WAKER_ACTOR: &str = "snooze-timer";

/// Keeps each snoozed conversation's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnoozeTimers;

/// A conversation's one timer: keyed by tenant and id, since ids are the tenant's own.
fn timer_id(stored: &StoredEvent) -> Option<String> {
    Some(format!("{}/{}", stored.tenant_id()?, stored.aggregate_id))
}

/// A batch's last word on a conversation's timer.
enum Word {
    /// Set it, as this job.
    Set(NewJob),
    /// Cancel it, at this position.
    Cancel(i64),
}

#[async_trait::async_trait]
impl Projection for SnoozeTimers {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handles(&self, event: &StoredEvent) -> bool {
        event.aggregate_type == "conversation"
            && matches!(event.event_type.as_str(), "StatusChanged" | "ConversationDeleted")
    }

    async fn apply(&self, tx: &mut Tx<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        // Each conversation's last word in the batch: a timer to set, or to cancel (at the
        // position of the event that cancels it), written in a statement or two for the batch.
        let mut last: BTreeMap<String, Word> = BTreeMap::new();
        for stored in events.iter().filter(|e| self.handles(e)) {
            let Some(timer) = timer_id(stored) else {
                tracing::warn!(conversation = %stored.aggregate_id, "a status change without a tenant");
                continue;
            };
            let position = stored.position.unwrap_or_default();
            match stored.decode::<ConversationEvent>()? {
                ConversationEvent::StatusChanged {
                    to: Status::Snoozed, snoozed_until: Some(until), ..
                } => {
                    let job = json!({ "conversation_id": stored.aggregate_id });
                    if let Some(mut job) = NewJob::caused_by(stored, job) {
                        job.id = timer.clone();
                        job.due_at = Some(until);
                        last.insert(timer, Word::Set(job));
                    }
                }
                _ => {
                    last.insert(timer, Word::Cancel(position));
                }
            }
        }
        let (mut scheduled, mut cancelled) = (Vec::new(), Vec::new());
        for (timer, word) in last {
            match word {
                Word::Set(job) => scheduled.push(job),
                Word::Cancel(position) => cancelled.push((timer, position)),
            }
        }
        processes::schedule(tx, NAME, &scheduled).await?;
        processes::cancel(tx, NAME, &cancelled).await?;
        Ok(())
    }

    /// Its state is its timers, kept in the process managers' `process_jobs`: nothing to clear.
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }
}

/// The actor half: wakes each conversation whose snooze is due, through the process's shared
/// repository of conversations.
#[derive(Debug, Clone)]
pub struct SnoozeWaker {
    conversations: Arc<Repository<Conversation>>,
}

impl SnoozeWaker {
    /// The waker, commanding conversations through `conversations` (the one the API uses).
    pub fn new(conversations: Arc<Repository<Conversation>>) -> Self {
        Self { conversations }
    }
}

#[async_trait::async_trait]
impl Process for SnoozeWaker {
    fn name(&self) -> &'static str {
        NAME
    }

    fn actor_id(&self) -> &'static str {
        WAKER_ACTOR
    }

    /// Snooze wake-ups are timers: one acted on late holds back background projections.
    fn pace(&self) -> Pace {
        Pace { deadlines: true, ..Pace::DEFAULT }
    }

    async fn act(&self, job: &Job, origin: &Origin) -> Result<(), ActError> {
        let id = job.job["conversation_id"]
            .as_str()
            .ok_or_else(|| ActError("a job without conversation_id".into()))?;
        let outcome = self
            .conversations
            .execute(id, ConversationCommand::WakeFromSnooze, Intent::Update, None, origin, |_, _| ())
            .await;
        match outcome {
            Ok(_) => Ok(()),
            // Woken, reopened or closed since, or gone: nothing to do.
            Err(
                CommandError::NotFound
                | CommandError::Rejected(ConversationError::NotSnoozed | ConversationError::Deleted(_)),
            ) => Ok(()),
            // Not yet (its clock is behind this one's): later.
            Err(other) => Err(ActError(other.to_string())),
        }
    }
}
