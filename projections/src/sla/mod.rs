//! The `sla` process manager: the SLA clocks of every conversation, and the timer service that
//! records their warnings and breaches live.
//!
//! - [`Sla`], the projection half, keeps the tenant's calendars and policies
//!   ([`definitions`]) and every timer ([`timers`]) from the log; for each conversation event of
//!   a tenant with a policy it schedules an *observe* job for the conversation (one per
//!   conversation, due at once, or at most once a second while it is busy: [`OBSERVE_EVERY`]),
//!   and for each running timer a *fire* job due at its next deadline.
//! - [`SlaClocks`], the actor half, in two lanes, each a process of its own over this
//!   projection: the fire lane ([`FIRE`]) fires due timers ([`SlaCommand::Fire`]), feeding the
//!   clocks first what they have not seen; the observe lane ([`NAME`]) feeds a conversation's new
//!   events to its clocks ([`SlaCommand::Observe`], with the catalog as it stands). One runner
//!   takes each lane's due jobs in a round and acts on each lane's at its own pace (fires many
//!   at once: [`FIRE_PACE`]), so a fire never waits behind observe jobs due before it (an
//!   opening's burst, a busy mix), and observe jobs still take a wave of every round. Both commands record
//!   nothing when repeated, so a job acted on twice (a crash, two processes, both lanes)
//!   changes nothing the second time.
//!
//! The clocks' events go to the conversation's own `sla` stream (docs/adr/0007).

pub mod definitions;
pub mod timers;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use colloquy_domain::calendar::Calendar;
use colloquy_domain::sla::{Catalog, ConversationSla, SlaCommand, SlaError, SlaEvent, SlaPolicy};
use colloquy_domain::{Conversation, ConversationEvent, ConversationId, TenantId};
use colloquy_infra::{checkpoints, CommandError, Intent, Origin, Repository, Store, StoreError, StoredEvent};

use crate::processes::{self, ActError, Job, NewJob, Pace, Process};
use crate::runtime::{Projection, ProjectionError, Tx};

/// The projection's (and its checkpoint's, and its observe jobs') name.
pub const NAME: &str = "sla";

/// The fire lane's name: the process whose jobs are the timers' deadlines.
pub const FIRE: &str = "sla_fire";

/// The fire lane's pace ([`SlaClocks::pace`]): at 100,000 timers due over three minutes, 526
/// a second, the default pace fired about 440 a second beside the mix on SQLite, so the backlog
/// and every breach's lateness grew. This pace alone did not fix it (the reports took the CPU);
/// with the reports held back while fires are late, it did (BENCHMARKS.md, "Deadlines before
/// reports"; docs/adr/0014).
const FIRE_PACE: Pace = Pace { jobs_per_round: 200, at_once: 64, deadlines: true };

/// The actor recorded on the clocks' events.
pub const ACTOR: &str = "sla-clock";

/// The conversation events that can move a clock: the others (reads, reactions, edits,
/// deliveries, custom fields) schedule nothing.
const CLOCK_EVENTS: [&str; 9] = [
    "ConversationOpened",
    "PriorityChanged",
    "StatusChanged",
    "ConversationAssigned",
    "ConversationUnassigned",
    "LabelsAdded",
    "LabelsRemoved",
    "ConversationDeleted",
    "MessageAdded",
];

/// The projection half.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sla;

#[async_trait::async_trait]
impl Projection for Sla {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handles(&self, event: &StoredEvent) -> bool {
        match event.aggregate_type.as_str() {
            "conversation" => CLOCK_EVENTS.contains(&event.event_type.as_str()),
            "sla" | "calendar" | "sla_policy" => true,
            _ => false,
        }
    }

    async fn apply(&self, tx: &mut Tx<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        // Whether each tenant has a policy, read once per batch and kept as its policies arrive.
        let mut has_policies: HashMap<String, bool> = HashMap::new();
        // Each conversation's observe job, and its inbox row where its timers moved (by the
        // position of its last event), written once for the batch, at the end.
        let mut observing = BTreeMap::new();
        let mut moved = BTreeMap::new();
        // The clocks' events, decoded once, and the timers they move read together.
        let mut clocks = Vec::new();
        for stored in events.iter().filter(|e| e.aggregate_type == "sla") {
            clocks.push((stored, stored.decode::<SlaEvent>()?));
        }
        let mut folding = timers::Timers::default();
        folding.read_before(tx, &clocks).await?;
        let mut clocks = clocks.into_iter();
        for stored in events.iter().filter(|e| self.handles(e)) {
            let tenant = stored.tenant_id().unwrap_or_default();
            match stored.aggregate_type.as_str() {
                "calendar" => definitions::apply::<Calendar>(tx, stored).await?,
                "sla_policy" => {
                    definitions::apply::<SlaPolicy>(tx, stored).await?;
                    has_policies.insert(tenant, true);
                }
                "sla" => {
                    let Some((_, event)) = clocks.next() else { continue };
                    if folding.apply(stored, event) {
                        let position = stored.position.unwrap_or_default();
                        moved.insert((tenant, stored.aggregate_id.clone()), position);
                    }
                }
                _ => {
                    let with_policies = match has_policies.get(&tenant) {
                        Some(known) => *known,
                        None => {
                            let known = definitions::has_policies(tx, &tenant).await?;
                            has_policies.insert(tenant.clone(), known);
                            known
                        }
                    };
                    if with_policies {
                        observe(&mut observing, stored);
                    }
                }
            }
        }
        let jobs: Vec<NewJob> = observing.into_values().collect();
        processes::schedule_gathering(tx, NAME, &jobs, OBSERVE_EVERY).await?;
        folding.write(tx, FIRE).await?;
        timers::show_in_inbox(tx, &moved).await?;
        Ok(())
    }

    fn tables(&self) -> &'static [&'static str] {
        &[definitions::TABLE, timers::TABLE, timers::INBOX_TABLE]
    }
}

/// How often a conversation's clocks are fed its events, at most: the first event of a quiet
/// conversation at once, the events of a busy one gathered, one command and one append per
/// period (a customer's burst of messages, an agent's assign, label and reply). Clocks time
/// everything from the events' own times, and a timer firing feeds the clocks what they have not
/// seen first, so the gathering moves no result; it delays what the read side shows of a busy
/// conversation (docs/adr/0007).
pub const OBSERVE_EVERY: Duration = Duration::from_secs(1);

/// Adds this event to its conversation's observe job for the batch in `observing` (see
/// [`OBSERVE_EVERY`]): set by the batch's last event of the conversation, due at its first.
fn observe(observing: &mut BTreeMap<String, NewJob>, stored: &StoredEvent) {
    let conversation = stored.aggregate_id.as_str();
    let job = json!({ "kind": "observe", "conversation_id": conversation });
    if let Some(mut job) = NewJob::caused_by(stored, job) {
        job.id = format!("observe/{}/{conversation}", job.tenant);
        job.due_at = stored.recorded_at();
        if let Some(earlier) = observing.get(&job.id) {
            job.due_at = earlier.due_at.or(job.due_at);
        }
        observing.insert(job.id.clone(), job);
    }
}

/// The actor half, one lane of it: feeds conversations' events to their clocks, or fires due
/// timers, through the process's repository of SLA clocks (both lanes share it, so that their
/// commands to one conversation's clocks queue on its slot) and its tenants' catalogs.
#[derive(Debug, Clone)]
pub struct SlaClocks {
    store: Store,
    clocks: Arc<Repository<ConversationSla>>,
    catalogs: Arc<Catalogs>,
    lane: &'static str,
}

impl SlaClocks {
    /// The fire lane and the observe lane over `store`, commanding clocks through `clocks`.
    pub fn lanes(store: Store, clocks: Arc<Repository<ConversationSla>>) -> (Self, Self) {
        let catalogs = Arc::new(Catalogs::default());
        let fire = Self { store, clocks, catalogs, lane: FIRE };
        let observe = Self { lane: NAME, ..fire.clone() };
        (fire, observe)
    }

    async fn observe(&self, job: &Job, conversation: &str, origin: &Origin) -> Result<(), ActError> {
        let conversation_id: ConversationId =
            conversation.parse().map_err(|_| ActError(format!("{conversation} is not a conversation id")))?;
        // What the clocks have seen, as cached: the command skips what they have seen as the
        // store has them (a stale cache, after another process's append, conflicts and retries).
        let seen = self.clocks.read_cached(&job.tenant, conversation, |clocks, _| clocks.observed).await;
        let mut seen = seen.map_err(|e| ActError(e.to_string()))?.unwrap_or(0);
        // Read once there is something to feed the clocks.
        let mut catalog = None;
        loop {
            let after = usize::try_from(seen).unwrap_or(usize::MAX);
            let page = self.store.load_page::<Conversation>(&job.tenant, conversation, after).await;
            let page = page.map_err(|e| ActError(e.to_string()))?;
            let mut events = Vec::with_capacity(page.events.len());
            for stored in &page.events {
                let event = stored.decode::<ConversationEvent>().map_err(|e| ActError(e.to_string()))?;
                events.push((u64::try_from(stored.sequence).unwrap_or_default(), event));
            }
            let Some(last) = events.last().map(|(sequence, _)| *sequence) else { return Ok(()) };
            let catalog = match &catalog {
                Some(catalog) => catalog,
                None => catalog.insert(self.catalogs.of(&self.store, &job.tenant, job.position()).await?),
            };
            let command = SlaCommand::Observe {
                conversation_id,
                tenant_id: job.tenant.clone(),
                events,
                catalog: catalog.clone(),
            };
            let outcome =
                self.clocks.execute(conversation, command, Intent::Create, None, origin, |_, _| ()).await;
            outcome.map_err(|e| ActError(e.to_string()))?;
            if !page.more {
                return Ok(());
            }
            seen = last;
        }
    }

    /// Fires the timer, once the clocks have seen every event of the conversation: a reply
    /// recorded just before the due, whose observe job has not run yet, fulfils the timer, and
    /// nothing breaches.
    async fn fire(
        &self,
        job: &Job,
        conversation: &str,
        timer_id: &str,
        origin: &Origin,
    ) -> Result<(), ActError> {
        self.observe(job, conversation, origin).await?;
        let command = SlaCommand::Fire { timer_id: timer_id.to_owned() };
        match self.clocks.execute(conversation, command, Intent::Update, None, origin, |_, _| ()).await {
            // Fired, or the timer stopped since: nothing more to do.
            Ok(_) | Err(CommandError::NotFound | CommandError::Rejected(SlaError::NotFound)) => Ok(()),
            Err(other) => Err(ActError(other.to_string())),
        }
    }
}

/// Each tenant's catalog as last read, with how far the `sla` projection (which keeps the
/// definitions it is read from) had applied the log when it was read: a job set by an event at or
/// before that position reads it from here, as fresh as a read of its own would have been (that
/// read sees at least the definitions before the job's event, which the projection wrote in the
/// batch that set the job, or before). Read once an act, it was 8,589 reads in 30 s of the SLA
/// benchmark's mix; kept, 549.
#[derive(Debug, Default)]
pub struct Catalogs(std::sync::Mutex<HashMap<TenantId, (i64, Catalog)>>);

/// The most tenants' catalogs kept; past it, the next read starts the set again.
const CATALOGS_KEPT: usize = 1_000;

impl Catalogs {
    /// `tenant`'s catalog, fresh enough for a job set at `position`.
    async fn of(&self, store: &Store, tenant: &TenantId, position: i64) -> Result<Catalog, StoreError> {
        if let Some((_, catalog)) = self.kept().get(tenant).filter(|(as_of, _)| *as_of >= position) {
            return Ok(catalog.clone());
        }
        // The checkpoint first: the catalog read after it holds at least what the projection had
        // applied by then.
        let as_of = checkpoints::read(store, &format!("projection:{NAME}")).await?;
        let catalog = definitions::catalog(store, tenant).await?;
        let mut kept = self.kept();
        if kept.len() >= CATALOGS_KEPT && !kept.contains_key(tenant) {
            kept.clear();
        }
        let newer = kept.get(tenant).is_some_and(|(kept_as_of, _)| *kept_as_of > as_of);
        if !newer {
            kept.insert(tenant.clone(), (as_of, catalog.clone()));
        }
        Ok(catalog)
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, (i64, Catalog)>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Process for SlaClocks {
    fn name(&self) -> &'static str {
        self.lane
    }

    fn projection(&self) -> &'static str {
        NAME
    }

    fn actor_id(&self) -> &'static str {
        ACTOR
    }

    /// The fire lane takes more jobs at once than a heavier lane: a fire reads the clocks (and
    /// the conversation's page after what they saw) and appends an event or two, so its act is
    /// mostly a wait for the store's group commit, which carries many fires at once. Observe
    /// acts (the catalog, the rules, several events) keep the default.
    fn pace(&self) -> Pace {
        if self.lane == FIRE {
            FIRE_PACE
        } else {
            Pace::DEFAULT
        }
    }

    async fn act(&self, job: &Job, origin: &Origin) -> Result<(), ActError> {
        let field =
            |name: &str| job.job[name].as_str().ok_or_else(|| ActError(format!("a job without {name}")));
        let conversation = field("conversation_id")?;
        match field("kind")? {
            "observe" => self.observe(job, conversation, origin).await,
            "fire" => self.fire(job, conversation, field("timer_id")?, origin).await,
            other => Err(ActError(format!("an SLA job of unknown kind {other}"))),
        }
    }
}
