//! Secondary indexes a rebuild drops while it writes a read model's rows, and builds again once
//! they are written: building an index over the finished table is much cheaper than moving it
//! for each row (several times cheaper for the inbox's trigram index; lab notes).
//!
//! Each dropped index's definition is noted in `deferred_indexes`, in the transaction that drops
//! it, and is forgotten in the transaction that builds it again. A rebuild that stops early
//! (killed, or failed) leaves them noted, and they are built at the next start of a process that
//! runs the projectors, or at the end of the next rebuild. Only indexes that queries use for
//! speed are deferred: never a unique one, nor one the rebuild's own statements look rows up by.

use colloquy_infra::Store;
use colloquy_infra::{Durability, File};

use crate::on_tx;
use crate::runtime::{ProjectionError, Tx};

/// Drops those of `names` that exist, noting each definition, inside `tx`; returns how many.
pub(crate) async fn defer(tx: &mut Tx<'_>, names: &[&str]) -> Result<usize, ProjectionError> {
    let mut deferred = 0;
    for name in names {
        let (definition, table, drop) = match tx {
            Tx::Postgres(tx) => {
                let found: Option<(String, String)> = sqlx::query_as(
                    "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1",
                )
                .bind(name)
                .fetch_optional(&mut **tx)
                .await?;
                let Some((table, definition)) = found else { continue };
                (definition, table, format!("DROP INDEX {name}"))
            }
            Tx::Sqlite(tx) => {
                let found: Option<(String, String)> = sqlx::query_as(
                    "SELECT tbl_name, sql FROM read_models.sqlite_master WHERE type = 'index' AND name = ?
                        AND sql IS NOT NULL",
                )
                .bind(name)
                .fetch_optional(&mut **tx)
                .await?;
                let Some((table, definition)) = found else { continue };
                (definition, table, format!("DROP INDEX read_models.{name}"))
            }
        };
        if !definition.starts_with("CREATE INDEX ") {
            // A unique index (or one this cannot read back) keeps its place.
            continue;
        }
        let note = "INSERT INTO deferred_indexes (index_name, table_name, definition) VALUES ($1, $2, $3)
                    ON CONFLICT (index_name) DO NOTHING";
        on_tx!(tx, |conn| {
            sqlx::query(note).bind(name).bind(&table).bind(&definition).execute(&mut *conn).await?;
            sqlx::query(&drop).execute(&mut *conn).await?;
        });
        deferred += 1;
    }
    Ok(deferred)
}

/// Builds every index a rebuild deferred and forgets it, one transaction each; returns how many.
/// Two processes may do this at once: each index is built by whichever takes its note first.
/// (Building two at a time on PostgreSQL gained nothing: 94,669 against 94,601 events/s for a
/// rebuild of 1,012,135 events.)
pub async fn restore(store: &Store) -> Result<usize, ProjectionError> {
    let listed = "SELECT index_name FROM deferred_indexes ORDER BY index_name";
    let names: Vec<String> =
        colloquy_infra::on_pool!(store, |pool| sqlx::query_scalar(listed).fetch_all(pool).await?);
    let mut built = 0;
    for name in &names {
        if build(store, name).await? {
            built += 1;
        }
    }
    Ok(built)
}

/// Builds deferred index `name` and forgets it, unless another process took it first.
async fn build(store: &Store, name: &str) -> Result<bool, ProjectionError> {
    let take = "DELETE FROM deferred_indexes WHERE index_name = $1 RETURNING definition";
    let started = std::time::Instant::now();
    let mut tx = store.begin(File::ReadModels, Durability::Durable).await?;
    let taken: Option<String> =
        on_tx!(&mut *tx, |conn| sqlx::query_scalar(take).bind(name).fetch_optional(conn).await?);
    let Some(definition) = taken else { return Ok(false) };
    // On SQLite the index is made in the read models' file, where its table is.
    let schema = if matches!(*tx, Tx::Sqlite(_)) { "read_models." } else { "" };
    let build = if_not_exists(&definition, schema)?;
    on_tx!(&mut *tx, |conn| {
        sqlx::query(&build).execute(conn).await?;
    });
    tx.commit().await?;
    tracing::info!(index = %name, seconds = started.elapsed().as_secs_f64(), "built a deferred index");
    Ok(true)
}

/// `CREATE INDEX <schema><name> ...` as `CREATE INDEX IF NOT EXISTS <schema><name> ...`.
fn if_not_exists(definition: &str, schema: &str) -> Result<String, ProjectionError> {
    let rest = definition.strip_prefix("CREATE INDEX ").ok_or_else(|| {
        ProjectionError::Store(colloquy_infra::StoreError::Corrupt(format!(
            "deferred index definition is not a CREATE INDEX: {definition}"
        )))
    })?;
    let rest = rest.strip_prefix("IF NOT EXISTS ").unwrap_or(rest);
    Ok(format!("CREATE INDEX IF NOT EXISTS {schema}{rest}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::if_not_exists;

    #[test]
    fn a_definition_is_built_only_if_missing_in_its_schema() {
        let pg = "CREATE INDEX conversation_list_status ON public.conversation_list USING btree (tenant_id)";
        assert_eq!(
            if_not_exists(pg, "").unwrap(),
            "CREATE INDEX IF NOT EXISTS conversation_list_status ON public.conversation_list USING btree (tenant_id)"
        );
        let sqlite = "CREATE INDEX IF NOT EXISTS conversation_list_status ON conversation_list (tenant_id)";
        assert_eq!(
            if_not_exists(sqlite, "read_models.").unwrap(),
            "CREATE INDEX IF NOT EXISTS read_models.conversation_list_status ON conversation_list (tenant_id)"
        );
        assert!(if_not_exists("CREATE UNIQUE INDEX x ON t (a)", "").is_err());
    }
}
