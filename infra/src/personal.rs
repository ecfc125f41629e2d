//! Personal data kept under a key per contact, so that destroying the key erases it from every
//! event without rewriting one (crypto-shredding, docs/adr/0011).
//!
//! Before an append, each value the domain names as a contact's (`colloquy_domain::personal`)
//! is *sealed*: replaced in the payload by `{"$pii": {"s": subject, "v": nonce ‖ ciphertext,
//! "e": what it reads as once erased}}`, encrypted with XChaCha20-Poly1305 under the contact's
//! data key, bound to its tenant and subject. The data keys are kept in `personal_keys`, each
//! wrapped by a master key (from configuration, else one the store keeps). Readers *reveal*
//! events: each sealed value becomes what was written, or its erased value once the key is
//! gone. An erasure's append sets the key to NULL in the same commit (`writer.rs`). The hash
//! chain covers the sealed bytes, so it verifies before and after.

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;

use colloquy_domain::personal::Personal;
use colloquy_domain::TenantId;

use crate::error::StoreError;
use crate::event::StoredEvent;
use crate::json::RawJson;
use crate::tx::{Backend, Durability, File};

/// The key a sealed value is an object of.
pub const SEALED: &str = "$pii";

/// How long a process trusts a data key it read: another process's erasure reaches this one's
/// reads within it (this process's own at once).
const KEY_TTL: Duration = Duration::from_secs(30);

/// The most data keys a process keeps in memory.
const CACHED_KEYS: usize = 100_000;

/// A 256-bit master key, and its id (the first 8 bytes of its SHA-256, in hex), stored beside
/// each data key it wraps so that a process with another master key says so instead of reading
/// every value as erased.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A master key from its 32 bytes in base64 (`COLLOQUY_MASTER_KEY`).
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = BASE64.decode(text.trim()).map_err(|e| format!("the master key is not base64: {e}"))?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != 32 {
            return Err(format!("the master key must be 32 bytes, not {}", bytes.len()));
        }
        let id = hex::encode(&Sha256::digest(bytes)[..8]);
        let cipher = XChaCha20Poly1305::new_from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(Self { id, cipher })
    }

    /// A new random master key, in base64 (the one a store keeps when none is configured).
    pub fn generate() -> String {
        BASE64.encode(random::<32>())
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// What binds a ciphertext to its tenant and subject: one contact's value never opens as
/// another's, nor a data key as another's.
fn bound(kind: &str, tenant: &str, subject: &str) -> Vec<u8> {
    format!("colloquy {kind}\0{tenant}\0{subject}").into_bytes()
}

fn seal_bytes(cipher: &XChaCha20Poly1305, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let nonce = random::<24>();
    let mut sealed = nonce.to_vec();
    // Encryption fails only past 256 GiB.
    if let Ok(ciphertext) = cipher.encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad }) {
        sealed.extend(ciphertext);
    }
    sealed
}

fn open_bytes(cipher: &XChaCha20Poly1305, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 24 {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(24);
    cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad }).ok()
}

/// A contact's data key as this process holds it.
#[derive(Clone)]
enum Held {
    Live {
        cipher: XChaCha20Poly1305,
        read_at: Instant,
    },
    Erased,
    /// No key in this store (the values came from elsewhere: an export replayed into it): they
    /// read as erased, and a write makes the subject a key.
    Missing,
}

/// The store's data keys: made, read, cached, and the values sealed and revealed with them.
pub struct Keyring {
    backend: Arc<Backend>,
    configured: OnceLock<MasterKey>,
    /// The master key the store keeps, when none is configured (read or made at first use).
    kept: tokio::sync::OnceCell<MasterKey>,
    cache: Mutex<lru::LruCache<(String, String), Held>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("configured", &self.configured.get()).finish_non_exhaustive()
    }
}

impl Keyring {
    pub(crate) fn new(backend: Arc<Backend>) -> Self {
        let capacity = NonZeroUsize::new(CACHED_KEYS).unwrap_or(NonZeroUsize::MIN);
        Self {
            backend,
            configured: OnceLock::new(),
            kept: tokio::sync::OnceCell::new(),
            cache: Mutex::new(lru::LruCache::new(capacity)),
        }
    }

    /// Wraps new data keys with `key` from now on (and opens those it wrapped); false when one is
    /// set already.
    pub fn configure(&self, key: MasterKey) -> bool {
        self.configured.set(key).is_ok()
    }

    /// Reads (or makes) the master key the store keeps when none is configured, so that the
    /// warning that it is so comes when the process starts, not in its first request.
    pub async fn prepare(&self) -> Result<(), StoreError> {
        if self.configured.get().is_none() {
            self.kept_key().await?;
        }
        Ok(())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, lru::LruCache<(String, String), Held>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The master key that wraps new data keys: the configured one, else the one the store
    /// keeps (made the first time, with a warning that a copy of the database then reads it).
    async fn wrapping_key(&self) -> Result<MasterKey, StoreError> {
        if let Some(key) = self.configured.get() {
            return Ok(key.clone());
        }
        self.kept_key().await
    }

    async fn kept_key(&self) -> Result<MasterKey, StoreError> {
        let key = self
            .kept
            .get_or_try_init(|| async {
                let made = MasterKey::generate();
                let insert = "INSERT INTO personal_master_keys (id, key) VALUES ('kept', $1) ON CONFLICT (id) DO NOTHING";
                let select = "SELECT key FROM personal_master_keys WHERE id = 'kept'";
                let mut tx = self.backend.begin(File::Events, Durability::Durable, std::panic::Location::caller()).await?;
                let text: String = crate::on_tx!(&mut *tx, |c| {
                    sqlx::query(insert).bind(&made).execute(&mut *c).await?;
                    sqlx::query_scalar(select).fetch_one(&mut *c).await?
                });
                tx.commit().await?;
                tracing::warn!(
                    "no master key is configured (COLLOQUY_MASTER_KEY): personal data keys are wrapped by a key kept in the store, so a copy of the database reads them; erasure still destroys them"
                );
                MasterKey::from_base64(&text).map_err(StoreError::Corrupt)
            })
            .await?;
        Ok(key.clone())
    }

    /// The master key with id `id`, or why there is none here.
    async fn master(&self, id: &str) -> Result<MasterKey, StoreError> {
        if let Some(key) = self.configured.get().filter(|k| k.id == id) {
            return Ok(key.clone());
        }
        let kept = self.kept_key().await?;
        if kept.id == id {
            return Ok(kept);
        }
        Err(StoreError::Corrupt(format!(
            "personal data keys are wrapped by master key {id}, which this process does not have (COLLOQUY_MASTER_KEY)"
        )))
    }

    /// Seals `secret`, a secret the store must read back (a webhook's signing secret), under the
    /// master key, bound to `kind`, `tenant` and `owner`: the master key's id and the sealed bytes.
    pub async fn seal_secret(
        &self,
        kind: &str,
        tenant: &str,
        owner: &str,
        secret: &[u8],
    ) -> Result<(String, Vec<u8>), StoreError> {
        let master = self.wrapping_key().await?;
        Ok((master.id.clone(), seal_bytes(&master.cipher, secret, &bound(kind, tenant, owner))))
    }

    /// Opens what [`Keyring::seal_secret`] sealed under master key `master_id`.
    pub async fn open_secret(
        &self,
        (kind, tenant, owner): (&str, &str, &str),
        master_id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let master = self.master(master_id).await?;
        open_bytes(&master.cipher, sealed, &bound(kind, tenant, owner)).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the {kind} secret of {owner} does not open with master key {master_id}"
            ))
        })
    }

    /// The data keys of `subjects` of `tenant`, read from the store where not cached; a subject
    /// with none is made one when `make`, else reads as erased (its values came from elsewhere,
    /// an export replayed into a new store).
    async fn keys(
        &self,
        tenant: &str,
        subjects: &[String],
        make: bool,
    ) -> Result<Vec<(String, Held)>, StoreError> {
        let mut found = Vec::with_capacity(subjects.len());
        let mut missing = Vec::new();
        {
            let mut cache = self.cache();
            for subject in subjects {
                let key = (tenant.to_owned(), subject.clone());
                match cache.get(&key) {
                    Some(Held::Live { read_at, .. }) if read_at.elapsed() > KEY_TTL => {
                        missing.push(subject.clone())
                    }
                    Some(Held::Missing) if make => missing.push(subject.clone()),
                    Some(held) => found.push((subject.clone(), held.clone())),
                    None => missing.push(subject.clone()),
                }
            }
        }
        for subject in missing {
            let held = match self.read_key(tenant, &subject).await? {
                Some(held) => held,
                None if make => self.make_key(tenant, &subject).await?,
                None => Held::Missing,
            };
            self.cache().put((tenant.to_owned(), subject.clone()), held.clone());
            found.push((subject, held));
        }
        Ok(found)
    }

    async fn read_key(&self, tenant: &str, subject: &str) -> Result<Option<Held>, StoreError> {
        let sql =
            "SELECT master_key_id, wrapped_key FROM personal_keys WHERE tenant_id = $1 AND subject_id = $2";
        let row = match &*self.backend {
            Backend::Postgres { pool } => sqlx::query(sql)
                .bind(tenant)
                .bind(subject)
                .fetch_optional(pool)
                .await?
                .map(|r| (r.try_get::<Option<String>, _>(0), r.try_get::<Option<Vec<u8>>, _>(1))),
            Backend::Sqlite { pool, .. } => sqlx::query(sql)
                .bind(tenant)
                .bind(subject)
                .fetch_optional(pool)
                .await?
                .map(|r| (r.try_get::<Option<String>, _>(0), r.try_get::<Option<Vec<u8>>, _>(1))),
        };
        let Some((master, wrapped)) = row else { return Ok(None) };
        let (Some(master), Some(wrapped)) = (master?, wrapped?) else { return Ok(Some(Held::Erased)) };
        let master = self.master(&master).await?;
        let key = open_bytes(&master.cipher, &wrapped, &bound("key", tenant, subject)).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the data key of {subject} does not open with master key {}",
                master.id
            ))
        })?;
        let cipher =
            XChaCha20Poly1305::new_from_slice(&key).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(Held::Live { cipher, read_at: Instant::now() }))
    }

    /// Makes a data key for `subject`, or reads the one another writer made first.
    async fn make_key(&self, tenant: &str, subject: &str) -> Result<Held, StoreError> {
        let master = self.wrapping_key().await?;
        let key = random::<32>();
        let wrapped = seal_bytes(&master.cipher, &key, &bound("key", tenant, subject));
        let insert =
            "INSERT INTO personal_keys (tenant_id, subject_id, master_key_id, wrapped_key, created_at)
                      VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, subject_id) DO NOTHING";
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut tx =
            self.backend.begin(File::Events, Durability::Durable, std::panic::Location::caller()).await?;
        crate::on_tx!(&mut *tx, |c| {
            sqlx::query(insert)
                .bind(tenant)
                .bind(subject)
                .bind(&master.id)
                .bind(&wrapped)
                .bind(&now)
                .execute(&mut *c)
                .await?;
        });
        tx.commit().await?;
        self.read_key(tenant, subject)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("the data key of {subject} was not kept")))
    }

    /// Seals, in each of `events` (serialized payloads of `tenant`), the values `personal` names
    /// for it; a value that is `null` or missing is left as it is. A subject erased before
    /// gets its erased value at once: an erased contact's data is not kept again.
    pub async fn seal(
        &self,
        tenant: &TenantId,
        payloads: &mut [&mut Value],
        personal: &[Vec<Personal>],
    ) -> Result<(), StoreError> {
        let mut subjects: Vec<String> = personal.iter().flatten().map(|p| p.subject.0.to_string()).collect();
        if subjects.is_empty() {
            return Ok(());
        }
        subjects.sort();
        subjects.dedup();
        let keys = self.keys(tenant.as_str(), &subjects, true).await?;
        for (payload, values) in payloads.iter_mut().zip(personal) {
            for value in values {
                let subject = value.subject.0.to_string();
                let Some(slot) = payload.pointer_mut(&value.pointer).filter(|v| !v.is_null()) else {
                    continue;
                };
                let held = keys.iter().find(|(s, _)| *s == subject).map(|(_, held)| held);
                *slot = match held {
                    Some(Held::Live { cipher, .. }) => {
                        let plaintext = serde_json::to_vec(slot).unwrap_or_default();
                        let sealed =
                            seal_bytes(cipher, &plaintext, &bound("value", tenant.as_str(), &subject));
                        let mut inner = Map::new();
                        inner.insert("s".into(), Value::String(subject));
                        inner.insert("v".into(), Value::String(BASE64.encode(sealed)));
                        inner.insert("e".into(), value.erased.clone());
                        Value::Object(Map::from_iter([(SEALED.to_owned(), Value::Object(inner))]))
                    }
                    Some(Held::Erased | Held::Missing) | None => value.erased.clone(),
                };
            }
        }
        Ok(())
    }

    /// Forgets this process's copy of `subject`'s key at once (its erasure committed here).
    pub fn forget(&self, tenant: &str, subject: &str) {
        self.cache().put((tenant.to_owned(), subject.to_owned()), Held::Erased);
    }

    /// `events` with every sealed value revealed: what was written, or its erased value where
    /// the key is gone. Borrowed when none holds a sealed value (the common case: one substring
    /// search per event).
    pub async fn reveal<'a>(&self, events: &'a [StoredEvent]) -> Result<Cow<'a, [StoredEvent]>, StoreError> {
        if !events.iter().any(is_sealed) {
            return Ok(Cow::Borrowed(events));
        }
        let mut events = events.to_vec();
        self.reveal_in_place(&mut events).await?;
        Ok(Cow::Owned(events))
    }

    /// [`Keyring::reveal`], on events the caller owns.
    pub async fn reveal_in_place(&self, events: &mut [StoredEvent]) -> Result<(), StoreError> {
        for event in events.iter_mut().filter(|e| is_sealed(e)) {
            let tenant = event.tenant_id().unwrap_or_default();
            let mut payload = event.payload.to_value();
            let mut subjects = Vec::new();
            collect_subjects(&payload, &mut subjects);
            subjects.sort();
            subjects.dedup();
            let keys = self.keys(&tenant, &subjects, false).await?;
            open_values(&mut payload, &tenant, &keys);
            event.payload = RawJson::from_value(&payload);
        }
        Ok(())
    }
}

/// Whether `event`'s payload may hold a sealed value.
fn is_sealed(event: &StoredEvent) -> bool {
    event.payload.text().contains("\"$pii\"")
}

/// The sealed value `value` is, if it is one: its subject, sealed bytes and erased value.
fn as_sealed(value: &Value) -> Option<(&str, &str, &Value)> {
    let object = value.as_object().filter(|o| o.len() == 1)?;
    let inner = object.get(SEALED)?.as_object()?;
    Some((inner.get("s")?.as_str()?, inner.get("v")?.as_str()?, inner.get("e")?))
}

fn collect_subjects(value: &Value, into: &mut Vec<String>) {
    if let Some((subject, _, _)) = as_sealed(value) {
        into.push(subject.to_owned());
        return;
    }
    match value {
        Value::Object(map) => map.values().for_each(|v| collect_subjects(v, into)),
        Value::Array(items) => items.iter().for_each(|v| collect_subjects(v, into)),
        _ => {}
    }
}

fn open_values(value: &mut Value, tenant: &str, keys: &[(String, Held)]) {
    if let Some((subject, sealed, erased)) = as_sealed(value) {
        let opened = match keys.iter().find(|(s, _)| s == subject).map(|(_, held)| held) {
            Some(Held::Live { cipher, .. }) => BASE64
                .decode(sealed)
                .ok()
                .and_then(|bytes| open_bytes(cipher, &bytes, &bound("value", tenant, subject)))
                .and_then(|plaintext| serde_json::from_slice::<Value>(&plaintext).ok()),
            Some(Held::Erased | Held::Missing) | None => None,
        };
        // A value that does not open (tampered with, or bound to another contact) reads as erased.
        *value = opened.unwrap_or_else(|| erased.clone());
        return;
    }
    match value {
        Value::Object(map) => map.values_mut().for_each(|v| open_values(v, tenant, keys)),
        Value::Array(items) => items.iter_mut().for_each(|v| open_values(v, tenant, keys)),
        _ => {}
    }
}

/// Destroys the data key of a subject inside an append's transaction (`writer.rs`), leaving
/// its row (the key NULL, `erased_at` set) so that its values read as erased, not missing, and
/// none is made for it again. Binds: tenant, subject, the time (text), the time again.
pub(crate) const ERASE_KEY: &str = "INSERT INTO personal_keys (tenant_id, subject_id, master_key_id, wrapped_key, created_at, erased_at)
     VALUES (?, ?, NULL, NULL, ?, ?)
     ON CONFLICT (tenant_id, subject_id) DO UPDATE SET master_key_id = NULL, wrapped_key = NULL, erased_at = excluded.erased_at";

/// [`ERASE_KEY`] in PostgreSQL's placeholders.
pub(crate) const ERASE_KEY_PG: &str = "INSERT INTO personal_keys (tenant_id, subject_id, master_key_id, wrapped_key, created_at, erased_at)
     VALUES ($1, $2, NULL, NULL, $3, $4)
     ON CONFLICT (tenant_id, subject_id) DO UPDATE SET master_key_id = NULL, wrapped_key = NULL, erased_at = excluded.erased_at";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cipher() -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new_from_slice(&[7u8; 32]).expect("a 32-byte key")
    }

    fn sealed(plain: &Value, tenant: &str, subject: &str, erased: Value) -> Value {
        let bytes = seal_bytes(
            &cipher(),
            &serde_json::to_vec(plain).expect("json"),
            &bound("value", tenant, subject),
        );
        json!({SEALED: {"s": subject, "v": BASE64.encode(bytes), "e": erased}})
    }

    fn live() -> Held {
        Held::Live { cipher: cipher(), read_at: Instant::now() }
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_and_reads_as_erased_without_it() {
        let payload = json!({"MessageAdded": {"content": {"text": sealed(&json!("my card is 4111"), "acme", "c1", Value::Null)}}});
        assert!(!payload.to_string().contains("4111"));
        let mut opened = payload.clone();
        open_values(&mut opened, "acme", &[("c1".into(), live())]);
        assert_eq!(opened["MessageAdded"]["content"]["text"], "my card is 4111");
        let mut erased = payload.clone();
        open_values(&mut erased, "acme", &[("c1".into(), Held::Erased)]);
        assert_eq!(erased["MessageAdded"]["content"]["text"], Value::Null);
    }

    #[test]
    fn a_value_does_not_open_as_another_tenants_or_contacts() {
        let value = sealed(&json!("Ann"), "acme", "c1", json!("[erased]"));
        // Moved into another contact's event, with that contact's subject written over it.
        let mut moved = value.clone();
        moved[SEALED]["s"] = json!("c2");
        open_values(&mut moved, "acme", &[("c2".into(), live())]);
        assert_eq!(moved, "[erased]");
        let mut other_tenant = value;
        open_values(&mut other_tenant, "globex", &[("c1".into(), live())]);
        assert_eq!(other_tenant, "[erased]");
    }

    #[test]
    fn only_an_object_with_the_one_sealed_key_is_a_sealed_value() {
        // What a user can write is a string: `"$pii"` in a text is not an object.
        assert!(as_sealed(&json!("{\"$pii\": {}}")).is_none());
        assert!(as_sealed(&json!({SEALED: {"s": "c1", "v": "", "e": null}, "other": 1})).is_none());
        let mut subjects = Vec::new();
        collect_subjects(&json!({"a": [sealed(&json!(1), "t", "c9", Value::Null)]}), &mut subjects);
        assert_eq!(subjects, ["c9"]);
    }

    #[test]
    fn a_master_key_is_32_bytes_of_base64_and_its_id_does_not_reveal_it() {
        let text = MasterKey::generate();
        let key = MasterKey::from_base64(&text).expect("a generated key reads");
        assert_eq!(key.id().len(), 16);
        assert!(!text.contains(key.id()));
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
    }
}
