//! The relay: tails the global log and hands every event, in order, to a transport. With NATS
//! the transport is a JetStream stream (one message per event, the event id as message id, so a
//! re-publish after a crash is dropped as a duplicate); without, an in-process bus. One loop,
//! two transports.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::watch;

use crate::bus::EventBus;
use crate::checkpoints;
use crate::envelope::{cloud_event, subject};
use crate::error::StoreError;
use crate::event::StoredEvent;
use crate::log::GlobalLog;
use crate::store::Store;

/// The relay's checkpoint name for JetStream.
pub const RELAY_CHECKPOINT: &str = "relay:jetstream";

/// Events per publish batch.
const BATCH: i64 = 512;

/// How often a busy JetStream relay saves its checkpoint.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Where the relay sends events.
#[derive(Debug, Clone)]
pub enum Transport {
    /// A JetStream stream.
    JetStream(Box<JetStreamTransport>),
    /// The in-process bus.
    Bus(EventBus),
}

/// Failures of the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// NATS failed.
    #[error("nats: {0}")]
    Nats(String),
    /// The JetStream stream holds another store's events.
    #[error("{0}")]
    OtherStore(String),
}

/// How a JetStream stream's description names the store it belongs to: this, then the store's
/// id. (The description, not the stream's metadata, which NATS servers before 2.10 drop.)
pub const STREAM_STORE_PREFIX: &str = "Colloquy events of store ";
/// The header of every published message that names the store it came from.
pub const STORE_HEADER: &str = "Colloquy-Store";

/// Where JetStream events go.
#[derive(Debug, Clone)]
pub struct JetStreamTransport {
    context: jetstream::Context,
    stream_name: String,
    subject_prefix: String,
    /// The store the stream is bound to ([`JetStreamTransport::bound_to`]); its id goes out in
    /// every message's [`STORE_HEADER`].
    store_id: Option<Arc<str>>,
}

/// The string a raw JSON value holds.
fn text_of(value: Option<&RawValue>) -> Option<String> {
    serde_json::from_str(value?.get()).ok()
}

impl JetStreamTransport {
    /// Connects and makes sure the stream exists (created if missing), capturing
    /// `<subject_prefix>.>`.
    pub async fn connect(url: &str, stream_name: &str, subject_prefix: &str) -> Result<Self, RelayError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(|e| RelayError::Nats(e.to_string()))?;
        let context = jetstream::new(client);
        context
            .get_or_create_stream(stream::Config {
                name: stream_name.to_owned(),
                subjects: vec![format!("{subject_prefix}.>")],
                // The relay resumes from its checkpoint, saved at least every few hundred
                // milliseconds while busy: the window covers what a crash republishes.
                duplicate_window: Duration::from_secs(600),
                ..Default::default()
            })
            .await
            .map_err(|e| RelayError::Nats(e.to_string()))?;
        Ok(Self {
            context,
            stream_name: stream_name.to_owned(),
            subject_prefix: subject_prefix.to_owned(),
            store_id: None,
        })
    }

    /// Binds the stream to `store`: a stream named by the store's id in its description is this
    /// store's; one naming another store is refused, loudly, since its events are not this
    /// store's (a restored backup, a reset database, another environment on the same NATS); one
    /// naming none (new, or made by a release before the binding) is bound now, if it is empty
    /// or its last message is this store's event at that position.
    pub async fn bound_to(mut self, store: &Store) -> Result<Self, RelayError> {
        let nats = |e: &dyn std::fmt::Display| RelayError::Nats(e.to_string());
        let mut stream = self.context.get_stream(&self.stream_name).await.map_err(|e| nats(&e))?;
        let info = stream.info().await.map_err(|e| nats(&e))?.clone();
        let refuse = |why: String| {
            RelayError::OtherStore(format!(
                "the JetStream stream {} {why}, not of this store ({}): give this store a stream of its own \
                 (COLLOQUY_NATS_STREAM and COLLOQUY_NATS_SUBJECT_PREFIX), or delete that stream if its events are \
                 no longer wanted",
                self.stream_name,
                store.id()
            ))
        };
        let bound = info.config.description.as_deref().and_then(|d| d.strip_prefix(STREAM_STORE_PREFIX));
        match bound {
            Some(bound) if bound == store.id() => {}
            Some(bound) => return Err(refuse(format!("holds the events of store {bound}"))),
            None => {
                if info.state.messages > 0 {
                    let last = stream.get_raw_message(info.state.last_sequence).await.map_err(|e| {
                        refuse(format!("holds events whose store cannot be told (its last message: {e})"))
                    })?;
                    let envelope: Value = serde_json::from_slice(&last.payload).unwrap_or_default();
                    let position = envelope.get("position").and_then(Value::as_i64).unwrap_or(0);
                    let id = envelope.get("id").and_then(Value::as_str).unwrap_or_default();
                    let ours = crate::log::read_page(store, position - 1, 1).await?;
                    let same = ours.first().is_some_and(|event| {
                        event.position == Some(position)
                            && event.metadata.str_field("event_id").as_deref() == Some(id)
                    });
                    if !same {
                        return Err(refuse(format!(
                            "holds events of another store (position {position} is not this store's)"
                        )));
                    }
                }
                let mut config = info.config.clone();
                config.description = Some(format!("{STREAM_STORE_PREFIX}{}", store.id()));
                self.context.update_stream(config).await.map_err(|e| nats(&e))?;
                tracing::info!(stream = %self.stream_name, store = store.id(), "bound the JetStream stream to this store");
            }
        }
        self.store_id = Some(store.id().into());
        Ok(self)
    }

    /// The id of the store the stream is bound to, once bound.
    pub fn store_id(&self) -> Option<&str> {
        self.store_id.as_deref()
    }

    /// The JetStream context.
    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// Checks that NATS is reachable and JetStream answers (the stream's info), within
    /// `timeout`, for readiness probes.
    pub async fn check(&self, timeout: Duration) -> Result<(), RelayError> {
        // A client that knows it is disconnected answers at once; asking JetStream would only
        // wait out the timeout.
        let state = self.context.client().connection_state();
        if state != async_nats::connection::State::Connected {
            return Err(RelayError::Nats(format!("not connected ({state})")));
        }
        match tokio::time::timeout(timeout, self.context.get_stream(&self.stream_name)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(RelayError::Nats(error.to_string())),
            Err(_) => Err(RelayError::Nats(format!("JetStream did not answer within {timeout:?}"))),
        }
    }

    /// The most bytes an envelope may have: what the server takes in one message
    /// (`max_payload`, 1 MiB unless configured otherwise; assumed while not yet connected), less
    /// room for the message's headers.
    fn max_envelope_bytes(&self) -> usize {
        const HEADERS: usize = 512;
        match self.context.client().server_info().max_payload {
            0 => (1 << 20) - HEADERS,
            max => max.saturating_sub(HEADERS),
        }
    }

    /// Publishes `events` in order and waits for every ack. An envelope larger than the server
    /// takes (an event near the 1 MiB body limit, or a server with a smaller `max_payload`) goes
    /// out without its `data`, naming in `dataref` where to read the event whole: refused, it
    /// would stop the relay at that event for good, and every consumer with it.
    async fn publish(&self, events: &[StoredEvent]) -> Result<(), RelayError> {
        let mut acks = Vec::with_capacity(events.len());
        let max = self.max_envelope_bytes();
        for event in events {
            let current = event.upcast_or_as_stored();
            let mut envelope = cloud_event(&current);
            let id = text_of(envelope.id).unwrap_or_default();
            let subject = subject(&self.subject_prefix, text_of(envelope.tenant).as_deref(), event);
            let mut payload = serde_json::to_vec(&envelope).unwrap_or_default();
            if payload.len() > max {
                tracing::warn!(
                    position = event.position,
                    bytes = payload.len(),
                    max,
                    "an event's envelope is larger than the NATS server takes: published without its data, \
                     with `dataref` naming where to read it"
                );
                envelope.data = None;
                envelope.dataref = event.position.map(|p| format!("/v1/events?after={}&limit=1", p - 1));
                payload = serde_json::to_vec(&envelope).unwrap_or_default();
            }
            let payload = Bytes::from(payload);
            let mut publish = PublishMessage::build().payload(payload).message_id(id);
            if let Some(store_id) = &self.store_id {
                publish = publish.header(STORE_HEADER, &**store_id);
            }
            let ack = self
                .context
                .send_publish(subject, publish)
                .await
                .map_err(|e| RelayError::Nats(e.to_string()))?;
            acks.push(ack);
        }
        // Published in order on one connection; waiting for every ack before the checkpoint
        // moves means a crash republishes at most this batch, which dedup then drops.
        for ack in acks {
            ack.await.map_err(|e| RelayError::Nats(e.to_string()))?;
        }
        Ok(())
    }
}

/// Advisory lock key that lets one JetStream relay at a time publish.
const RELAY_LOCK: i64 = 0x636f_6c6c_7265_6c61;

/// Runs the relay until `stop` turns true. For JetStream on PostgreSQL only one process relays
/// at a time (the others wait on an advisory lock, ready to take over).
pub async fn run(
    log: GlobalLog,
    transport: Transport,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RelayError> {
    let store = log.store().clone();
    // Held for as long as this relay runs; the lock goes with the connection if the process dies.
    let mut _leader = None;
    let mut cursor = match &transport {
        // The bus is in-process and new with the process: it carries what commits from now on;
        // projectors catch up on the rest from the store.
        Transport::Bus(_) => log.head(),
        Transport::JetStream(_) => {
            if let Some(pool) = store.postgres_pool() {
                let mut connection = pool.acquire().await.map_err(StoreError::from)?.detach();
                loop {
                    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                        .bind(RELAY_LOCK)
                        .fetch_one(&mut connection)
                        .await
                        .map_err(StoreError::from)?;
                    if locked {
                        break;
                    }
                    // What this process commits meanwhile is the leader's to publish.
                    drop(store.take_held());
                    if wait_or_stop(&mut stop, Duration::from_millis(500)).await {
                        return Ok(());
                    }
                }
                _leader = Some(connection);
            }
            // From the relay's own checkpoint, never the stream's last message: the stream may
            // have been purged, or hold another store's events. What it republishes after a crash
            // (at most what it relayed since its last save) the stream drops by `Nats-Msg-Id`.
            checkpoints::read(&store, RELAY_CHECKPOINT).await?
        }
    };
    let mut head = log.watch_head();
    // The JetStream checkpoint is saved when the relay falls idle, and at most every
    // `CHECKPOINT_EVERY` while it is busy: what it publishes again after a crash is within the
    // stream's duplicate window, and dropped there.
    let checkpointed = matches!(transport, Transport::JetStream(_));
    let mut saved = cursor;
    let mut saved_at = tokio::time::Instant::now();
    loop {
        if *stop.borrow() {
            if checkpointed && saved < cursor {
                checkpoints::save(&store, RELAY_CHECKPOINT, cursor).await?;
            }
            return Ok(());
        }
        // The head as this read begins: a commit of this process after it wakes the wait below.
        let known = *head.borrow_and_update();
        if let Transport::Bus(_) = &transport {
            // What the store's writer handed to the bus itself is not read back; where another
            // process's commit falls before it, projectors see the gap and catch up on it.
            cursor = cursor.max(store.handed());
            if cursor >= known {
                wait_for_head(&mut head, &mut stop).await;
                continue;
            }
        }
        let read_started = tokio::time::Instant::now();
        let events = match &transport {
            // This process's commits, as its writer handed them over, where they continue from
            // the cursor; the log where they do not.
            Transport::JetStream(_) => match continuing(store.take_held(), cursor) {
                handed if handed.is_empty() => log.read_stored(cursor, BATCH, None).await?,
                handed => handed,
            },
            Transport::Bus(_) => log.read_stored(cursor, BATCH, None).await?,
        };
        let Some(last) = events.last().and_then(|e| e.position) else {
            if checkpointed && saved < cursor {
                checkpoints::save(&store, RELAY_CHECKPOINT, cursor).await?;
                (saved, saved_at) = (cursor, tokio::time::Instant::now());
            }
            wait_for_head(&mut head, &mut stop).await;
            continue;
        };
        match &transport {
            Transport::Bus(bus) => bus.publish(&events),
            Transport::JetStream(jetstream) => {
                let publish_started = tokio::time::Instant::now();
                jetstream.publish(&events).await?;
                if tracing::enabled!(tracing::Level::DEBUG) {
                    tracing::debug!(
                        events = events.len(),
                        read_ms = (publish_started - read_started).as_secs_f64() * 1e3,
                        publish_ms = publish_started.elapsed().as_secs_f64() * 1e3,
                        oldest_age_ms = events.first().and_then(StoredEvent::age_ms),
                        "relayed"
                    );
                }
                if saved_at.elapsed() >= CHECKPOINT_EVERY {
                    checkpoints::save(&store, RELAY_CHECKPOINT, last).await?;
                    (saved, saved_at) = (last, tokio::time::Instant::now());
                }
            }
        }
        cursor = last;
        // A short page that reached this process's head leaves nothing to read until the head
        // moves: reading again at once would cost every commit a second, empty read. Another
        // process's commits are found by the wait's poll, as when idle.
        if events.len() < usize::try_from(BATCH).unwrap_or(usize::MAX) && cursor >= known {
            wait_for_head(&mut head, &mut stop).await;
        }
    }
}

/// Of the commits a writer held for the relay (oldest first), the events that continue exactly
/// from `cursor`: those at or before it are dropped, and at the first hole (another process's
/// commit, or one the writer did not hold) the rest is left to be read from the log. Positions
/// have no holes in the store, so events that continue one by one from the cursor miss nothing.
fn continuing(held: VecDeque<Vec<StoredEvent>>, cursor: i64) -> Vec<StoredEvent> {
    let mut next = cursor + 1;
    let mut events = Vec::new();
    for event in held.into_iter().flatten() {
        match event.position {
            Some(position) if position < next => {}
            Some(position) if position == next => {
                events.push(event);
                next += 1;
            }
            _ => break,
        }
    }
    events
}

/// Waits until this process's head moves, stop, or 50 ms (the poll for other processes' commits).
async fn wait_for_head(head: &mut watch::Receiver<i64>, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = head.changed() => {}
        _ = stop.changed() => {}
        () = tokio::time::sleep(Duration::from_millis(50)) => {}
    }
}

/// Waits `pause` or until stop; true when stopping.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => {}
        () = tokio::time::sleep(pause) => {}
    }
    *stop.borrow()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::event::tests::stored;

    fn commit(positions: std::ops::RangeInclusive<i64>) -> Vec<StoredEvent> {
        positions.map(|position| StoredEvent { position: Some(position), ..stored() }).collect()
    }

    fn positions(events: &[StoredEvent]) -> Vec<i64> {
        events.iter().filter_map(|e| e.position).collect()
    }

    #[test]
    fn held_commits_are_published_only_where_they_continue_from_the_cursor() {
        // Those already published are dropped, a commit overlapping the cursor gives its rest.
        let held = VecDeque::from([commit(1..=3), commit(4..=6), commit(7..=7)]);
        assert_eq!(positions(&continuing(held, 4)), [5, 6, 7]);
        // A hole (another process's commit at 4, or a commit not held) stops them there.
        let held = VecDeque::from([commit(1..=3), commit(5..=6), commit(7..=8)]);
        assert_eq!(positions(&continuing(held, 0)), [1, 2, 3]);
        let held = VecDeque::from([commit(5..=6)]);
        assert!(continuing(held, 3).is_empty());
        // An event without a position (never from a writer) stops them too.
        let mut unknown = commit(2..=2);
        unknown[0].position = None;
        assert_eq!(positions(&continuing(VecDeque::from([commit(1..=1), unknown, commit(3..=3)]), 0)), [1]);
        assert!(continuing(VecDeque::new(), 9).is_empty());
    }

    #[test]
    fn an_events_age_runs_from_its_recorded_at() {
        let mut event = stored();
        let recorded = chrono::Utc::now() - chrono::Duration::seconds(2);
        event.metadata =
            json!({"recorded_at": recorded.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}).into();
        let age = event.age_ms().expect("an age");
        assert!((2_000.0..3_000.0).contains(&age), "{age}");
        event.metadata = json!({"tenant_id": "acme"}).into();
        assert_eq!(event.age_ms(), None);
        event.metadata = json!({"recorded_at": "yesterday"}).into();
        assert_eq!(event.age_ms(), None);
    }
}
