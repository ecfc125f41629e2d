//! What a command is handled with: the time it happens at and who does it. Passed to
//! `Aggregate::handle` as its services, so the domain never reads a clock.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who issued a command, as recorded in every event's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// What kind of principal acted.
    pub kind: ActorKind,
    /// The principal's id (a token's principal, a user id, a process name).
    pub id: String,
}

/// The kinds of principal that issue commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// An API token acting for itself (an integration, a script).
    Token,
    /// A human agent, when a token acts on an agent's behalf.
    User,
    /// Colloquy itself: process managers, timers.
    System,
}

impl ActorKind {
    /// The snake_case name used in metadata and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::User => "user",
            Self::System => "system",
        }
    }

    /// Parses the name written by [`ActorKind::as_str`].
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "token" => Some(Self::Token),
            "user" => Some(Self::User),
            "system" => Some(Self::System),
            _ => None,
        }
    }
}

/// The per-command services: the instant the command is handled at and the acting principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    /// The time the command is handled at; every timestamp in the resulting events comes from it.
    pub now: DateTime<Utc>,
    /// Who issued the command.
    pub actor: Actor,
}

impl CommandContext {
    /// A context for `actor` at `now`.
    pub fn new(now: DateTime<Utc>, actor: Actor) -> Self {
        Self { now, actor }
    }
}
