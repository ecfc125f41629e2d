//! The rules that turn a conversation's events, and its SLA clocks' events, into facts (see the
//! module's documentation for each metric's start and end).

use super::*;
use crate::conversation::{ConversationEvent, GroupType, Priority, SenderKind, Visibility};
use crate::hours::BusinessHours;
use crate::sla::SlaEvent;

fn priority_name(priority: Priority) -> &'static str {
    match priority {
        Priority::Low => "low",
        Priority::Medium => "medium",
        Priority::High => "high",
        Priority::Urgent => "urgent",
    }
}

/// What a message changes once its facts are decided.
struct AfterMessage {
    /// The customer wrote.
    wrote: bool,
    /// A person of the team replied.
    replied: bool,
    /// A bot replied.
    bot: bool,
}

/// Facts being decided for one event.
struct Deciding<'a> {
    /// The definition version decided by.
    version: u32,
    conversation: &'a ReportConversation,
    hours: &'a BusinessHours,
    now: Mark,
    facts: Vec<Fact>,
}

impl Deciding<'_> {
    /// A fact of `metric` from `start` to now; a duration's value and business value are its
    /// seconds.
    fn fact(&mut self, metric: Metric, start: Mark, kind: Option<&str>, agent_id: Option<&str>) -> &mut Fact {
        let (value, business_value) = if metric.is_duration() {
            let seconds = (self.now.at - start.at).num_seconds().max(0);
            (Some(seconds), Some(self.hours.elapsed(start.at, self.now.at)))
        } else {
            (None, None)
        };
        let mut dimensions = self.conversation.dimensions.clone();
        dimensions.agent_id = agent_id.map(str::to_owned).or_else(|| dimensions.assignee_id.clone());
        self.facts.push(Fact {
            metric,
            kind: kind.map(str::to_owned),
            conversation_id: self.conversation.conversation_id.clone(),
            contact_id: self.conversation.contact_id.clone(),
            value,
            business_value,
            started_at: start.at,
            ended_at: self.now.at,
            start_position: start.position,
            end_position: self.now.position,
            dimensions,
            supersedes: metric == Metric::FullResolution,
        });
        self.facts.last_mut().expect("just pushed")
    }

    fn count(&mut self, metric: Metric, kind: Option<&str>, agent_id: Option<&str>) {
        let now = self.now;
        self.fact(metric, now, kind, agent_id);
    }
}

impl ReportConversation {
    /// The inbox whose calendar times its facts.
    pub fn inbox_id(&self) -> Option<&str> {
        self.dimensions.inbox_id.as_deref()
    }

    /// Takes in one of the conversation's events, recorded at `position`, and returns the facts
    /// it ends under definition `version` (one of [`DEFINITIONS`]), timed on `hours`. An event
    /// before the opening was seen gives none.
    pub fn observe(
        &mut self,
        version: u32,
        event: &ConversationEvent,
        position: i64,
        hours: &BusinessHours,
    ) -> Vec<Fact> {
        let now = Mark { at: event.occurred_at(), position };
        if let ConversationEvent::ConversationOpened { .. } = event {
            self.open(event, now);
        } else if self.opened.is_none() {
            return Vec::new();
        }
        // Dimensions change first, so the facts an event ends carry what it set (a resolve by the
        // assignee it names).
        self.move_dimensions(event);
        let mut deciding = Deciding { version, conversation: self, hours, now, facts: Vec::new() };
        match event {
            ConversationEvent::ConversationOpened { .. } => {
                deciding.count(Metric::ConversationOpened, None, None)
            }
            ConversationEvent::MessageAdded { sender, visibility, .. } => {
                let after = deciding.message(sender.kind, sender.id.as_deref(), *visibility);
                let facts = deciding.facts;
                self.after_message(after, now);
                return facts;
            }
            ConversationEvent::StatusChanged { from, to, .. } => {
                deciding.status_changed(*from, *to);
                let facts = deciding.facts;
                self.move_status(*from, *to, now);
                return facts;
            }
            _ => {}
        }
        deciding.facts
    }

    /// Takes in one of its SLA clocks' events, recorded at `position`, and returns the outcome it
    /// records under definition `version`, if any (none before the conversation's opening was
    /// seen).
    pub fn observe_sla(
        &mut self,
        version: u32,
        event: &SlaEvent,
        position: i64,
        hours: &BusinessHours,
    ) -> Vec<Fact> {
        if self.opened.is_none() {
            return Vec::new();
        }
        let metric_of = |timer_id: &str| timer_id.split(':').next().unwrap_or(timer_id).to_owned();
        match event {
            SlaEvent::SlaTimerStarted { timer_id, started_at, .. } => {
                self.timers.insert(timer_id.clone(), Mark { at: *started_at, position });
                Vec::new()
            }
            SlaEvent::SlaTimerBreached { timer_id, at } => {
                let start = self.timers.get(timer_id).copied().unwrap_or(Mark { at: *at, position });
                let mut deciding = Deciding {
                    version,
                    conversation: self,
                    hours,
                    now: Mark { at: *at, position },
                    facts: vec![],
                };
                deciding.fact(Metric::SlaMiss, start, Some(&metric_of(timer_id)), None);
                deciding.facts
            }
            SlaEvent::SlaTimerFulfilled {
                timer_id,
                calendar_seconds,
                business_seconds,
                breached,
                at,
                ..
            } => {
                let start = self.timers.remove(timer_id).unwrap_or(Mark { at: *at, position });
                if *breached {
                    return Vec::new();
                }
                let mut deciding = Deciding {
                    version,
                    conversation: self,
                    hours,
                    now: Mark { at: *at, position },
                    facts: vec![],
                };
                let fact = deciding.fact(Metric::SlaHit, start, Some(&metric_of(timer_id)), None);
                // The clock's own count: its calendar (or 24x7) and its pauses.
                fact.value = Some(*calendar_seconds);
                fact.business_value = Some(*business_seconds);
                deciding.facts
            }
            SlaEvent::SlaTimerCancelled { timer_id, .. } => {
                self.timers.remove(timer_id);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn open(&mut self, event: &ConversationEvent, now: Mark) {
        let ConversationEvent::ConversationOpened {
            conversation_id,
            contact_id,
            channel,
            inbox_id,
            priority,
            status,
            labels,
            group_type,
            ..
        } = event
        else {
            return;
        };
        let mut labels = labels.clone();
        labels.sort();
        labels.dedup();
        *self = ReportConversation {
            conversation_id: conversation_id.to_string(),
            contact_id: contact_id.to_string(),
            dimensions: Dimensions {
                agent_id: None,
                assignee_id: None,
                team_id: None,
                inbox_id: inbox_id.clone(),
                channel: channel.as_str().to_owned(),
                priority: priority_name(*priority).to_owned(),
                labels,
                group: *group_type == GroupType::Group,
                bot: *status == Status::Bot,
            },
            opened: Some(now),
            status: *status,
            status_since: Some(now),
            cycle_started: Some(now),
            ..ReportConversation::default()
        };
    }

    fn move_dimensions(&mut self, event: &ConversationEvent) {
        let dimensions = &mut self.dimensions;
        match event {
            ConversationEvent::PriorityChanged { to, .. } => {
                dimensions.priority = priority_name(*to).to_owned()
            }
            ConversationEvent::ConversationAssigned { assignee_id, team_id, .. } => {
                dimensions.assignee_id = assignee_id.clone();
                dimensions.team_id = team_id.clone();
            }
            ConversationEvent::ConversationUnassigned { .. } => {
                dimensions.assignee_id = None;
                dimensions.team_id = None;
            }
            ConversationEvent::LabelsAdded { labels, .. } => {
                dimensions.labels.extend(labels.iter().cloned());
                dimensions.labels.sort();
                dimensions.labels.dedup();
            }
            ConversationEvent::LabelsRemoved { labels, .. } => {
                dimensions.labels.retain(|label| !labels.contains(label))
            }
            ConversationEvent::MessageAdded { sender, visibility: Visibility::Public, .. }
                if matches!(sender.kind, SenderKind::Bot | SenderKind::AiAssistant) =>
            {
                dimensions.bot = true;
            }
            ConversationEvent::StatusChanged { to: Status::Bot, .. } => dimensions.bot = true,
            _ => {}
        }
    }

    fn after_message(&mut self, after: AfterMessage, now: Mark) {
        if after.wrote {
            self.customer_wrote = true;
            if self.waiting.is_none() {
                self.waiting = Some(now);
            }
        }
        if after.replied {
            self.replied = true;
            self.cycle_human = true;
            self.waiting = None;
        }
        self.cycle_bot |= after.bot;
    }

    fn move_status(&mut self, from: Status, to: Status, now: Mark) {
        self.status = to;
        self.status_since = Some(now);
        if to == Status::Closed {
            self.resolved = Some(now);
            self.ever_resolved = true;
            self.waiting = None;
        } else if from == Status::Closed {
            self.cycle_started = Some(now);
            self.cycle_human = false;
            self.cycle_bot = false;
        }
        if from == Status::Bot && to != Status::Closed && !self.replied {
            self.handoff = Some(now);
        }
    }
}

impl Deciding<'_> {
    /// The facts a message ends, and what it changes afterwards.
    fn message(&mut self, kind: SenderKind, sender_id: Option<&str>, visibility: Visibility) -> AfterMessage {
        let conversation = self.conversation;
        let (mut wrote, mut replied, mut bot) = (false, false, false);
        match visibility {
            Visibility::Internal => self.count(Metric::PrivateNote, Some(kind.as_str()), sender_id),
            Visibility::Hidden => {}
            Visibility::Public if kind.is_incoming() => {
                self.count(Metric::IncomingMessage, Some(kind.as_str()), None);
                wrote = true;
            }
            Visibility::Public => {
                self.count(Metric::OutgoingMessage, Some(kind.as_str()), sender_id);
                bot = matches!(kind, SenderKind::Bot | SenderKind::AiAssistant);
                if kind == SenderKind::User {
                    replied = true;
                    if let Some(waiting) = conversation.waiting {
                        self.fact(Metric::ReplyTime, waiting, None, sender_id);
                    }
                    if !conversation.replied && conversation.customer_wrote {
                        let opened = conversation.opened.unwrap_or(self.now);
                        let start = conversation.handoff.unwrap_or(opened);
                        self.fact(Metric::FirstResponse, start, None, sender_id);
                    }
                }
            }
        }
        AfterMessage { wrote, replied, bot }
    }

    /// The facts a status change ends: the stay in the status left, a handoff, a resolution, a
    /// reopen.
    fn status_changed(&mut self, from: Status, to: Status) {
        let conversation = self.conversation;
        let now = self.now;
        let since = conversation.status_since.unwrap_or(now);
        match from {
            Status::Open => {
                self.fact(Metric::RequesterWait, since, Some(from.as_str()), None);
            }
            Status::Snoozed if self.version >= 2 => {
                self.fact(Metric::RequesterWait, since, Some(from.as_str()), None);
                self.fact(Metric::OnHold, since, Some(from.as_str()), None);
            }
            Status::Pending | Status::Snoozed => {
                self.fact(Metric::AgentWait, since, Some(from.as_str()), None);
            }
            Status::Closed | Status::Bot => {}
        }
        let cycle = conversation.cycle_started.unwrap_or(now);
        if from == Status::Bot && to != Status::Closed {
            self.fact(Metric::BotHandoff, cycle, None, None);
        }
        if to == Status::Closed && from != Status::Closed {
            self.fact(Metric::Resolution, cycle, None, None);
            let opened = conversation.opened.unwrap_or(now);
            if !conversation.ever_resolved {
                self.fact(Metric::FirstResolution, opened, None, None);
            }
            self.fact(Metric::FullResolution, opened, None, None);
            if from == Status::Bot || (conversation.cycle_bot && !conversation.cycle_human) {
                self.fact(Metric::BotResolution, cycle, None, None);
            }
        }
        if from == Status::Closed && to != Status::Closed {
            let resolved = conversation.resolved.unwrap_or(now);
            self.fact(Metric::ConversationReopened, resolved, None, None);
        }
    }
}
