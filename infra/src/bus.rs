//! The in-process bus: every relayed event, broadcast to this process's projectors (fed by the
//! relay without NATS, or by the JetStream feed with it).

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::event::StoredEvent;

/// The in-process bus: every relayed event, broadcast to this process's projectors.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<StoredEvent>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus that holds up to 8,192 events for slow subscribers (a subscriber that falls
    /// further behind catches up from the store).
    pub fn new() -> Self {
        Self { sender: broadcast::channel(8192).0 }
    }

    /// A new subscription, receiving events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.sender.subscribe()
    }

    /// Hands `events` to every subscriber.
    pub fn publish(&self, events: &[StoredEvent]) {
        for event in events {
            // No subscribers is fine: projectors catch up from the store when they start.
            let _ = self.sender.send(Arc::new(event.clone()));
        }
    }
}
