//! Colloquy's read models and the runtime that feeds the global log into them. Each read model
//! owns its table, its fold over events and its queries (see ARCHITECTURE.md for why the SQL of a
//! read model lives here rather than in infra).

pub mod conversation_list;
pub mod deferred;
pub mod failure;
pub mod group_conversations;
pub mod group_members;
pub mod runtime;

use std::sync::Arc;

pub use runtime::{Applied, Fold, Projection, ProjectionError, Projector, RebuildLimits, Sealed, Tx};

/// Every projection, by name.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(conversation_list::ConversationList),
        Arc::new(group_conversations::GroupConversations),
        Arc::new(group_members::GroupMembers),
    ]
}

/// The projection called `name`.
pub fn by_name(name: &str) -> Option<Arc<dyn Projection>> {
    all().into_iter().find(|p| p.name() == name)
}
