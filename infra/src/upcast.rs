//! Upcasters: how an event stored in an older shape is read in the current one. An event's
//! stored shape is a contract (its `event_version`); a change to it adds an upcaster here
//! instead of a second event type, and every reader gets the current shape through
//! `StoredEvent::decode` (`event.rs`), which applies them. Stored events are never rewritten
//! (docs/adr/0006).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use serde_json::Value;

/// Reads one stored version of one event type as the next version.
pub trait Upcaster: Send + Sync + 'static {
    /// The aggregate type whose event it reads (`conversation`, `contact`, `group`).
    fn aggregate_type(&self) -> &str;
    /// The event type it reads (`MessageAdded`).
    fn event_type(&self) -> &str;
    /// The version it reads.
    fn source_version(&self) -> &str;
    /// The version it returns.
    fn target_version(&self) -> &str;
    /// The payload (`{"<event_type>": {fields}}`) in `target_version`'s shape, or why it cannot be.
    fn upcast(&self, payload: Value) -> Result<Value, String>;
}

/// The upcasters of the events this build stores, oldest change first. None yet: every event
/// type is at the version it was first stored at.
fn built_in() -> Vec<Arc<dyn Upcaster>> {
    Vec::new()
}

static REGISTRY: OnceLock<RwLock<Vec<Arc<dyn Upcaster>>>> = OnceLock::new();

/// Whether any upcaster is known: when none is, a read looks nothing up (and takes no lock).
static ANY: AtomicBool = AtomicBool::new(false);

fn registry() -> &'static RwLock<Vec<Arc<dyn Upcaster>>> {
    REGISTRY.get_or_init(|| {
        let upcasters = built_in();
        ANY.store(!upcasters.is_empty(), Ordering::Release);
        RwLock::new(upcasters)
    })
}

/// Adds `upcaster` to those every read applies: for tests that bump a version without a second
/// build of the domain.
#[cfg(feature = "testing")]
pub fn register(upcaster: Arc<dyn Upcaster>) {
    registry().write().unwrap_or_else(|p| p.into_inner()).push(upcaster);
    ANY.store(true, Ordering::Release);
}

/// The upcaster that reads `version` of `event_type` of `aggregate_type`, if one does.
fn next(aggregate_type: &str, event_type: &str, version: &str) -> Option<Arc<dyn Upcaster>> {
    let registry = registry();
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    let upcasters = registry.read().unwrap_or_else(|p| p.into_inner());
    upcasters
        .iter()
        .find(|u| {
            u.aggregate_type() == aggregate_type
                && u.event_type() == event_type
                && u.source_version() == version
        })
        .cloned()
}

/// Whether `version` of the event type is read as it is stored (no upcaster reads it): the
/// common case, which costs one look-up and no copy.
pub(crate) fn is_current(aggregate_type: &str, event_type: &str, version: &str) -> bool {
    next(aggregate_type, event_type, version).is_none()
}

/// `payload`, stored at `version`, brought to the latest version the upcasters reach: the
/// version and the payload, or why an upcaster refused it.
pub(crate) fn upcast(
    aggregate_type: &str,
    event_type: &str,
    version: &str,
    mut payload: Value,
) -> Result<(String, Value), String> {
    let mut version = version.to_owned();
    // A chain of upcasters (1.0 to 2.0 to 3.0); the bound stops a cycle among them.
    for _ in 0..64 {
        let Some(upcaster) = next(aggregate_type, event_type, &version) else {
            return Ok((version, payload));
        };
        payload = upcaster.upcast(payload)?;
        version = upcaster.target_version().to_owned();
    }
    Err(format!("the upcasters of {event_type} {version} form a cycle"))
}
