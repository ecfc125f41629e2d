//! Auditing the hash chain (docs/adr/0010): [`verify`] walks the log, recomputes every link
//! (`chain.rs`) and names the first position where the stored history no longer matches, and
//! [`Checkpoint`] is a tenant's chain head signed with a key the operator holds, which an
//! outside party keeps to show later that history up to it was not rewritten, even by someone
//! who recomputed every link.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use colloquy_domain::TenantId;

use crate::chain::{self, Hash, Linked, GENESIS};
use crate::error::StoreError;
use crate::store::Store;

/// Events read per page while verifying.
const PAGE: i64 = 2_000;

/// Where the chain breaks: the first position whose stored event does not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The global position.
    pub position: i64,
    /// The tenant whose chain it is, where known.
    pub tenant_id: Option<String>,
    /// What does not match.
    pub reason: String,
}

/// What a walk of the chain found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    /// Events checked.
    pub events: u64,
    /// The last position checked.
    pub last_position: i64,
    /// Each tenant's last verified position and link.
    pub heads: HashMap<String, (i64, String)>,
    /// Checkpoints the walk passed and found matching.
    pub checkpoints_matched: u64,
    /// The first break, if any (the walk stops there).
    pub broken: Option<Break>,
}

/// One event as the chain reads it back.
#[derive(Debug, Clone)]
pub struct Chained {
    /// Its global position.
    pub position: i64,
    /// Its tenant.
    pub tenant_id: String,
    /// Its fields; none where the log names an event the events table no longer has.
    pub fields: Option<Fields>,
    /// Its stored link.
    pub stored: Option<Vec<u8>>,
}

/// An event's stored fields, as the chain covers them.
#[derive(Debug, Clone)]
pub struct Fields {
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// Its sequence.
    pub sequence: i64,
    /// Its type.
    pub event_type: String,
    /// Its shape's version.
    pub event_version: String,
    /// The payload's stored text.
    pub payload: String,
    /// The metadata's stored text.
    pub metadata: String,
}

impl Fields {
    fn linked<'a>(&'a self, tenant_id: &'a str, position: i64) -> Linked<'a> {
        Linked {
            tenant_id,
            position,
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            sequence: self.sequence,
            event_type: &self.event_type,
            event_version: &self.event_version,
            payload: &self.payload,
            metadata: &self.metadata,
        }
    }
}

/// The events after `after` (of `tenant`, or of all), at most [`PAGE`], each with its stored
/// link: what `verify` and `colloquy audit export` read.
pub async fn page(store: &Store, tenant: Option<&TenantId>, after: i64) -> Result<Vec<Chained>, StoreError> {
    let fields = |row: &dyn Fn(&str) -> Result<Option<String>, sqlx::Error>,
                  sequence: Option<i64>|
     -> Result<Option<Fields>, sqlx::Error> {
        let (Some(aggregate_type), Some(sequence)) = (row("aggregate_type")?, sequence) else {
            return Ok(None);
        };
        Ok(Some(Fields {
            aggregate_type,
            aggregate_id: row("aggregate_id")?.unwrap_or_default(),
            sequence,
            event_type: row("event_type")?.unwrap_or_default(),
            event_version: row("event_version")?.unwrap_or_default(),
            payload: row("payload")?.unwrap_or_default(),
            metadata: row("metadata")?.unwrap_or_default(),
        }))
    };
    if let Some(pool) = store.postgres_pool() {
        let filter = if tenant.is_some() { "AND tenant_id = $3" } else { "" };
        let sql = format!(
            "SELECT l.position, l.tenant_id, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type,
                    e.event_version, e.payload::text AS payload, e.metadata::text AS metadata, l.hash
               FROM (SELECT position, event_position, tenant_id, hash FROM event_log
                      WHERE position > $1 {filter}
                      ORDER BY position
                      LIMIT $2) l
               LEFT JOIN LATERAL (SELECT * FROM events WHERE position = l.event_position LIMIT 1) e ON true
              ORDER BY l.position"
        );
        let mut query = sqlx::query(&sql).bind(after).bind(PAGE);
        if let Some(tenant) = tenant {
            query = query.bind(tenant.as_str());
        }
        let rows = query.fetch_all(pool).await?;
        let mut read = Vec::with_capacity(rows.len());
        for row in rows {
            let text = |column: &str| row.try_get::<Option<String>, _>(column);
            read.push(Chained {
                position: row.try_get("position")?,
                tenant_id: row.try_get("tenant_id")?,
                fields: fields(&text, row.try_get("sequence")?)?,
                stored: row.try_get("hash")?,
            });
        }
        return Ok(read);
    }
    let filter = if tenant.is_some() { "AND e.tenant_id = $3" } else { "" };
    let sql = format!(
        "SELECT e.position, e.tenant_id, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type,
                e.event_version, e.payload, e.metadata, h.hash
           FROM events e
           LEFT JOIN event_hashes h ON h.position = e.position
          WHERE e.position > $1 {filter}
          ORDER BY e.position
          LIMIT $2"
    );
    let mut query = sqlx::query(&sql).bind(after).bind(PAGE);
    if let Some(tenant) = tenant {
        query = query.bind(tenant.as_str());
    }
    let Some((pool, _)) = store.sqlite_pool() else { return Ok(Vec::new()) };
    let rows = query.fetch_all(pool).await?;
    let mut read = Vec::with_capacity(rows.len());
    for row in rows {
        let text = |column: &str| row.try_get::<Option<String>, _>(column);
        read.push(Chained {
            position: row.try_get("position")?,
            tenant_id: row.try_get::<Option<String>, _>("tenant_id")?.unwrap_or_default(),
            fields: fields(&text, row.try_get("sequence")?)?,
            stored: row.try_get("hash")?,
        });
    }
    Ok(read)
}

/// The stored link of `tenant`'s last event before `before` ([`GENESIS`] when it has none).
async fn stored_before(store: &Store, tenant: &str, before: i64) -> Result<Hash, StoreError> {
    if let Some(pool) = store.postgres_pool() {
        let stored: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT hash FROM event_log WHERE tenant_id = $1 AND position < $2 ORDER BY position DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(before)
        .fetch_optional(pool)
        .await?;
        return Ok(stored.as_deref().and_then(chain::hash_of).unwrap_or(GENESIS));
    }
    let Some((pool, _)) = store.sqlite_pool() else { return Ok(GENESIS) };
    Ok(chain::sqlite_head(pool, tenant, before).await?)
}

/// Walks the chain from position `from` (1: all of it), of one tenant or of every tenant,
/// recomputing each link, and stops at the first event that does not match its stored link,
/// does not exist, or is missing from the log. A link before `from` is taken as stored. Each
/// of `checkpoints` the walk passes must match the link computed at its position. `progress`
/// is told each page's last position.
pub async fn verify(
    store: &Store,
    tenant: Option<&TenantId>,
    from: i64,
    checkpoints: &[Checkpoint],
    mut progress: impl FnMut(i64),
) -> Result<Verification, StoreError> {
    let mut heads: HashMap<String, Hash> = HashMap::new();
    let mut verification = Verification::default();
    let mut after = from.max(1) - 1;
    let broken = |position: i64, tenant: Option<&str>, reason: String| Break {
        position,
        tenant_id: tenant.map(str::to_owned),
        reason,
    };
    'walk: loop {
        let rows = page(store, tenant, after).await?;
        let Some(last) = rows.last().map(|row| row.position) else { break };
        for row in rows {
            let tenant_id = row.tenant_id.as_str();
            if tenant.is_none() && row.position != after + 1 {
                let reason = "no event has this position: the log skips it (an event was removed)".into();
                verification.broken = Some(broken(after + 1, None, reason));
                break 'walk;
            }
            let Some(fields) = &row.fields else {
                let reason = "the log names an event the store no longer has (it was removed)".into();
                verification.broken = Some(broken(row.position, Some(tenant_id), reason));
                break 'walk;
            };
            let prev = match heads.get(tenant_id) {
                Some(prev) => *prev,
                None => stored_before(store, tenant_id, row.position).await?,
            };
            let computed = chain::link(&prev, &fields.linked(tenant_id, row.position));
            match row.stored.as_deref().and_then(chain::hash_of) {
                None => {
                    let reason = "the event has no link: it was not appended through the store".into();
                    verification.broken = Some(broken(row.position, Some(tenant_id), reason));
                    break 'walk;
                }
                Some(stored) if stored != computed => {
                    let reason = "the stored link does not match the event: the event was changed, or an \
                                  event of its tenant before it was removed or changed"
                        .into();
                    verification.broken = Some(broken(row.position, Some(tenant_id), reason));
                    break 'walk;
                }
                Some(_) => {}
            }
            for checkpoint in
                checkpoints.iter().filter(|c| c.position == row.position && c.tenant_id == tenant_id)
            {
                if checkpoint.hash != hex::encode(computed) {
                    let reason = format!(
                        "the history differs from the checkpoint signed at {}: it was rewritten after it",
                        checkpoint.signed_at.to_rfc3339()
                    );
                    verification.broken = Some(broken(row.position, Some(tenant_id), reason));
                    break 'walk;
                }
                verification.checkpoints_matched += 1;
            }
            heads.insert(tenant_id.to_owned(), computed);
            verification.heads.insert(tenant_id.to_owned(), (row.position, hex::encode(computed)));
            verification.events += 1;
            verification.last_position = row.position;
            after = row.position;
        }
        after = last;
        progress(last);
    }
    if verification.broken.is_none() {
        // A checkpoint past the history's end: the history was cut short since it was signed.
        let reached =
            |c: &Checkpoint| verification.heads.get(&c.tenant_id).is_some_and(|(p, _)| *p >= c.position);
        if let Some(missed) =
            checkpoints.iter().find(|c| tenant.is_none_or(|t| t.as_str() == c.tenant_id) && !reached(c))
        {
            verification.broken = Some(broken(
                missed.position,
                Some(&missed.tenant_id),
                "the history ends before this signed checkpoint's position: events were removed".into(),
            ));
        }
    }
    Ok(verification)
}

/// One event as `colloquy audit export` writes it, a JSON line: every stored field, the payload
/// and metadata as their stored text (so that the links can be recomputed from the file), and
/// the stored link.
#[derive(Debug, Serialize, Deserialize)]
pub struct Exported {
    /// Its global position in the store it came from.
    pub position: i64,
    /// Its tenant.
    pub tenant_id: String,
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// Its sequence.
    pub sequence: i64,
    /// Its type.
    pub event_type: String,
    /// Its shape's version.
    pub event_version: String,
    /// The payload, as stored.
    pub payload: Box<serde_json::value::RawValue>,
    /// The metadata, as stored.
    pub metadata: Box<serde_json::value::RawValue>,
    /// Its link, hex.
    pub hash: String,
}

impl Exported {
    /// The line of `event` (none for one the store no longer has, or whose text is not JSON).
    pub fn of(event: &Chained) -> Option<Self> {
        let fields = event.fields.as_ref()?;
        Some(Self {
            position: event.position,
            tenant_id: event.tenant_id.clone(),
            aggregate_type: fields.aggregate_type.clone(),
            aggregate_id: fields.aggregate_id.clone(),
            sequence: fields.sequence,
            event_type: fields.event_type.clone(),
            event_version: fields.event_version.clone(),
            payload: serde_json::value::RawValue::from_string(fields.payload.clone()).ok()?,
            metadata: serde_json::value::RawValue::from_string(fields.metadata.clone()).ok()?,
            hash: event.stored.as_deref().map(hex::encode).unwrap_or_default(),
        })
    }
}

/// Checks the links of an exported history, tenant by tenant from its first event: each line's
/// `hash` must be the link of its fields after the tenant's previous line. A whole tenant's
/// export verifies; one cut by a period or an aggregate does not (its first line's previous link
/// is not in the file). Returns the lines checked, or the first that does not match.
pub fn verify_exported(lines: impl Iterator<Item = Exported>) -> Result<u64, Break> {
    let mut heads: HashMap<String, Hash> = HashMap::new();
    let mut count = 0;
    for line in lines {
        let prev = heads.get(&line.tenant_id).copied().unwrap_or(GENESIS);
        let computed = chain::link(
            &prev,
            &Linked {
                tenant_id: &line.tenant_id,
                position: line.position,
                aggregate_type: &line.aggregate_type,
                aggregate_id: &line.aggregate_id,
                sequence: line.sequence,
                event_type: &line.event_type,
                event_version: &line.event_version,
                payload: line.payload.get(),
                metadata: line.metadata.get(),
            },
        );
        if hex::encode(computed) != line.hash {
            return Err(Break {
                position: line.position,
                tenant_id: Some(line.tenant_id),
                reason: "the line's link does not match its fields after the tenant's previous line".into(),
            });
        }
        heads.insert(line.tenant_id, computed);
        count += 1;
    }
    Ok(count)
}

/// A tenant's chain head, signed: what an outside party keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The store it is of (`Store::id`).
    pub store_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The position of the tenant's event the head is the link of.
    pub position: i64,
    /// The link, hex.
    pub hash: String,
    /// When it was signed.
    pub signed_at: DateTime<Utc>,
    /// The Ed25519 public key that verifies it, hex.
    pub public_key: String,
    /// The Ed25519 signature over [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// What is signed: every field but the key and the signature, one per line.
    fn message(&self) -> String {
        format!(
            "colloquy chain checkpoint v1\n{}\n{}\n{}\n{}\n{}",
            self.store_id,
            self.tenant_id,
            self.position,
            self.hash,
            self.signed_at.to_rfc3339()
        )
    }

    /// The head `(position, hash)` of `tenant` in `store_id`, signed with `key` at `at`.
    pub fn sign(
        key: &SigningKey,
        store_id: &str,
        tenant: &str,
        head: (i64, &str),
        at: DateTime<Utc>,
    ) -> Self {
        let mut checkpoint = Self {
            store_id: store_id.to_owned(),
            tenant_id: tenant.to_owned(),
            position: head.0,
            hash: head.1.to_owned(),
            signed_at: at,
            public_key: hex::encode(key.verifying_key().to_bytes()),
            signature: String::new(),
        };
        checkpoint.signature = hex::encode(key.sign(checkpoint.message().as_bytes()).to_bytes());
        checkpoint
    }

    /// Checks the signature with `public_key` (the operator's, not the one the checkpoint names).
    pub fn check_signature(&self, public_key: &VerifyingKey) -> Result<(), String> {
        let bytes = hex::decode(&self.signature).map_err(|_| "the signature is not hex".to_owned())?;
        let signature =
            Signature::from_slice(&bytes).map_err(|_| "the signature is not 64 bytes".to_owned())?;
        public_key
            .verify(self.message().as_bytes(), &signature)
            .map_err(|_| "the signature does not verify with this public key".to_owned())
    }
}

/// A new signing key from the operating system's randomness.
pub fn generate_key() -> SigningKey {
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    SigningKey::from_bytes(&secret)
}

/// A signing key from its hex form (a key file's text).
pub fn signing_key(hex_text: &str) -> Result<SigningKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| "a signing key is 64 hex digits".to_owned())?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// A public key from its hex form.
pub fn public_key(hex_text: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| "a public key is 64 hex digits".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not an Ed25519 public key".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_with_its_key_and_not_once_changed_or_with_another_key() {
        let key = generate_key();
        let at = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z").map(|t| t.to_utc()).unwrap_or_default();
        let checkpoint = Checkpoint::sign(&key, "store", "acme", (42, "ab"), at);
        assert_eq!(checkpoint.check_signature(&key.verifying_key()), Ok(()));
        let moved = Checkpoint { position: 41, ..checkpoint.clone() };
        assert!(moved.check_signature(&key.verifying_key()).is_err());
        assert!(checkpoint.check_signature(&generate_key().verifying_key()).is_err());
        let text = hex::encode(key.to_bytes());
        assert_eq!(signing_key(&text).map(|k| k.to_bytes()), Ok(key.to_bytes()));
        assert!(public_key("zz").is_err());
    }
}
