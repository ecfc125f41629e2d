//! SLA policies: what a conversation is promised (targets per metric, optionally per priority),
//! on which clock (a business calendar or every hour), with which warnings and pauses, and which
//! conversations it applies to (ordered conditions). Versioned as a [`Definition`]: an edit is a
//! new version, and timers started under an earlier one say which.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::channel::Channel;
use crate::conversation::{GroupType, Priority, Status};
use crate::definition::{Defined, Definition};
use crate::validate::{self, FieldError, MAX_SHORT_TEXT};

/// The most targets one policy has.
pub const MAX_TARGETS: usize = 40;
/// The most warnings one target has.
pub const MAX_WARNINGS: usize = 5;
/// The longest threshold: a year.
pub const MAX_THRESHOLD_SECONDS: i64 = 366 * 24 * 3600;
/// The most ids or labels one condition lists.
pub const MAX_CONDITION_VALUES: usize = 100;

/// What a target measures. Each is a clock that starts and stops on the conversation's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Metric {
    /// From the conversation's opening to the first qualifying reply. Once per conversation: a
    /// reopen starts none.
    FirstResponse,
    /// From a customer's message after the last qualifying reply to the next qualifying reply;
    /// one per customer wait. Resolving stops it.
    NextResponse,
    /// From the opening to the first resolution.
    FirstResolution,
    /// The time spent open across every cycle: resolving fulfils it, reopening starts a new cycle
    /// that carries the time already spent.
    TotalResolution,
    /// From an assignment to the assigned agent's first qualifying reply; one per assignment.
    AssignmentResponse,
}

impl Metric {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstResponse => "first_response",
            Self::NextResponse => "next_response",
            Self::FirstResolution => "first_resolution",
            Self::TotalResolution => "total_resolution",
            Self::AssignmentResponse => "assignment_response",
        }
    }
}

/// When to warn before a breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Warning {
    /// This many seconds (of the target's clock) before the breach.
    BeforeSeconds(#[serde(deserialize_with = "crate::whole::int")] i64),
    /// Once this percentage of the threshold has elapsed (1 to 99).
    Percent(#[serde(deserialize_with = "crate::whole::int")] u8),
}

impl Warning {
    /// How much of `threshold` has elapsed when the warning is due (never below zero).
    pub fn elapsed_at(self, threshold: i64) -> i64 {
        match self {
            Self::BeforeSeconds(before) => (threshold - before).max(0),
            Self::Percent(percent) => threshold * i64::from(percent) / 100,
        }
    }
}

/// What counts as a qualifying reply, and which clock a target runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Target {
    /// What it measures.
    pub metric: Metric,
    /// The priority it is for; none for every priority without a target of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// How long the clock may run before a breach, in its seconds (business seconds on a
    /// calendar).
    #[serde(deserialize_with = "crate::whole::int")]
    pub threshold_seconds: i64,
    /// Count only business hours: of `calendar_id`, or of the conversation's inbox's calendar
    /// (the tenant default when no calendar names the inbox; every hour when there is none).
    #[serde(default)]
    pub business_hours: bool,
    /// The calendar, when not the inbox's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar_id: Option<Uuid>,
    /// Warnings before the breach, each once.
    #[serde(default)]
    pub warnings: Vec<Warning>,
    /// The statuses that stop the clock until the conversation leaves them.
    #[serde(default = "default_pause_statuses")]
    pub pause_statuses: Vec<Status>,
    /// Whether a bot's (or AI assistant's) public reply counts as a reply.
    #[serde(default)]
    pub bot_replies_count: bool,
}

/// Pending and snoozed: the conversation waits on the customer or on a time, not on the team.
pub fn default_pause_statuses() -> Vec<Status> {
    vec![Status::Pending, Status::Snoozed]
}

/// Which conversations a policy applies to: every listed condition must hold; an empty list
/// holds for all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Conditions {
    /// In one of these inboxes.
    #[serde(default)]
    pub inbox_ids: Vec<String>,
    /// Over one of these channels.
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// At one of these priorities.
    #[serde(default)]
    pub priorities: Vec<Priority>,
    /// Carrying at least one of these labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Assigned to one of these teams.
    #[serde(default)]
    pub team_ids: Vec<String>,
    /// Only group chats, or only one-to-one conversations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_type: Option<GroupType>,
}

/// What of a conversation a policy's conditions and clocks read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// Its inbox.
    pub inbox_id: Option<String>,
    /// Its channel.
    pub channel: Option<Channel>,
    /// Its priority.
    pub priority: Priority,
    /// Its labels.
    pub labels: BTreeSet<String>,
    /// Its team.
    pub team_id: Option<String>,
    /// Group or one-to-one.
    pub group_type: GroupType,
}

impl Conditions {
    /// Whether `subject` meets every condition.
    pub fn hold_for(&self, subject: &Subject) -> bool {
        let listed = |values: &[String], value: Option<&String>| {
            values.is_empty() || value.is_some_and(|value| values.contains(value))
        };
        listed(&self.inbox_ids, subject.inbox_id.as_ref())
            && (self.channels.is_empty() || subject.channel.is_some_and(|c| self.channels.contains(&c)))
            && (self.priorities.is_empty() || self.priorities.contains(&subject.priority))
            && (self.labels.is_empty() || self.labels.iter().any(|label| subject.labels.contains(label)))
            && listed(&self.team_ids, subject.team_id.as_ref())
            && self.group_type.is_none_or(|group_type| group_type == subject.group_type)
    }
}

/// An SLA policy, as one version records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "Standard", "rank": 10, "enabled": true,
    "conditions": {"inbox_ids": ["support"]},
    "targets": [{"metric": "first_response", "threshold_seconds": 3600, "business_hours": true,
                 "warnings": [{"percent": 75}], "pause_statuses": ["pending", "snoozed"]},
                {"metric": "first_resolution", "threshold_seconds": 86400}]})))]
pub struct SlaPolicy {
    /// What people call it.
    pub name: String,
    /// Its place among the tenant's policies: the first (lowest rank) whose conditions hold
    /// applies.
    #[serde(default, deserialize_with = "crate::whole::int")]
    pub rank: i32,
    /// A disabled policy applies to nothing new.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Which conversations it applies to.
    #[serde(default)]
    pub conditions: Conditions,
    /// What it promises.
    pub targets: Vec<Target>,
}

fn enabled() -> bool {
    true
}

impl SlaPolicy {
    /// The target for `metric` at `priority`: the one for that priority, else the one for all.
    pub fn target(&self, metric: Metric, priority: Priority) -> Option<&Target> {
        let of_metric = || self.targets.iter().filter(move |target| target.metric == metric);
        of_metric()
            .find(|target| target.priority == Some(priority))
            .or_else(|| of_metric().find(|target| target.priority.is_none()))
    }
}

impl Definition for SlaPolicy {
    const TYPE: &'static str = "sla_policy";
    const NOUN: &'static str = "SLA policy";
    const EVENT_PREFIX: &'static str = "SlaPolicy";

    fn name(&self) -> &str {
        &self.name
    }

    fn validated(mut self) -> Result<Self, FieldError> {
        self.name = validate::text("name", &self.name, MAX_SHORT_TEXT, true)?;
        let conditions = &mut self.conditions;
        conditions.inbox_ids =
            validate::external_ids("conditions.inbox_ids", &conditions.inbox_ids, MAX_CONDITION_VALUES)?;
        conditions.team_ids =
            validate::external_ids("conditions.team_ids", &conditions.team_ids, MAX_CONDITION_VALUES)?;
        conditions.labels = validate::labels("conditions.labels", &conditions.labels)?;
        if self.targets.is_empty() || self.targets.len() > MAX_TARGETS {
            return Err(FieldError::new("targets", format!("must list 1 to {MAX_TARGETS} targets")));
        }
        let mut seen = BTreeSet::new();
        for target in &self.targets {
            if !seen.insert((target.metric, target.priority)) {
                return Err(FieldError::new(
                    "targets",
                    format!("{} has two targets for the same priority", target.metric.as_str()),
                ));
            }
            target_rules(target)?;
        }
        Ok(self)
    }
}

fn target_rules(target: &Target) -> Result<(), FieldError> {
    let field = |name: &str| format!("targets.{}.{name}", target.metric.as_str());
    if !(1..=MAX_THRESHOLD_SECONDS).contains(&target.threshold_seconds) {
        return Err(FieldError::new(
            field("threshold_seconds"),
            format!("must be 1 to {MAX_THRESHOLD_SECONDS} seconds"),
        ));
    }
    if target.calendar_id.is_some() && !target.business_hours {
        return Err(FieldError::new(
            field("calendar_id"),
            "names a calendar only when business_hours is true",
        ));
    }
    if target.warnings.len() > MAX_WARNINGS {
        return Err(FieldError::new(field("warnings"), format!("at most {MAX_WARNINGS} warnings")));
    }
    for warning in &target.warnings {
        let valid = match *warning {
            Warning::BeforeSeconds(before) => (1..target.threshold_seconds).contains(&before),
            Warning::Percent(percent) => (1..=99).contains(&percent),
        };
        if !valid {
            return Err(FieldError::new(
                field("warnings"),
                "before_seconds must be below the threshold and percent 1 to 99",
            ));
        }
    }
    if target.pause_statuses.contains(&Status::Open) {
        return Err(FieldError::new(field("pause_statuses"), "open cannot pause a clock"));
    }
    Ok(())
}

/// The SlaPolicy aggregate.
pub type SlaPolicyAggregate = Defined<SlaPolicy>;

/// A policy's version as the clocks read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// The policy.
    pub policy_id: Uuid,
    /// Its version.
    pub version: u32,
    /// What it says.
    pub policy: SlaPolicy,
}

/// The policy that applies to `subject`: among the enabled ones, the lowest rank whose
/// conditions hold (ties in the order given).
pub fn select<'a>(
    policies: impl IntoIterator<Item = &'a PolicyVersion>,
    subject: &Subject,
) -> Option<&'a PolicyVersion> {
    policies
        .into_iter()
        .filter(|version| version.policy.enabled && version.policy.conditions.hold_for(subject))
        .min_by_key(|version| version.policy.rank)
}
