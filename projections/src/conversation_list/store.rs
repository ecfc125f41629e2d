//! Loading and writing conversation rows, contact summaries and counters inside the projector's
//! transaction: the `ConversationList` projection.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use colloquy_domain::contact::ContactEvent;
use colloquy_domain::conversation::ConversationEvent;
use colloquy_domain::GroupEvent;
use colloquy_infra::event::Metadata;
use colloquy_infra::StoredEvent;

use super::{name_of, parse_name, ContactSummary, ConversationRow, NAME};
use crate::on_tx;
use crate::rows::{numbered, parameter_rows, statement_rows};
use crate::runtime::{Fold, Projection, ProjectionError, Sealed, Tx};

/// The columns a row is written and read with (the generated `search` column is left out).
pub(super) const COLUMNS: &str = "conversation_id, tenant_id, number, contact_id, contact_name, contact_email, \
     contact_phone, channel, inbox_id, group_type, group_id, subject, status, snoozed_until, priority, priority_rank, \
     assignee_id, team_id, labels, starred, deleted, custom_fields, message_count, customer_message_count, \
     last_message_preview, last_message_at, last_message_type, last_message_sender_kind, last_message_sender_id, \
     last_responder, \
     last_customer_message_at, last_agent_message_at, waiting_since, first_reply_at, response_count, \
     total_response_time_ms, participants, mentioned, readers, created_at, updated_at, last_activity_at, \
     group_activity_at, version";

/// What each row's columns are set to when its key is there already.
fn upsert_updates() -> String {
    let updates: Vec<String> =
        COLUMNS.split(',').map(str::trim).skip(2).map(|c| format!("{c} = excluded.{c}")).collect();
    format!("ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET {}", updates.join(", "))
}

/// An SQLite upsert of `rows` rows in one statement.
fn upsert_values_sql(rows: usize) -> String {
    let values = parameter_rows(false, rows, COLUMN_TYPES.len());
    format!("INSERT INTO conversation_list ({COLUMNS}) VALUES {values} {}", upsert_updates())
}

/// The most rows one PostgreSQL upsert writes.
const UNNEST_ROWS: usize = 1024;

/// The PostgreSQL upsert: each column's values come as one array.
static UPSERT_UNNEST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let arrays: Vec<String> =
        COLUMN_TYPES.iter().enumerate().map(|(n, pg_type)| format!("${}::{pg_type}[]", n + 1)).collect();
    format!(
        "INSERT INTO conversation_list ({COLUMNS}) SELECT * FROM UNNEST({}) {}",
        arrays.join(", "),
        upsert_updates()
    )
});

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// Calls `$emit!($row, value)` for each column of [`COLUMNS`] in its order, `value` an expression
/// of `$row` (a `&ConversationRow`): the one list of what a row writes, bound per row on SQLite
/// and per column on PostgreSQL.
macro_rules! row_values {
    ($row:ident => $emit:ident) => {
        $emit!($row, &$row.id);
        $emit!($row, &$row.tenant_id);
        $emit!($row, $row.number);
        $emit!($row, &$row.contact_id);
        $emit!($row, &$row.contact.name);
        $emit!($row, &$row.contact.email);
        $emit!($row, &$row.contact.phone);
        $emit!($row, $row.channel.as_str());
        $emit!($row, &$row.inbox_id);
        $emit!($row, name_of(&$row.group_type));
        $emit!($row, &$row.group_id);
        $emit!($row, &$row.subject);
        $emit!($row, $row.status.as_str());
        $emit!($row, $row.snoozed_until);
        $emit!($row, name_of(&$row.priority));
        $emit!($row, $row.priority_rank() as i16);
        $emit!($row, &$row.assignee_id);
        $emit!($row, &$row.team_id);
        $emit!($row, json(&$row.labels));
        $emit!($row, $row.starred);
        $emit!($row, $row.deleted);
        $emit!($row, json(&$row.custom_fields));
        $emit!($row, $row.message_count);
        $emit!($row, $row.customer_message_count);
        $emit!($row, &$row.last_message_preview);
        $emit!($row, $row.last_message_at);
        $emit!($row, $row.last_message_type.map(|t| t.as_str()));
        $emit!($row, $row.last_message_sender_kind.map(|k| k.as_str()));
        $emit!($row, &$row.last_message_sender_id);
        $emit!($row, $row.last_responder.as_ref().map(name_of));
        $emit!($row, $row.last_customer_message_at);
        $emit!($row, $row.last_agent_message_at);
        $emit!($row, $row.waiting_since);
        $emit!($row, $row.first_reply_at);
        $emit!($row, $row.response_count);
        $emit!($row, $row.total_response_time_ms);
        $emit!($row, json(&$row.participants));
        $emit!($row, json(&$row.mentioned));
        $emit!($row, json(&$row.readers));
        $emit!($row, $row.created_at);
        $emit!($row, $row.updated_at);
        $emit!($row, $row.last_activity_at);
        $emit!($row, $row.group_activity_at);
        $emit!($row, $row.version);
    };
}

/// The PostgreSQL type of each column of [`COLUMNS`], in its order: what the upsert casts each
/// column's array of values to.
const COLUMN_TYPES: [&str; 44] = [
    "text",        // conversation_id
    "text",        // tenant_id
    "bigint",      // number
    "text",        // contact_id
    "text",        // contact_name
    "text",        // contact_email
    "text",        // contact_phone
    "text",        // channel
    "text",        // inbox_id
    "text",        // group_type
    "text",        // group_id
    "text",        // subject
    "text",        // status
    "timestamptz", // snoozed_until
    "text",        // priority
    "smallint",    // priority_rank
    "text",        // assignee_id
    "text",        // team_id
    "text",        // labels
    "boolean",     // starred
    "boolean",     // deleted
    "text",        // custom_fields
    "bigint",      // message_count
    "bigint",      // customer_message_count
    "text",        // last_message_preview
    "timestamptz", // last_message_at
    "text",        // last_message_type
    "text",        // last_message_sender_kind
    "text",        // last_message_sender_id
    "text",        // last_responder
    "timestamptz", // last_customer_message_at
    "timestamptz", // last_agent_message_at
    "timestamptz", // waiting_since
    "timestamptz", // first_reply_at
    "bigint",      // response_count
    "bigint",      // total_response_time_ms
    "text",        // participants
    "text",        // mentioned
    "text",        // readers
    "timestamptz", // created_at
    "timestamptz", // updated_at
    "timestamptz", // last_activity_at
    "timestamptz", // group_activity_at
    "bigint",      // version
];

fn bad_column(column: &str, reason: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode { index: column.to_owned(), source: reason.to_string().into() }
}

fn named<T: for<'de> Deserialize<'de>>(column: &str, value: &str) -> Result<T, sqlx::Error> {
    parse_name(value).ok_or_else(|| bad_column(column, format!("unknown value {value:?}")))
}

fn json_column<T: for<'de> Deserialize<'de>>(column: &str, value: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(value).map_err(|e| bad_column(column, e))
}

/// Reads a row as written by `row_values!`, from either database.
pub(super) fn decode<R>(row: &R) -> Result<ConversationRow, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> DateTime<Utc>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<DateTime<Utc>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let text = |column: &str| -> Result<String, sqlx::Error> { row.try_get(column) };
    let optional = |column: &str| -> Result<Option<String>, sqlx::Error> { row.try_get(column) };
    let channel: String = text("channel")?;
    let readers: BTreeMap<String, super::Reader> = json_column("readers", &text("readers")?)?;
    Ok(ConversationRow {
        id: text("conversation_id")?,
        tenant_id: text("tenant_id")?,
        number: row.try_get("number")?,
        contact_id: text("contact_id")?,
        contact: ContactSummary {
            name: optional("contact_name")?,
            email: optional("contact_email")?,
            phone: optional("contact_phone")?,
        },
        channel: named("channel", &channel)?,
        inbox_id: optional("inbox_id")?,
        group_type: named("group_type", &text("group_type")?)?,
        group_id: optional("group_id")?,
        subject: optional("subject")?,
        status: named("status", &text("status")?)?,
        snoozed_until: row.try_get("snoozed_until")?,
        priority: named("priority", &text("priority")?)?,
        assignee_id: optional("assignee_id")?,
        team_id: optional("team_id")?,
        labels: json_column("labels", &text("labels")?)?,
        starred: row.try_get("starred")?,
        deleted: row.try_get("deleted")?,
        custom_fields: json_column("custom_fields", &text("custom_fields")?)?,
        message_count: row.try_get("message_count")?,
        customer_message_count: row.try_get("customer_message_count")?,
        last_message_preview: optional("last_message_preview")?,
        last_message_at: row.try_get("last_message_at")?,
        last_message_type: optional("last_message_type")?
            .map(|v| named("last_message_type", &v))
            .transpose()?,
        last_message_sender_kind: optional("last_message_sender_kind")?
            .map(|v| named("last_message_sender_kind", &v))
            .transpose()?,
        last_message_sender_id: optional("last_message_sender_id")?,
        last_responder: optional("last_responder")?.map(|v| named("last_responder", &v)).transpose()?,
        last_customer_message_at: row.try_get("last_customer_message_at")?,
        last_agent_message_at: row.try_get("last_agent_message_at")?,
        waiting_since: row.try_get("waiting_since")?,
        first_reply_at: row.try_get("first_reply_at")?,
        response_count: row.try_get("response_count")?,
        total_response_time_ms: row.try_get("total_response_time_ms")?,
        participants: json_column("participants", &text("participants")?)?,
        mentioned: json_column("mentioned", &text("mentioned")?)?,
        readers,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_activity_at: row.try_get("last_activity_at")?,
        group_activity_at: row.try_get("group_activity_at")?,
        version: row.try_get("version")?,
    })
}

/// The counter a live row counts in: (tenant, status, assignee or '').
type CountKey = (String, String, String);

fn count_key(row: &ConversationRow) -> Option<CountKey> {
    (!row.deleted).then(|| {
        (row.tenant_id.clone(), row.status.as_str().to_owned(), row.assignee_id.clone().unwrap_or_default())
    })
}

/// A contact summary with its tenant, as the projection keeps it.
#[derive(Debug, Clone)]
struct KnownContact {
    tenant_id: String,
    summary: ContactSummary,
}

/// A row's or a contact summary's key in a batch: its tenant and id, as [`scoped`] writes them.
/// A stream is keyed by its tenant (docs/adr/0003), so one batch can hold the same id twice.
type Key = String;

/// The [`Key`] of `id` of `tenant`. Tenant ids never hold a NUL.
fn scoped(tenant: &str, id: &str) -> Key {
    format!("{tenant}\0{id}")
}

/// The tenant and the id a [`Key`] names.
fn unscoped(key: &str) -> (&str, &str) {
    key.split_once('\0').unwrap_or(("", key))
}

/// The tenant an event belongs to (the projection reads only that of its metadata).
fn tenant_of(stored: &StoredEvent) -> String {
    stored.tenant_id().unwrap_or_default()
}

/// What one batch touched: each row and contact is loaded once, folded through the batch and
/// written once. Rows and contacts are held by [`Key`].
#[derive(Default)]
struct Batch {
    rows: HashMap<Key, Option<ConversationRow>>,
    row_order: Vec<Key>,
    /// The rows held for each contact, so that a contact event touches its own rows, not every
    /// row a rebuild holds (tens of thousands between commits).
    rows_by_contact: HashMap<Key, HashSet<Key>>,
    counted_before: HashMap<Key, Option<CountKey>>,
    contacts: HashMap<Key, Option<KnownContact>>,
    changed_contacts: BTreeSet<Key>,
    /// Contacts erased in this batch: the stored rows whose last message is theirs lose its
    /// preview (`write`), as the rows held here do at once.
    erased_contacts: BTreeSet<Key>,
    /// In a rebuild or a catch-up, the batch sealed before this one, until it is written: what
    /// it holds is read from it, not from the store, which may not have it yet.
    previous: Option<Arc<Batch>>,
    /// In a rebuild, what it handed over to be written before: the store holds nothing else.
    written: Option<WrittenKeys>,
}

/// Which row or summary a key names.
#[derive(Hash)]
enum Kind {
    Row,
    Contact,
}

/// The keys of the rows and contact summaries a rebuild handed over to be written, as hashes of
/// 8 bytes: on a read model that was empty when the rebuild began, a key not among them is not
/// in the store and is not looked up. Two keys that share a hash only cost a lookup.
///
/// A live log opens conversations (and creates contacts) all the time, each a key that a batch
/// would look up to find nothing; on the bench's log, whose conversations each fall within two
/// of a rebuild's commits, no key is left to look up.
#[derive(Default)]
struct WrittenKeys(HashSet<u64>);

/// The most keys [`WrittenKeys`] holds (about 18 MB); beyond them, every key is looked up.
const WRITTEN_KEYS_MAX: usize = 1 << 20;

impl WrittenKeys {
    fn hash(kind: Kind, key: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        (kind, key).hash(&mut hasher);
        hasher.finish()
    }

    fn may_hold(&self, kind: Kind, key: &str) -> bool {
        self.0.contains(&Self::hash(kind, key))
    }

    /// With what `batch` writes added; `None` once that is more than [`WRITTEN_KEYS_MAX`] keys.
    fn with(mut self, batch: &Batch) -> Option<Self> {
        let rows = batch.rows.iter().filter(|(_, row)| row.is_some()).map(|(id, _)| (Kind::Row, id));
        let contacts = batch
            .changed_contacts
            .iter()
            .filter(|id| batch.contacts.get(*id).is_some_and(Option::is_some))
            .map(|id| (Kind::Contact, id));
        for (kind, key) in rows.chain(contacts) {
            self.0.insert(Self::hash(kind, key));
        }
        (self.0.len() <= WRITTEN_KEYS_MAX).then_some(self)
    }
}

impl Batch {
    /// Folds `events` in: loads what they touch, applies them to it in memory.
    async fn fold(&mut self, tx: &mut Tx<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        self.preload_rows(tx, events).await?;
        self.preload_contacts(tx, events).await?;
        for stored in events {
            match stored.aggregate_type.as_str() {
                "conversation" => self.conversation_event(tx, stored).await?,
                "contact" => self.contact_event(tx, stored).await?,
                "group" if stored.event_type == "GroupActivityRecorded" => {
                    self.group_activity(tx, stored).await?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Notes the row of `key` loaded from the store. A contact this batch changed already (a
    /// batch that spans pages loads rows after their contact's events) gives it its summary as
    /// of now: the store's copy is updated only when the batch is written.
    fn loaded(&mut self, key: &str, mut row: Option<ConversationRow>) {
        if let Some(row) = row.as_mut() {
            if let Some(summary) = self.changed_contact(&scoped(&row.tenant_id, &row.contact_id)) {
                row.contact = summary.clone();
            }
        }
        self.counted_before.insert(key.to_owned(), row.as_ref().and_then(count_key));
        if let Some(row) = &row {
            self.held_for_contact(scoped(&row.tenant_id, &row.contact_id), key);
        }
        self.rows.insert(key.to_owned(), row);
        self.row_order.push(key.to_owned());
    }

    /// The summary of the contact of `key` if this batch changed it, or else the batch before
    /// it (whose write may not have reached the rows in the store yet).
    fn changed_contact(&self, key: &str) -> Option<&ContactSummary> {
        fn changed_in<'b>(batch: &'b Batch, key: &str) -> Option<&'b ContactSummary> {
            let known = batch.changed_contacts.contains(key).then(|| batch.contacts.get(key)).flatten()?;
            known.as_ref().map(|known| &known.summary)
        }
        changed_in(self, key).or_else(|| changed_in(self.previous.as_deref()?, key))
    }

    /// Whether the store may hold `key`: in a rebuild, only if the rebuild wrote it.
    fn may_be_stored(&self, kind: Kind, key: &str) -> bool {
        self.written.as_ref().is_none_or(|written| written.may_hold(kind, key))
    }

    /// Loads the row of `key`: from the batch before this one if it holds it, or else from the
    /// store.
    async fn load_row(&mut self, tx: &mut Tx<'_>, key: &str) -> Result<(), ProjectionError> {
        let loaded = match self.previous.as_ref().and_then(|p| p.rows.get(key)) {
            Some(held) => held.clone(),
            None if self.may_be_stored(Kind::Row, key) => load_row(tx, key).await?,
            None => None,
        };
        self.loaded(key, loaded);
        Ok(())
    }

    fn held_for_contact(&mut self, contact: Key, key: &str) {
        self.rows_by_contact.entry(contact).or_default().insert(key.to_owned());
    }

    /// Loads the summary of every contact the batch's events name and that it does not hold
    /// yet, in as few statements as possible: contacts with events in it, and those that its
    /// conversations are opened with (a live log creates a contact for most conversations).
    async fn preload_contacts(
        &mut self,
        tx: &mut Tx<'_>,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut ids: Vec<String> = Vec::new();
        for stored in events {
            let id = match (stored.aggregate_type.as_str(), stored.event_type.as_str()) {
                ("contact", _) => Some(scoped(&tenant_of(stored), &stored.aggregate_id)),
                // A payload that does not parse is reported when the event is applied.
                ("conversation", "ConversationOpened") => stored.decode::<OpenedWith>().ok().map(|o| {
                    let OpenedWith::ConversationOpened { contact_id } = o;
                    scoped(&tenant_of(stored), &contact_id)
                }),
                _ => None,
            };
            if let Some(id) = id {
                if self.contacts.contains_key(&id) {
                    continue;
                }
                if let Some(held) = self.previous.as_ref().and_then(|p| p.contacts.get(&id)) {
                    let held = held.clone();
                    self.contacts.insert(id, held);
                } else if seen.insert(id.clone()) {
                    ids.push(id);
                }
            }
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let stored: Vec<&str> =
            ids.iter().copied().filter(|id| self.may_be_stored(Kind::Contact, id)).collect();
        let select = "SELECT contact_id, tenant_id, name, email, phone FROM conversation_list_contacts";
        let mut found: HashMap<Key, KnownContact> = load_keyed(tx, select, "contact_id", &stored).await?;
        for id in ids {
            self.contacts.insert(id.to_owned(), found.remove(id));
        }
        Ok(())
    }

    /// Loads every row the batch's conversation events touch, in as few statements as possible.
    async fn preload_rows(&mut self, tx: &mut Tx<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        // A page can interleave thousands of events over hundreds of conversations: the ids are
        // collected through a set, not by scanning the list for each event.
        let mut seen: HashSet<Key> = HashSet::new();
        let mut ids: Vec<Key> = Vec::new();
        for stored in events.iter().filter(|e| e.aggregate_type == "conversation") {
            let id = scoped(&tenant_of(stored), &stored.aggregate_id);
            if self.rows.contains_key(&id) {
                continue;
            }
            if let Some(held) = self.previous.as_ref().and_then(|p| p.rows.get(&id)) {
                let held = held.clone();
                self.loaded(&id, held);
            } else if seen.insert(id.clone()) {
                ids.push(id);
            }
        }
        let stored: Vec<&str> =
            ids.iter().map(String::as_str).filter(|id| self.may_be_stored(Kind::Row, id)).collect();
        let select = format!("SELECT {COLUMNS} FROM conversation_list");
        let mut found: HashMap<Key, ConversationRow> =
            load_keyed(tx, &select, "conversation_id", &stored).await?;
        for id in ids {
            let loaded = found.remove(&id);
            self.loaded(&id, loaded);
        }
        Ok(())
    }

    async fn row(&mut self, tx: &mut Tx<'_>, key: &str) -> Result<Option<ConversationRow>, ProjectionError> {
        if !self.rows.contains_key(key) {
            self.load_row(tx, key).await?;
        }
        Ok(self.rows.get_mut(key).and_then(Option::take))
    }

    async fn contact(&mut self, tx: &mut Tx<'_>, key: &str) -> Result<Option<KnownContact>, ProjectionError> {
        if !self.contacts.contains_key(key) {
            let loaded = match self.previous.as_ref().and_then(|p| p.contacts.get(key)) {
                Some(held) => held.clone(),
                None if self.may_be_stored(Kind::Contact, key) => load_contact(tx, key).await?,
                None => None,
            };
            self.contacts.insert(key.to_owned(), loaded);
        }
        Ok(self.contacts.get(key).cloned().flatten())
    }

    async fn conversation_event(
        &mut self,
        tx: &mut Tx<'_>,
        stored: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let event: ConversationEvent = stored.decode()?;
        let tenant = tenant_of(stored);
        let key = scoped(&tenant, &stored.aggregate_id);
        // An opening takes its contact's summary, looked up before the row is borrowed.
        let opened_with = match &event {
            ConversationEvent::ConversationOpened { contact_id, .. } => {
                Some(self.contact(tx, &scoped(&tenant, &contact_id.to_string())).await?)
            }
            _ => None,
        };
        if !self.rows.contains_key(&key) {
            self.load_row(tx, &key).await?;
        }
        // Folded where it is held, rather than moved out of the map and back: a row has 43
        // columns, and this runs for every event of a rebuild.
        let Some(slot) = self.rows.get_mut(&key) else { return Ok(()) };
        ConversationRow::apply_in_place(slot, &event, &stored.aggregate_id, stored.sequence);
        if let (Some(known), Some(row)) = (opened_with, slot.as_mut()) {
            if let Some(known) = known {
                row.contact = known.summary;
            }
            let contact = scoped(&row.tenant_id, &row.contact_id);
            self.held_for_contact(contact, &key);
        }
        Ok(())
    }

    /// Group activity reaches every conversation of the group: stored ones, and those opened
    /// earlier in this batch.
    async fn group_activity(&mut self, tx: &mut Tx<'_>, stored: &StoredEvent) -> Result<(), ProjectionError> {
        let event: GroupEvent = stored.decode()?;
        let GroupEvent::GroupActivityRecorded { last_activity_at, .. } = event else { return Ok(()) };
        // A provider's time outside the range a client may give was stored before the domain
        // refused it; PostgreSQL's `timestamptz` cannot hold a year like -100000, and such a
        // time says nothing about recent activity anyway.
        if colloquy_domain::validate::instant("at", last_activity_at).is_err() {
            return Ok(());
        }
        let Some(tenant) = stored.tenant_id() else {
            return Ok(());
        };
        let tenant = tenant.as_str();
        let group = stored.aggregate_id.as_str();
        let sql = "SELECT conversation_id FROM conversation_list WHERE tenant_id = $1 AND group_id = $2";
        let listed: Vec<String> =
            on_tx!(tx, |conn| sqlx::query_scalar(sql).bind(tenant).bind(group).fetch_all(conn).await?);
        let mut ids: Vec<Key> = listed.iter().map(|id| scoped(tenant, id)).collect();
        let mut listed: HashSet<Key> = ids.iter().cloned().collect();
        // Held here, or by the batch before (which may not be written yet).
        let previous = self.previous.iter().flat_map(|p| p.rows.iter());
        for (id, row) in self.rows.iter().chain(previous) {
            let in_group =
                row.as_ref().is_some_and(|r| r.tenant_id == tenant && r.group_id.as_deref() == Some(group));
            if in_group && listed.insert(id.clone()) {
                ids.push(id.clone());
            }
        }
        for id in ids {
            let mut row = self.row(tx, &id).await?;
            if let Some(row) = row.as_mut() {
                row.note_group_activity(last_activity_at);
            }
            self.rows.insert(id, row);
        }
        Ok(())
    }

    async fn contact_event(&mut self, tx: &mut Tx<'_>, stored: &StoredEvent) -> Result<(), ProjectionError> {
        let event: ContactEvent = stored.decode()?;
        let key = scoped(&tenant_of(stored), &stored.aggregate_id);
        let known = self.contact(tx, &key).await?;
        let tenant_id = match (&event, &known) {
            (ContactEvent::ContactCreated { tenant_id, .. }, _) => tenant_id.to_string(),
            (_, Some(known)) => known.tenant_id.clone(),
            (_, None) => return Ok(()),
        };
        let Some(summary) = ContactSummary::apply(known.map(|k| k.summary), &event) else { return Ok(()) };
        for id in self.rows_by_contact.get(&key).into_iter().flatten() {
            if let Some(Some(row)) = self.rows.get_mut(id) {
                if row.contact_id == stored.aggregate_id {
                    row.contact = summary.clone();
                }
            }
        }
        if matches!(event, ContactEvent::ContactErased { .. }) {
            // The rows whose last message is theirs: their own conversations', and a group's
            // whose last message a member wrote (rare: every row held is looked at).
            let contact = stored.aggregate_id.as_str();
            for row in self.rows.values_mut().flatten().filter(|row| row.tenant_id == tenant_id) {
                if row.last_message_is_from(contact) {
                    row.last_message_preview = None;
                }
            }
            self.erased_contacts.insert(key.clone());
        }
        self.contacts.insert(key.clone(), Some(KnownContact { tenant_id, summary }));
        self.changed_contacts.insert(key);
        Ok(())
    }

    async fn write(&self, tx: &mut Tx<'_>) -> Result<(), ProjectionError> {
        // Changed contacts, in key order (so concurrent writers lock them in one order), a
        // statement per chunk: saved, and spread to the stored rows that name them. Rows this
        // batch also touched are written below with the same summary.
        let changed: Vec<(&str, &KnownContact)> = self
            .changed_contacts
            .iter()
            .filter_map(|key| {
                self.contacts.get(key).and_then(Option::as_ref).map(|known| (unscoped(key).1, known))
            })
            .collect();
        let mut remaining = &changed[..];
        while !remaining.is_empty() {
            let (chunk, rest) = remaining.split_at(statement_rows(remaining.len()));
            remaining = rest;
            let values = parameter_rows(numbered(tx), chunk.len(), 5);
            let save = format!(
                "INSERT INTO conversation_list_contacts (contact_id, tenant_id, name, email, phone) VALUES {values}
                 ON CONFLICT (tenant_id, contact_id) DO UPDATE
                 SET name = excluded.name, email = excluded.email, phone = excluded.phone"
            );
            let spread = format!(
                "UPDATE conversation_list
                    SET contact_name = v.column3, contact_email = v.column4, contact_phone = v.column5
                   FROM (VALUES {values}) AS v
                  WHERE conversation_list.tenant_id = v.column2 AND conversation_list.contact_id = v.column1"
            );
            for sql in [save, spread] {
                on_tx!(tx, |conn| {
                    let mut query = sqlx::query(&sql);
                    for (id, known) in chunk {
                        query = query
                            .bind(*id)
                            .bind(&known.tenant_id)
                            .bind(&known.summary.name)
                            .bind(&known.summary.email)
                            .bind(&known.summary.phone);
                    }
                    query.execute(conn).await?;
                })
            }
        }
        for key in &self.erased_contacts {
            let (tenant, contact) = unscoped(key);
            let sql = "UPDATE conversation_list SET last_message_preview = NULL
                        WHERE tenant_id = $1 AND last_message_sender_kind IN ('customer', 'visitor')
                          AND (last_message_sender_id = $2 OR (last_message_sender_id IS NULL AND contact_id = $2))";
            on_tx!(tx, |conn| {
                sqlx::query(sql).bind(tenant).bind(contact).execute(conn).await?;
            });
        }
        let written: Vec<&ConversationRow> =
            self.row_order.iter().filter_map(|id| self.rows.get(id).and_then(Option::as_ref)).collect();
        match tx {
            // A statement per [`UNNEST_ROWS`] rows, each column bound as one array: one prepared
            // shape and one round trip whatever the batch holds.
            Tx::Postgres(tx) => {
                for chunk in written.chunks(UNNEST_ROWS) {
                    let mut query = sqlx::query(&UPSERT_UNNEST);
                    macro_rules! column {
                        ($row:ident, $value:expr) => {
                            query = query.bind(chunk.iter().map(|&$row| $value).collect::<Vec<_>>())
                        };
                    }
                    row_values!(row => column);
                    query.execute(&mut **tx).await?;
                }
            }
            Tx::Sqlite(tx) => {
                let mut remaining = &written[..];
                while !remaining.is_empty() {
                    let (chunk, rest) = remaining.split_at(statement_rows(remaining.len()));
                    remaining = rest;
                    let sql = upsert_values_sql(chunk.len());
                    let mut query = sqlx::query(&sql);
                    macro_rules! value {
                        ($row:ident, $value:expr) => {
                            query = query.bind($value)
                        };
                    }
                    for &row in chunk {
                        row_values!(row => value);
                    }
                    query.execute(&mut **tx).await?;
                }
            }
        }
        let mut deltas: BTreeMap<CountKey, i64> = BTreeMap::new();
        for id in &self.row_order {
            let Some(Some(row)) = self.rows.get(id) else { continue };
            let before = self.counted_before.get(id).cloned().flatten();
            let after = count_key(row);
            if before != after {
                if let Some(key) = before {
                    *deltas.entry(key).or_default() -= 1;
                }
                if let Some(key) = after {
                    *deltas.entry(key).or_default() += 1;
                }
            }
        }
        // One statement, its rows in key order, so concurrent instances of the projector lock
        // counters in one order.
        let deltas: Vec<(CountKey, i64)> = deltas.into_iter().filter(|(_, d)| *d != 0).collect();
        if !deltas.is_empty() {
            let count = format!(
                "INSERT INTO conversation_counts (tenant_id, status, assignee_id, count) VALUES {}
                 ON CONFLICT (tenant_id, status, assignee_id)
                 DO UPDATE SET count = conversation_counts.count + excluded.count",
                parameter_rows(numbered(tx), deltas.len(), 4)
            );
            on_tx!(tx, |conn| {
                let mut query = sqlx::query(&count);
                for ((tenant, status, assignee), delta) in &deltas {
                    query = query.bind(tenant).bind(status).bind(assignee).bind(delta);
                }
                query.execute(conn).await?;
            })
        }
        Ok(())
    }
}

/// A read-model row loaded by its key: the [`Key`], and what the projection keeps of the row.
trait Keyed<R>: Sized {
    fn keyed(row: &R) -> Result<(Key, Self), sqlx::Error>;
}

macro_rules! keyed_on_both_stores {
    ($type:ty, |$row:ident| $body:expr) => {
        impl Keyed<sqlx::postgres::PgRow> for $type {
            fn keyed($row: &sqlx::postgres::PgRow) -> Result<(Key, Self), sqlx::Error> {
                $body
            }
        }
        impl Keyed<sqlx::sqlite::SqliteRow> for $type {
            fn keyed($row: &sqlx::sqlite::SqliteRow) -> Result<(Key, Self), sqlx::Error> {
                $body
            }
        }
    };
}

keyed_on_both_stores!(ConversationRow, |r| decode(r).map(|row| (scoped(&row.tenant_id, &row.id), row)));
keyed_on_both_stores!(KnownContact, |r| {
    let id: String = r.try_get("contact_id")?;
    known_contact(r).map(|known| (scoped(&known.tenant_id, &id), known))
});

/// The rows `select` (a query of a table keyed by `tenant_id` and `id_column`, with no `WHERE`)
/// finds for `keys`, by key, each looked up by the table's key: on PostgreSQL one statement (a
/// join to the keys as two arrays, a single prepared shape for any number of them), on SQLite a
/// statement per chunk of keys (a join to `VALUES`; SQLite scans the whole table for a row
/// value `IN` a list), not one per key.
async fn load_keyed<T>(
    tx: &mut Tx<'_>,
    select: &str,
    id_column: &str,
    keys: &[&str],
) -> Result<HashMap<Key, T>, ProjectionError>
where
    T: Keyed<sqlx::postgres::PgRow> + Keyed<sqlx::sqlite::SqliteRow>,
{
    let mut found = HashMap::with_capacity(keys.len());
    if keys.is_empty() {
        return Ok(found);
    }
    match tx {
        Tx::Postgres(tx) => {
            let (tenants, ids): (Vec<&str>, Vec<&str>) = keys.iter().map(|key| unscoped(key)).unzip();
            let sql = format!(
                "{select} JOIN UNNEST($1::text[], $2::text[]) AS k(k_tenant, k_id)
                   ON tenant_id = k.k_tenant AND {id_column} = k.k_id"
            );
            for row in sqlx::query(&sql).bind(tenants).bind(ids).fetch_all(&mut **tx).await? {
                let (key, value) = T::keyed(&row)?;
                found.insert(key, value);
            }
        }
        Tx::Sqlite(tx) => {
            let mut remaining = keys;
            while !remaining.is_empty() {
                let (chunk, rest) = remaining.split_at(statement_rows(remaining.len()));
                remaining = rest;
                let sql = format!(
                    "{select} JOIN (VALUES {}) AS k ON tenant_id = k.column1 AND {id_column} = k.column2",
                    vec!["(?, ?)"; chunk.len()].join(", ")
                );
                let mut query = sqlx::query(&sql);
                for key in chunk {
                    let (tenant, id) = unscoped(key);
                    query = query.bind(tenant).bind(id);
                }
                for row in query.fetch_all(&mut **tx).await? {
                    let (key, value) = T::keyed(&row)?;
                    found.insert(key, value);
                }
            }
        }
    }
    Ok(found)
}

async fn load_row(tx: &mut Tx<'_>, key: &str) -> Result<Option<ConversationRow>, ProjectionError> {
    let (tenant, id) = unscoped(key);
    let sql =
        format!("SELECT {COLUMNS} FROM conversation_list WHERE tenant_id = $1 AND conversation_id = $2");
    let row = on_tx!(tx, |conn| {
        sqlx::query(&sql).bind(tenant).bind(id).fetch_optional(conn).await?.map(|r| decode(&r))
    });
    Ok(row.transpose()?)
}

async fn load_contact(tx: &mut Tx<'_>, key: &str) -> Result<Option<KnownContact>, ProjectionError> {
    let (tenant, id) = unscoped(key);
    let sql = "SELECT tenant_id, name, email, phone FROM conversation_list_contacts
                WHERE tenant_id = $1 AND contact_id = $2";
    let found = on_tx!(tx, |conn| {
        sqlx::query(sql).bind(tenant).bind(id).fetch_optional(conn).await?.map(|r| known_contact(&r))
    });
    Ok(found.transpose()?)
}

/// A `conversation_list_contacts` row.
fn known_contact<R>(r: &R) -> Result<KnownContact, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(KnownContact {
        tenant_id: r.try_get("tenant_id")?,
        summary: ContactSummary {
            name: r.try_get("name")?,
            email: r.try_get("email")?,
            phone: r.try_get("phone")?,
        },
    })
}

/// Just the contact a conversation is opened with.
#[derive(Deserialize)]
enum OpenedWith {
    ConversationOpened { contact_id: String },
}

/// A rebuild's rows between its commits: one batch over many pages.
#[derive(Default)]
struct Rebuilding {
    batch: Batch,
}

#[async_trait::async_trait]
impl Fold for Rebuilding {
    async fn apply(&mut self, tx: &mut Tx<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        self.batch.fold(tx, events).await
    }

    fn held(&self) -> usize {
        self.batch.rows.len() + self.batch.contacts.len()
    }

    fn starts_empty(&mut self) {
        self.batch.written = Some(WrittenKeys::default());
    }

    fn start_over(&mut self) {
        *self = Self::default();
    }

    fn seal(&mut self) -> Box<dyn Sealed> {
        let mut sealed = std::mem::take(&mut self.batch);
        // Only the last sealed batch is looked through: the one before it is written.
        sealed.previous = None;
        self.batch.written = sealed.written.take().and_then(|written| written.with(&sealed));
        let sealed = Arc::new(sealed);
        self.batch.previous = Some(sealed.clone());
        Box::new(SealedBatch(sealed))
    }
}

/// A rebuild's sealed batch: written by the replay's writer while the next one folds, and read
/// by that one meanwhile.
struct SealedBatch(Arc<Batch>);

#[async_trait::async_trait]
impl Sealed for SealedBatch {
    async fn write(self: Box<Self>, tx: &mut Tx<'_>) -> Result<(), ProjectionError> {
        self.0.write(tx).await
    }
}

/// The projection.
#[derive(Debug, Default)]
pub struct ConversationList;

#[async_trait::async_trait]
impl Projection for ConversationList {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handles(&self, event: &StoredEvent) -> bool {
        match event.aggregate_type.as_str() {
            "conversation" | "contact" => true,
            "group" => event.event_type == "GroupActivityRecorded",
            _ => false,
        }
    }

    async fn apply(&self, tx: &mut Tx<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        let mut batch = Batch::default();
        batch.fold(tx, events).await?;
        batch.write(tx).await
    }

    /// Events name their tenant in their payload or the log, nothing else of the metadata is
    /// read.
    fn metadata(&self) -> Metadata {
        Metadata::TenantOnly
    }

    fn fold(&self) -> Option<Box<dyn Fold>> {
        Some(Box::new(Rebuilding::default()))
    }

    /// The list's sort and filter indexes, and the trigram search (PostgreSQL): a rebuild's
    /// rows cost half as much without them. Kept: the key, and the contact's and the group's
    /// indexes, which the rebuild's own statements find rows by.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &[
            "conversation_list_activity",
            "conversation_list_assignee",
            "conversation_list_assignee_status",
            "conversation_list_created",
            "conversation_list_inbox",
            "conversation_list_priority",
            "conversation_list_search",
            "conversation_list_status",
            "conversation_list_team",
            "conversation_list_waiting",
        ]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["conversation_list", "conversation_list_contacts", "conversation_counts"]
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Batch, ConversationRow, Kind, KnownContact, WrittenKeys, COLUMNS, COLUMN_TYPES, UPSERT_UNNEST,
        WRITTEN_KEYS_MAX,
    };
    use crate::conversation_list::tests::opened;

    #[test]
    fn a_rebuild_looks_up_only_what_it_wrote() {
        let mut batch = Batch::default();
        batch.rows.insert("c-1".into(), ConversationRow::apply(None, &opened(), "c-1", 1));
        batch.rows.insert("c-2".into(), None);
        let known = KnownContact { tenant_id: "acme".into(), summary: Default::default() };
        batch.contacts.insert("k-1".into(), Some(known));
        batch.changed_contacts.insert("k-1".into());
        batch.contacts.insert("k-2".into(), None);
        let written = WrittenKeys::default().with(&batch).expect("under the limit");
        assert!(written.may_hold(Kind::Row, "c-1"));
        assert!(!written.may_hold(Kind::Row, "c-2"), "looked up, found nothing, wrote nothing");
        assert!(written.may_hold(Kind::Contact, "k-1"));
        assert!(!written.may_hold(Kind::Contact, "k-2"));
        assert!(!written.may_hold(Kind::Contact, "c-1"), "a row's key is not a contact's");

        let next = Batch { written: Some(written), ..Batch::default() };
        assert!(next.may_be_stored(Kind::Row, "c-1"));
        assert!(!next.may_be_stored(Kind::Row, "c-3"));
        assert!(
            Batch::default().may_be_stored(Kind::Row, "c-3"),
            "outside a rebuild, every key may be stored"
        );

        let full = WrittenKeys((0..=WRITTEN_KEYS_MAX as u64).collect());
        assert!(full.with(&Batch::default()).is_none(), "past the limit every key is looked up");
    }

    #[test]
    fn every_column_has_one_value_and_one_type_in_its_order() {
        let mut values = 0;
        macro_rules! count {
            ($row:ident, $value:expr) => {
                values += 1
            };
        }
        row_values!(row => count);
        let columns = COLUMNS.split(',').count();
        assert_eq!(values, columns);
        assert_eq!(COLUMN_TYPES.len(), columns);
        // The arrays are numbered in the columns' order, each cast to its column's type.
        assert!(UPSERT_UNNEST.contains("UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[]"));
        assert!(UPSERT_UNNEST.contains(&format!("${columns}::bigint[])")));
    }
}
