//! One subscription's deliveries, by the process that holds its lease: the tenant's log after
//! the cursor, the events it wants, in order, one request (or batch) at a time; the cursor moves
//! past a request once the subscriber answered 2xx (at least once: a crash between the two
//! sends it again, under the same `webhook-id`). A failure is retried with exponential backoff
//! and jitter, from the same events, until it has failed for the retry period; then the
//! subscription is paused with the reason and resumes from there when told to.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{broadcast, watch};

use colloquy_domain::webhook::ContentMode;
use colloquy_domain::TenantId;
use colloquy_infra::envelope::{cloud_event, cloud_event_json};
use colloquy_infra::{secrets, GlobalLog, StoreError, StoredEvent};
use colloquy_projections::webhooks::deliveries::Delivery;
use colloquy_projections::webhooks::state::{self, State, Step};
use colloquy_projections::webhooks::Subscription;

use super::send::{Message, Sender};
use super::Settings;

/// Events read from the log at a time.
const READ: i64 = 500;

/// The most events in a batched request.
const BATCH_EVENTS: usize = 100;

/// The most bytes of events in a batched request (one larger event goes alone).
const BATCH_BYTES: usize = 1024 * 1024;

/// How long secrets are used before they are read again: a rotation in another process signs
/// within this, as does a deletion; one in this process at once ([`secrets_changed`]).
const SECRETS_FOR: Duration = Duration::from_secs(1);

/// Moved on by each rotation in this process, so that no task signs with what it read before.
static SECRETS_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Tells this process's deliveries that a secret was rotated or deleted: they read the secrets
/// again before their next request (a deleted subscription's has none, and sends no more).
pub fn secrets_changed() {
    SECRETS_GENERATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

fn secrets_generation() -> u64 {
    SECRETS_GENERATION.load(std::sync::atomic::Ordering::SeqCst)
}

/// The longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The pause before attempt `attempts + 1`: `base` doubled per attempt made, at most an hour,
/// with full jitter in its upper half (so that subscribers failing together do not retry in step).
pub fn backoff(base: Duration, attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(30);
    let pause = base.saturating_mul(1 << doublings).min(MAX_BACKOFF);
    let half = pause / 2;
    half + half.mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
}

/// What a holder works with.
pub struct Holder {
    /// The log.
    pub log: GlobalLog,
    /// The process's one reader of the log's new events, which the holders follow.
    pub feed: crate::log_feed::LogFeed,
    /// This process's lease name.
    pub name: String,
    /// The requests' client.
    pub sender: Sender,
    /// Retry and safety settings.
    pub settings: Settings,
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Why a subscription's task ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Told to stop (the process stops, or it was deleted or made inactive).
    Stopped,
    /// Another process holds it now, or it is paused.
    LostLease,
}

/// The event's id, as its CloudEvent names it.
fn event_id(event: &StoredEvent) -> String {
    cloud_event(event)
        .id
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        .unwrap_or_else(|| format!("position-{}", event.position.unwrap_or_default()))
}

/// The events at the buffer's front that one request carries, and the cursor after it: the
/// unwanted ones before and among them are passed over.
fn next_request(buffer: &VecDeque<StoredEvent>, subscription: &Subscription) -> (Vec<usize>, Option<i64>) {
    let most = match subscription.webhook.content_mode {
        ContentMode::Structured => 1,
        ContentMode::Batched => BATCH_EVENTS,
    };
    let (mut taken, mut bytes, mut through) = (Vec::new(), 0usize, None);
    for (at, event) in buffer.iter().enumerate() {
        if subscription.webhook.wants(&event.aggregate_type, &event.event_type) {
            let size = event.payload.raw().get().len() + event.metadata.raw().get().len();
            if taken.len() == most || (!taken.is_empty() && bytes + size > BATCH_BYTES) {
                break;
            }
            bytes += size;
            taken.push(at);
        }
        through = event.position;
    }
    (taken, through)
}

/// What a holder has done and not yet written: the cursor's move over the requests taken (and
/// the events passed over) since the last write, and the attempts made. Written at most every
/// [`WRITE_EVERY`] or [`WRITE_ATTEMPTS`] attempts, at a failure, and before any wait, in one
/// transaction: a crash sends the unwritten requests again (at least once, as ever).
#[derive(Default)]
struct Unwritten {
    moved: Option<Step>,
    attempts: Vec<Delivery>,
    since: Option<tokio::time::Instant>,
}

/// The longest a holder goes without writing what it delivered.
const WRITE_EVERY: Duration = Duration::from_millis(100);

/// The most attempts a holder keeps unwritten.
const WRITE_ATTEMPTS: usize = 200;

impl Unwritten {
    fn moved_to(&mut self, to: i64, count: i64, at: i64) {
        let count = match self.moved {
            Some(Step::Delivered { count: before, .. }) => before + count,
            _ => count,
        };
        self.moved = Some(Step::Delivered { to, count, at });
        self.since.get_or_insert_with(tokio::time::Instant::now);
    }

    fn due(&self) -> bool {
        self.attempts.len() >= WRITE_ATTEMPTS
            || self.since.is_some_and(|since| since.elapsed() >= WRITE_EVERY)
    }

    fn is_empty(&self) -> bool {
        self.moved.is_none() && self.attempts.is_empty()
    }

    /// Whether to write before waiting: something was sent (what was only passed over is
    /// written when due, or by the next write).
    fn worth_writing_now(&self) -> bool {
        !self.attempts.is_empty() || matches!(self.moved, Some(Step::Delivered { count, .. }) if count > 0)
    }
}

/// A holder's subscription, as it goes.
struct Held<'a> {
    holder: &'a Holder,
    key: (&'a str, &'a str),
    state: State,
    /// The cursor as stored (`state.cursor` runs ahead of it by what is unwritten).
    stored: i64,
    unwritten: Unwritten,
}

impl Held<'_> {
    /// Writes what is unwritten, with `failed` after it: false when the lease was lost or the
    /// cursor moved by an operator (the state is then read again, and the caller starts over
    /// from it; `Err(Ended)` when it is no longer this holder's).
    async fn write(&mut self, failed: Option<Step>) -> Result<Result<bool, Ended>, StoreError> {
        if self.unwritten.is_empty() && failed.is_none() {
            return Ok(Ok(true));
        }
        let unwritten = std::mem::take(&mut self.unwritten);
        let steps: Vec<Step> = unwritten.moved.into_iter().chain(failed).collect();
        let store = self.holder.log.store();
        let written =
            state::record(store, self.key, &self.holder.name, self.stored, (&steps, &unwritten.attempts))
                .await?;
        if written {
            self.stored = self.state.cursor;
            return Ok(Ok(true));
        }
        match reread(store, self.key, &self.holder.name).await? {
            Some(reread) if reread.paused_at.is_none() => {
                self.stored = reread.cursor;
                self.state = reread;
                Ok(Ok(false))
            }
            _ => Ok(Err(Ended::LostLease)),
        }
    }
}

/// Delivers `subscription` until told to stop or it loses its lease; `state` as claimed.
pub async fn run(
    holder: &Holder,
    mut subscription: watch::Receiver<Subscription>,
    state: State,
    mut stop: watch::Receiver<bool>,
) -> Result<Ended, StoreError> {
    let current = subscription.borrow().clone();
    let (tenant, id) = (current.tenant_id.clone(), current.id.clone());
    let tenant_id =
        TenantId::parse(&tenant).map_err(|e| StoreError::Corrupt(format!("webhook {id}: {e}")))?;
    let store = holder.log.store().clone();
    let mut held =
        Held { holder, key: (&tenant, &id), stored: state.cursor, state, unwritten: Unwritten::default() };
    let mut batches = holder.feed.subscribe();
    let mut arrived: Option<std::sync::Arc<crate::log_feed::Batch>> = None;
    // Whether the log was read up to the head (the feed then continues from there), and the
    // last position looked at.
    let (mut following, mut seen) = (false, held.state.cursor);
    let mut buffer: VecDeque<StoredEvent> = VecDeque::new();
    let mut renewed = tokio::time::Instant::now();
    let mut secrets_read: Option<(tokio::time::Instant, u64, secrets::Secrets)> = None;
    macro_rules! write {
        ($failed:expr) => {
            match held.write($failed).await? {
                Ok(true) => {}
                Ok(false) => {
                    buffer.clear();
                    (following, seen) = (false, held.state.cursor);
                    continue;
                }
                Err(ended) => return Ok(ended),
            }
        };
    }
    loop {
        if *stop.borrow() {
            write!(None);
            return Ok(Ended::Stopped);
        }
        let now = now_ms();
        // The lease is renewed at a third of its length, with what is delivered written first.
        let lease = holder.settings.lease;
        if renewed.elapsed() > lease / 3 {
            write!(None);
            let until = now + i64::try_from(lease.as_millis()).unwrap_or(30_000);
            match state::claim(&store, held.key, &holder.name, (now, until)).await? {
                Some(claimed) => {
                    if claimed.cursor != held.state.cursor {
                        // An operator moved it (a replay) since the last write.
                        buffer.clear();
                        (following, seen) = (false, claimed.cursor);
                    }
                    held.stored = claimed.cursor;
                    held.state = claimed;
                }
                None => return Ok(Ended::LostLease),
            }
            renewed = tokio::time::Instant::now();
        }
        // Waiting for a retry: woken at its time, and each second to see an operator's change.
        if held.state.next_attempt_at > now {
            let wait = Duration::from_millis(u64::try_from(held.state.next_attempt_at - now).unwrap_or(0));
            tokio::select! {
                _ = stop.changed() => {}
                () = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
            }
            match reread(&store, held.key, &holder.name).await? {
                Some(reread) if reread.paused_at.is_none() => {
                    if reread.cursor != held.state.cursor {
                        buffer.clear();
                        (following, seen) = (false, reread.cursor);
                    }
                    held.stored = reread.cursor;
                    held.state = reread;
                }
                _ => return Ok(Ended::LostLease),
            }
            continue;
        }
        if held.unwritten.due() {
            write!(None);
        }
        if buffer.is_empty() {
            // All that was seen is delivered: the cursor passes what was not this tenant's.
            if seen > held.state.cursor {
                held.unwritten.moved_to(seen, 0, now);
                held.state.cursor = seen;
            }
            // Following the process's one reader of the log while its batches continue from
            // the cursor; reading the log here to catch up otherwise.
            let mut gap = !following;
            while buffer.is_empty() && !gap {
                let batch = match arrived.take().map_or_else(|| batches.try_recv(), Ok) {
                    Ok(batch) => batch,
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                    Err(broadcast::error::TryRecvError::Closed) => {
                        gap = true;
                        break;
                    }
                };
                let cursor = held.state.cursor;
                if batch.last <= cursor {
                    continue;
                }
                if batch.after > cursor {
                    gap = true;
                    break;
                }
                let ours = batch.events.iter().filter(|(owner, event)| {
                    owner.as_deref() == Some(tenant.as_str()) && event.position.unwrap_or_default() > cursor
                });
                buffer.extend(ours.map(|(_, event)| event.clone()));
                seen = batch.last;
                if buffer.is_empty() {
                    held.unwritten.moved_to(seen, 0, now);
                    held.state.cursor = seen;
                }
            }
            if buffer.is_empty() && gap {
                // What this read does not find up to the head as it was before it, is not there.
                let head_before = holder.log.head();
                let read = holder.log.read(held.state.cursor, READ, Some(&tenant_id)).await?;
                following = read.is_empty();
                match read.last().and_then(|event| event.position) {
                    Some(last) => seen = last,
                    None => seen = seen.max(head_before),
                }
                buffer.extend(read);
            }
            if buffer.is_empty() {
                if held.unwritten.worth_writing_now() {
                    write!(None);
                }
                tokio::select! {
                    _ = stop.changed() => {}
                    received = batches.recv() => match received {
                        Ok(batch) => arrived = Some(batch),
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => following = false,
                    },
                    // Now and then the log itself is read, whatever the feed says.
                    () = tokio::time::sleep(Duration::from_secs(1)) => following = false,
                }
                continue;
            }
        }
        let subscription_now = subscription.borrow_and_update().clone();
        let (taken, through) = next_request(&buffer, &subscription_now);
        let Some(through) = through else {
            buffer.clear();
            continue;
        };
        if taken.is_empty() {
            held.unwritten.moved_to(through, 0, now);
            buffer.clear();
            held.state.cursor = through;
            continue;
        }
        let fresh = secrets_read.as_ref().is_some_and(|(read_at, generation, _)| {
            read_at.elapsed() < SECRETS_FOR && *generation == secrets_generation()
        });
        if !fresh {
            let generation = secrets_generation();
            let Some(read) = secrets::get(&store, &tenant, &id).await? else {
                // Deleted meanwhile (its secret goes first); the supervisor stops this task.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            secrets_read = Some((tokio::time::Instant::now(), generation, read));
        }
        let Some((_, _, secrets)) = secrets_read.as_ref() else { continue };
        let events: Vec<&StoredEvent> = taken.iter().map(|at| &buffer[*at]).collect();
        let (step, delivery) = attempt(holder, &subscription_now, (&held.state, now), &events, secrets).await;
        held.unwritten.attempts.push(delivery);
        match step {
            Step::Delivered { to, count, at } => {
                held.unwritten.moved_to(to, count, at);
                while buffer.front().is_some_and(|event| event.position.unwrap_or_default() <= to) {
                    buffer.pop_front();
                }
                held.state.cursor = to;
                held.state.delivered += count;
                super::stats::delivered(count);
                held.state.delivered_at = Some(at);
            }
            Step::Failed { at, ref error, retry_at, ref pause } => {
                let paused = pause.clone();
                held.state.last_error = Some(error.clone());
                write!(Some(step.clone()));
                if paused.is_some() {
                    tracing::warn!(tenant = %tenant, webhook = %id, reason = ?paused, "webhook paused");
                    return Ok(Ended::LostLease);
                }
                held.state.failing_since = held.state.failing_since.or(Some(at));
                held.state.attempts += 1;
                held.state.next_attempt_at = retry_at;
            }
        }
    }
}

/// The stored state, if this holder still holds it.
async fn reread(
    store: &colloquy_infra::Store,
    key: (&str, &str),
    name: &str,
) -> Result<Option<State>, StoreError> {
    Ok(state::read(store, key.0, key.1).await?.filter(|state| state.leased_by.as_deref() == Some(name)))
}

/// Sends `events`: the step it makes, and the attempt to log.
async fn attempt(
    holder: &Holder,
    subscription: &Subscription,
    (state, now): (&State, i64),
    events: &[&StoredEvent],
    secrets: &secrets::Secrets,
) -> (Step, Delivery) {
    let (first, last) = (events[0], events[events.len() - 1]);
    let (content_type, body, message_id) = match subscription.webhook.content_mode {
        ContentMode::Structured => {
            ("application/cloudevents+json", cloud_event_json(first).into_bytes(), event_id(first))
        }
        ContentMode::Batched => {
            let body =
                format!("[{}]", events.iter().map(|e| cloud_event_json(e)).collect::<Vec<_>>().join(","));
            let id = format!("{}.{}", event_id(first), events.len());
            ("application/cloudevents-batch+json", body.into_bytes(), id)
        }
    };
    let message = Message {
        url: &subscription.webhook.url,
        id: &message_id,
        content_type,
        body,
        secrets: secrets.signing(now),
    };
    let sent = holder.sender.send(message).await;
    let attempt_number = state.attempts + 1;
    let delivery = Delivery {
        id: uuid::Uuid::now_v7().to_string(),
        attempted_at: now,
        kind: "events".into(),
        message_id,
        first_position: first.position,
        last_position: last.position,
        events: i32::try_from(events.len()).unwrap_or(i32::MAX),
        attempt: attempt_number,
        outcome: if sent.delivered() { "delivered" } else { "failed" }.into(),
        status_code: sent.status.map(i32::from),
        error: sent.error.clone(),
        latency_ms: sent.latency_ms,
        response_excerpt: sent.excerpt.clone(),
    };
    let through = last.position.unwrap_or_default();
    let Some(error) = sent.error else {
        return (
            Step::Delivered { to: through, count: i64::try_from(events.len()).unwrap_or(0), at: now },
            delivery,
        );
    };
    let at = now_ms();
    let since = state.failing_since.unwrap_or(at);
    let retry_for = i64::try_from(holder.settings.retry_for.as_millis()).unwrap_or(i64::MAX);
    let pause = (at - since >= retry_for).then(|| {
        format!(
            "deliveries failed for {} s ({attempt_number} attempts) from position {}; the last: {error}",
            (at - since) / 1000,
            first.position.unwrap_or_default()
        )
    });
    let wait = backoff(holder.settings.retry_base, attempt_number);
    let retry_at = at + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
    (Step::Failed { at, error, retry_at, pause }, delivery)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_an_hour() {
        let base = Duration::from_secs(5);
        for attempts in 1..40 {
            let pause = backoff(base, attempts);
            let full = base.saturating_mul(1 << (attempts - 1).min(30)).min(MAX_BACKOFF);
            assert!(pause >= full / 2 && pause <= full, "attempt {attempts}: {pause:?} of {full:?}");
        }
        assert!(backoff(base, 30) <= MAX_BACKOFF);
    }
}
