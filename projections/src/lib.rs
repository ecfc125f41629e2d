//! Colloquy's read models and the runtime that feeds the global log into them. Each read model
//! owns its table, its fold over events and its queries (see ARCHITECTURE.md for why the SQL of a
//! read model lives here rather than in infra).

pub mod conversation_list;
pub mod deadlines;
pub mod deferred;
pub mod failure;
pub mod group_conversations;
pub mod group_members;
pub mod processes;
pub mod reports;
pub mod rows;
pub mod runtime;
pub mod sla;
pub mod snooze;
pub mod webhooks;

use std::sync::Arc;

pub use colloquy_infra::on_tx;
pub use runtime::{Applied, Fold, Projection, ProjectionError, Projector, RebuildLimits, Sealed, Tx};

/// Every projection, by name.
pub fn all() -> Vec<Arc<dyn Projection>> {
    let mut all: Vec<Arc<dyn Projection>> = vec![
        Arc::new(conversation_list::ConversationList),
        Arc::new(group_conversations::GroupConversations),
        Arc::new(group_members::GroupMembers),
        Arc::new(snooze::SnoozeTimers),
        Arc::new(sla::Sla),
        Arc::new(webhooks::Webhooks),
    ];
    // Every kept definition version's facts: the versions share tables, each its own rows.
    all.extend(reports::Reports::all().map(|reports| Arc::new(reports) as Arc<dyn Projection>));
    all
}

/// The runtimes' own tables: the secondary indexes a rebuild deferred (`deferred.rs`), and the
/// process managers' jobs (`processes.rs`).
pub const RUNTIME_TABLES: [&str; 2] = ["deferred_indexes", processes::JOBS_TABLE];

/// Every read-model table the projections and their runtime own: what a process that runs them
/// opens the store with ([`open_store`]).
pub fn read_model_tables() -> Vec<&'static str> {
    let mut tables: Vec<&'static str> = RUNTIME_TABLES.to_vec();
    for table in all().iter().flat_map(|p| p.tables().iter().copied()) {
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
    tables
}

/// Opens the store for a process that runs or rebuilds projections: on SQLite their tables
/// are moved into the read models' file first.
pub async fn open_store(
    location: &colloquy_infra::StoreLocation,
) -> Result<colloquy_infra::Store, colloquy_infra::StoreError> {
    colloquy_infra::Store::open_with_read_models(location, &read_model_tables()).await
}

/// Every process manager's actor half (each over its projection half in [`all`]; those over
/// one projection half are lanes of one runner, in this order: `processes::run`), commanding
/// conversations through `conversations` (the process's one repository of them, which the API
/// shares) and SLA clocks through `clocks`.
pub fn processes(
    store: &colloquy_infra::Store,
    conversations: Arc<colloquy_infra::Repository<colloquy_domain::Conversation>>,
    clocks: Arc<colloquy_infra::Repository<colloquy_domain::sla::ConversationSla>>,
) -> Vec<Arc<dyn processes::Process>> {
    let (fire, observe) = sla::SlaClocks::lanes(store.clone(), clocks);
    vec![
        Arc::new(group_conversations::GroupLeaveCloser::new(store.clone(), conversations.clone())),
        Arc::new(snooze::SnoozeWaker::new(conversations)),
        // The fire lane first: a deadline never waits behind the clocks' observe backlog.
        Arc::new(fire),
        Arc::new(observe),
    ]
}

/// The projection called `name`.
pub fn by_name(name: &str) -> Option<Arc<dyn Projection>> {
    all().into_iter().find(|p| p.name() == name)
}
