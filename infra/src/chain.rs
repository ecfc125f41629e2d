//! The hash chain that makes history tamper-evident (docs/adr/0010): each event's link is
//! SHA-256 over its tenant's previous link and the event's canonical bytes, computed inside the
//! append. PostgreSQL's trigger computes it with the same bytes in SQL (migration
//! `20261210000022_hash_chain.sql`); on SQLite the writer computes it here. `audit.rs` walks the
//! chain back.

use sha2::{Digest, Sha256};

/// A link: 32 bytes of SHA-256.
pub type Hash = [u8; 32];

/// What a tenant's first event links to.
pub const GENESIS: Hash = [0; 32];

/// An event as the chain covers it: every stored field, as stored.
#[derive(Debug, Clone, Copy)]
pub struct Linked<'a> {
    /// The owning tenant.
    pub tenant_id: &'a str,
    /// Its global position.
    pub position: i64,
    /// The aggregate's type.
    pub aggregate_type: &'a str,
    /// The aggregate's id.
    pub aggregate_id: &'a str,
    /// Its sequence in the stream.
    pub sequence: i64,
    /// Its type.
    pub event_type: &'a str,
    /// Its shape's version.
    pub event_version: &'a str,
    /// The payload's stored text.
    pub payload: &'a str,
    /// The metadata's stored text (as `jsonb` prints it on PostgreSQL).
    pub metadata: &'a str,
}

/// The link of `event` after `prev`: SHA-256 over `prev` and the netstrings
/// (`<byte length>:<bytes>,`) of the event's fields in [`Linked`]'s order.
pub fn link(prev: &Hash, event: &Linked<'_>) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    let (position, sequence) = (event.position.to_string(), event.sequence.to_string());
    for field in [
        event.tenant_id,
        &position,
        event.aggregate_type,
        event.aggregate_id,
        &sequence,
        event.event_type,
        event.event_version,
        event.payload,
        event.metadata,
    ] {
        hasher.update(field.len().to_string().as_bytes());
        hasher.update(b":");
        hasher.update(field.as_bytes());
        hasher.update(b",");
    }
    hasher.finalize().into()
}

/// A stored link read back as a [`Hash`] (none where it is not 32 bytes).
pub fn hash_of(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

/// Links every SQLite event stored without a link (before the chain's migration), tenant by
/// tenant in log order, before the store's writer starts. Returns how many it linked.
pub(crate) async fn link_unlinked(pool: &sqlx::SqlitePool) -> Result<u64, sqlx::Error> {
    use sqlx::Row;
    let linked: i64 =
        sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM event_hashes").fetch_one(pool).await?;
    let mut heads: std::collections::HashMap<String, Hash> = std::collections::HashMap::new();
    let (mut after, mut count) = (linked, 0u64);
    loop {
        let rows = sqlx::query(
            "SELECT position, tenant_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata
               FROM events WHERE position > ? ORDER BY position LIMIT 2000",
        )
        .bind(after)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Ok(count);
        }
        let mut links = Vec::with_capacity(rows.len());
        for row in &rows {
            let tenant_id: String = row.try_get("tenant_id")?;
            let prev = match heads.get(&tenant_id) {
                Some(prev) => *prev,
                None => sqlite_head(pool, &tenant_id, after + 1).await?,
            };
            let position: i64 = row.try_get("position")?;
            let event = Linked {
                tenant_id: &tenant_id,
                position,
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: row.try_get("sequence")?,
                event_type: row.try_get("event_type")?,
                event_version: row.try_get("event_version")?,
                payload: row.try_get("payload")?,
                metadata: row.try_get("metadata")?,
            };
            let hash = link(&prev, &event);
            links.push((position, hash));
            heads.insert(tenant_id, hash);
        }
        let mut tx = pool.begin().await?;
        for (position, hash) in &links {
            sqlx::query("INSERT INTO event_hashes (position, hash) VALUES (?, ?)")
                .bind(position)
                .bind(&hash[..])
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        count += links.len() as u64;
        after = links.last().map_or(after, |(position, _)| *position);
    }
}

/// The link of `tenant`'s last event before `before` on SQLite ([`GENESIS`] when it has none).
pub(crate) async fn sqlite_head(
    pool: &sqlx::SqlitePool,
    tenant: &str,
    before: i64,
) -> Result<Hash, sqlx::Error> {
    let stored: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT h.hash FROM events e JOIN event_hashes h ON h.position = e.position
          WHERE e.tenant_id = ? AND e.position < ? ORDER BY e.position DESC LIMIT 1",
    )
    .bind(tenant)
    .bind(before)
    .fetch_optional(pool)
    .await?;
    Ok(stored.as_deref().and_then(hash_of).unwrap_or(GENESIS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &str) -> Linked<'_> {
        Linked {
            tenant_id: "acme",
            position: 7,
            aggregate_type: "conversation",
            aggregate_id: "c-1",
            sequence: 2,
            event_type: "MessageAdded",
            event_version: "1.0",
            payload,
            metadata: "{\"tenant_id\": \"acme\"}",
        }
    }

    #[test]
    fn a_link_is_sha256_over_the_previous_link_and_the_fields_netstrings() {
        let mut expected = Sha256::new();
        expected.update(GENESIS);
        expected.update(
            "4:acme,1:7,12:conversation,3:c-1,1:2,12:MessageAdded,3:1.0,2:{},21:{\"tenant_id\": \"acme\"},",
        );
        assert_eq!(link(&GENESIS, &event("{}")), <Hash>::from(expected.finalize()));
    }

    #[test]
    fn any_changed_byte_or_previous_link_changes_the_link() {
        let base = link(&GENESIS, &event("{\"a\":1}"));
        assert_ne!(base, link(&GENESIS, &event("{\"a\":2}")));
        assert_ne!(base, link(&[1; 32], &event("{\"a\":1}")));
        // Netstrings keep field boundaries: moving a byte between fields changes the link.
        let moved = Linked { aggregate_type: "conversationc", aggregate_id: "-1", ..event("{\"a\":1}") };
        assert_ne!(base, link(&GENESIS, &moved));
    }
}
