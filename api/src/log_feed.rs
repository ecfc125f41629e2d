//! One reader of the global log for all of a process's event streams: each time the head moves
//! it reads what is new, once, for every tenant, and hands it to every open stream, which keeps
//! its tenant's events. Before, each stream read the log on every head move: a thousand open
//! streams made a thousand queries per commit.
//!
//! A stream reads the log itself only to catch up (it starts behind the head, or it missed
//! batches because it fell more than [`CAPACITY`] batches behind) and then follows the feed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use tokio::sync::broadcast;

use colloquy_infra::{GlobalLog, StoredEvent};

/// Events read from the log per read.
const BATCH: i64 = 500;

/// How many batches the feed holds for a stream that has not taken them yet; one that falls
/// further behind reads the log itself until it has caught up.
pub const CAPACITY: usize = 256;

/// What one read of the log found: the events after position `after`, through `last`, each
/// with its tenant.
#[derive(Debug)]
pub struct Batch {
    /// The position the read started after.
    pub after: i64,
    /// The position of the last event read.
    pub last: i64,
    /// The events, in order, each with its tenant.
    pub events: Vec<(Option<String>, StoredEvent)>,
}

/// The shared reader. Cloning shares it.
#[derive(Debug, Clone)]
pub struct LogFeed {
    log: GlobalLog,
    batches: broadcast::Sender<Arc<Batch>>,
    started: Arc<Once>,
    reads: Arc<AtomicU64>,
    /// Held by every clone: the reader ends once the last is dropped and no stream listens
    /// (a restarted webhook supervisor makes a feed of its own).
    alive: Arc<()>,
}

impl LogFeed {
    /// A feed of `log`; its reader starts with the first subscriber.
    pub fn new(log: GlobalLog) -> Self {
        Self {
            log,
            batches: broadcast::channel(CAPACITY).0,
            started: Arc::new(Once::new()),
            reads: Arc::new(AtomicU64::new(0)),
            alive: Arc::new(()),
        }
    }

    /// Batches read from now on, in order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        let receiver = self.batches.subscribe();
        self.started.call_once(|| {
            let alive = Arc::downgrade(&self.alive);
            tokio::spawn(read(self.log.clone(), self.batches.clone(), self.reads.clone(), alive));
        });
        receiver
    }

    /// Reads of the log made for event streams, by the feed and by streams catching up.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Counts a read a stream made itself.
    pub fn count_read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
}

/// The reader: follows the head, and reads what is new while any stream listens, until its feed
/// is gone and no stream listens.
async fn read(
    log: GlobalLog,
    batches: broadcast::Sender<Arc<Batch>>,
    reads: Arc<AtomicU64>,
    alive: std::sync::Weak<()>,
) {
    let mut head = log.watch_head();
    let mut cursor = log.head();
    loop {
        let known = *head.borrow_and_update();
        // With no stream listening, nothing is read: a stream that subscribes later catches up
        // from where it is on its own.
        if batches.receiver_count() == 0 {
            if alive.strong_count() == 0 {
                return;
            }
            cursor = known;
        }
        if cursor >= known {
            if head.changed().await.is_err() {
                return;
            }
            continue;
        }
        reads.fetch_add(1, Ordering::Relaxed);
        match log.read(cursor, BATCH, None).await {
            Ok(events) => {
                let Some(last) = events.last().and_then(|e| e.position) else {
                    // The head is ahead of what this read saw: read again shortly.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let events = events.into_iter().map(|event| (event.tenant_id(), event)).collect();
                let _ = batches.send(Arc::new(Batch { after: cursor, last, events }));
                cursor = last;
            }
            Err(error) => {
                if log.store().is_closed() {
                    return;
                }
                tracing::warn!(%error, "the event streams' reader could not read the log; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
