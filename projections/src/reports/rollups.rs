//! The reports' rollups, stored: each batch's new facts counted into their [`Cell`]s (and a
//! superseded fact taken out) in the batch's transaction, so cells and facts always agree at the
//! checkpoint; conversations and contacts numbered per tenant for the cells' sets; and the
//! figures of a period read from its whole UTC days' cells, with the finer cells (the tenant's
//! hours and five minutes, a key's six hours) and the facts of what is left at either end folded
//! in (docs/adr/0013).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sqlx::Row;

use colloquy_domain::report::Metric;
use colloquy_domain::TenantId;
use colloquy_infra::{on_pool, Store, StoreError};

use super::cells::{keys_of, Cell, CellKey, Counted, Gathered, Grain, KEY_GRAINS, TENANT_GRAINS};
use super::figures::Dimension;
use super::query::{self, FactRow, Filter};
use crate::on_tx;
use crate::rows::{numbered, parameter_rows, statement_rows};
use crate::runtime::{ProjectionError, Tx};

/// The cells' table.
pub const CELLS_TABLE: &str = "report_cells";
/// The conversations' and contacts' numbers.
pub const NUMBERS_TABLE: &str = "report_numbers";
/// The last number given per tenant, definition version and kind.
pub const HEADS_TABLE: &str = "report_number_heads";

const CONVERSATION: &str = "conversation";
const CONTACT: &str = "contact";

fn corrupt(error: String) -> sqlx::Error {
    sqlx::Error::Decode(error.into())
}

/// A fact counted into a cell (`None`), or taken out of it (whether its contact stays).
type Change = (Counted, Option<bool>);

/// A stored cell's row: tenant, grain, start, metric, dimension, key and the cell.
type CellRow = (String, i32, i64, String, String, String, Vec<u8>);

/// Counts a batch's facts into their cells: `added` (new current facts) in, `removed` (stored
/// facts the batch superseded) out, each with its tenant.
pub(super) async fn count(
    tx: &mut Tx<'_>,
    version: u32,
    added: &[(String, FactRow)],
    removed: &[(String, FactRow)],
) -> Result<(), ProjectionError> {
    if added.is_empty() && removed.is_empty() {
        return Ok(());
    }
    let everyone = added.iter().chain(removed);
    let conversations: BTreeSet<(String, String)> =
        everyone.clone().map(|(tenant, fact)| (tenant.clone(), fact.conversation_id.clone())).collect();
    let contacts: BTreeSet<(String, String)> =
        everyone.map(|(tenant, fact)| (tenant.clone(), fact.contact_id.clone())).collect();
    let conversations = number(tx, version, CONVERSATION, conversations).await?;
    let contacts = number(tx, version, CONTACT, contacts).await?;
    let counted = |tenant: &String, fact: &FactRow| Counted {
        conversation: conversations
            .get(&(tenant.clone(), fact.conversation_id.clone()))
            .copied()
            .unwrap_or_default(),
        contact: contacts.get(&(tenant.clone(), fact.contact_id.clone())).copied().unwrap_or_default(),
        value: fact.value,
        business_value: fact.business_value,
    };
    // Removals first: a fact superseded in its own cell by the batch's new one leaves, and the
    // new one comes in.
    let mut changes: BTreeMap<(String, CellKey), Vec<Change>> = BTreeMap::new();
    for (tenant, fact) in removed {
        let staying = cells_of_the_contacts_other_facts(tx, version, tenant, fact).await?;
        for key in keys_of(fact) {
            let stays = staying.contains(&key);
            changes.entry((tenant.clone(), key)).or_default().push((counted(tenant, fact), Some(stays)));
        }
    }
    for (tenant, fact) in added {
        for key in keys_of(fact) {
            changes.entry((tenant.clone(), key)).or_default().push((counted(tenant, fact), None));
        }
    }
    let keys: Vec<&(String, CellKey)> = changes.keys().collect();
    let mut cells = stored_cells(tx, version, &keys).await?;
    let mut rows = Vec::with_capacity(changes.len());
    for (key, facts) in &changes {
        let cell = cells.entry(key.clone()).or_default();
        for (fact, removal) in facts {
            match removal {
                Some(contact_stays) => cell.remove(fact, *contact_stays),
                None => cell.add(fact),
            }
        }
        rows.push((key, cell.encode()));
    }
    write_cells(tx, version, &rows).await
}

/// The cells in which the contact of `fact` (superseded) still has a current fact of its metric,
/// in another conversation: there the contact stays counted.
async fn cells_of_the_contacts_other_facts(
    tx: &mut Tx<'_>,
    version: u32,
    tenant: &str,
    fact: &FactRow,
) -> Result<BTreeSet<CellKey>, ProjectionError> {
    // The metric written in, not bound: the partial index over current full resolutions serves
    // only a statement that names it.
    let metric = fact.metric.as_str();
    let sql = format!(
        "SELECT {} FROM report_facts
          WHERE tenant_id = $1 AND version = $2 AND contact_id = $3 AND metric = '{metric}'
            AND superseded_at IS NULL AND conversation_id <> $4",
        query::COLUMNS
    );
    let others: Vec<FactRow> = on_tx!(tx, |conn| {
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(i64::from(version))
            .bind(&fact.contact_id)
            .bind(&fact.conversation_id)
            .fetch_all(conn)
            .await?;
        rows.iter().map(query::fact_row).collect::<Result<_, _>>()?
    });
    Ok(others.iter().flat_map(keys_of).collect())
}

/// The numbers of `ids` (tenant, id) of `kind`, giving the ones without a number the next.
async fn number(
    tx: &mut Tx<'_>,
    version: u32,
    kind: &str,
    ids: BTreeSet<(String, String)>,
) -> Result<HashMap<(String, String), u32>, ProjectionError> {
    let ids: Vec<(String, String)> = ids.into_iter().collect();
    let mut numbers = HashMap::with_capacity(ids.len());
    let mut found: Vec<(String, String, i64)> = Vec::new();
    match &mut *tx {
        // Each pair looked up by the whole key, one index probe each: as a join, the planner,
        // even knowing the batch's ids, hashed every number of the tenant for about thirty of
        // them once the table had grown, 4.6 ms a batch (BENCHMARKS.md, "The reports' lookups,
        // probed by key").
        Tx::Postgres(tx) => {
            let (tenants, keys): (Vec<&str>, Vec<&str>) =
                ids.iter().map(|(t, i)| (t.as_str(), i.as_str())).unzip();
            let sql = format!(
                "SELECT k.k_tenant, k.k_id, n.number FROM UNNEST($1::text[], $2::text[]) AS k (k_tenant, k_id)
                  CROSS JOIN LATERAL (SELECT number FROM {NUMBERS_TABLE}
                                       WHERE tenant_id = k.k_tenant AND version = $3 AND kind = $4
                                         AND id = k.k_id LIMIT 1) AS n"
            );
            let query = sqlx::query_as(&sql).bind(tenants).bind(keys).bind(i64::from(version)).bind(kind);
            found = query.fetch_all(&mut **tx).await?;
        }
        Tx::Sqlite(tx) => {
            let mut remaining = &ids[..];
            while !remaining.is_empty() {
                let (chunk, rest) = remaining.split_at(statement_rows(remaining.len()));
                remaining = rest;
                let sql = format!(
                    "SELECT n.tenant_id, n.id, n.number FROM {NUMBERS_TABLE} n
                       JOIN (VALUES {}) AS k ON n.tenant_id = k.column1 AND n.id = k.column2
                      WHERE n.version = ? AND n.kind = ?",
                    vec!["(?, ?)"; chunk.len()].join(", ")
                );
                let mut query = sqlx::query_as(&sql);
                for (tenant, id) in chunk {
                    query = query.bind(tenant).bind(id);
                }
                let rows: Vec<(String, String, i64)> =
                    query.bind(i64::from(version)).bind(kind).fetch_all(&mut **tx).await?;
                found.extend(rows);
            }
        }
    }
    for (tenant, id, number) in found {
        numbers.insert((tenant, id), u32::try_from(number).map_err(|e| corrupt(e.to_string()))?);
    }
    let missing: Vec<&(String, String)> = ids.iter().filter(|key| !numbers.contains_key(*key)).collect();
    // Each tenant's last number, read once by its key and moved on by the new ones.
    let mut next: BTreeMap<&str, i64> = BTreeMap::new();
    let mut new_rows = Vec::with_capacity(missing.len());
    for key in missing {
        let tenant = key.0.as_str();
        if !next.contains_key(tenant) {
            let sql =
                format!("SELECT last FROM {HEADS_TABLE} WHERE tenant_id = $1 AND version = $2 AND kind = $3");
            let last: Option<i64> = on_tx!(tx, |conn| {
                sqlx::query_scalar(&sql)
                    .bind(tenant)
                    .bind(i64::from(version))
                    .bind(kind)
                    .fetch_optional(conn)
                    .await?
            });
            next.insert(tenant, last.unwrap_or(0));
        }
        let last = next.get_mut(tenant).map(|n| {
            *n += 1;
            *n
        });
        let number = last.unwrap_or(1);
        numbers.insert(key.clone(), u32::try_from(number).map_err(|e| corrupt(e.to_string()))?);
        new_rows.push((tenant, key.1.as_str(), number));
    }
    let heads: Vec<(&str, i64)> = next.into_iter().collect();
    write_heads(tx, version, kind, &heads).await?;
    let mut remaining = &new_rows[..];
    while !remaining.is_empty() {
        let (chunk, rest) = remaining.split_at(statement_rows(remaining.len()));
        remaining = rest;
        let sql = format!(
            "INSERT INTO {NUMBERS_TABLE} (tenant_id, version, kind, id, number) VALUES {}",
            parameter_rows(numbered(tx), chunk.len(), 5)
        );
        on_tx!(tx, |conn| {
            let mut query = sqlx::query(&sql);
            for (tenant, id, number) in chunk {
                query = query.bind(*tenant).bind(i64::from(version)).bind(kind).bind(*id).bind(*number);
            }
            query.execute(conn).await?;
        });
    }
    Ok(numbers)
}

/// Records `heads` (each tenant's last number of `kind`) as the next numbering's start.
async fn write_heads(
    tx: &mut Tx<'_>,
    version: u32,
    kind: &str,
    heads: &[(&str, i64)],
) -> Result<(), ProjectionError> {
    let mut remaining = heads;
    while !remaining.is_empty() {
        let (chunk, rest) = remaining.split_at(statement_rows(remaining.len()));
        remaining = rest;
        let sql = format!(
            "INSERT INTO {HEADS_TABLE} (tenant_id, version, kind, last) VALUES {}
             ON CONFLICT (tenant_id, version, kind) DO UPDATE SET last = excluded.last",
            parameter_rows(numbered(tx), chunk.len(), 4)
        );
        on_tx!(tx, |conn| {
            let mut query = sqlx::query(&sql);
            for (tenant, last) in chunk {
                query = query.bind(*tenant).bind(i64::from(version)).bind(kind).bind(*last);
            }
            query.execute(conn).await?;
        });
    }
    Ok(())
}

/// The stored cells of `keys`.
async fn stored_cells(
    tx: &mut Tx<'_>,
    version: u32,
    keys: &[&(String, CellKey)],
) -> Result<HashMap<(String, CellKey), Cell>, ProjectionError> {
    let mut found = HashMap::with_capacity(keys.len());
    let mut rows: Vec<CellRow> = Vec::new();
    match &mut *tx {
        // Arrays, each key probed by the whole key (as `number` does).
        Tx::Postgres(tx) => {
            let tenants: Vec<&str> = keys.iter().map(|(tenant, _)| tenant.as_str()).collect();
            let grains: Vec<i32> = keys.iter().map(|(_, key)| key.grain.code()).collect();
            let starts: Vec<i64> = keys.iter().map(|(_, key)| key.start.timestamp()).collect();
            let metrics: Vec<&str> = keys.iter().map(|(_, key)| key.metric.as_str()).collect();
            let dimensions: Vec<&str> = keys.iter().map(|(_, key)| key.dimension).collect();
            let names: Vec<&str> = keys.iter().map(|(_, key)| key.key.as_str()).collect();
            let sql = format!(
                "SELECT k.k_tenant, k.k_grain, k.k_start, k.k_metric, k.k_dimension, k.k_key, c.cell
                   FROM UNNEST($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::text[])
                        AS k (k_tenant, k_grain, k_start, k_metric, k_dimension, k_key)
                  CROSS JOIN LATERAL (SELECT cell FROM {CELLS_TABLE}
                                       WHERE tenant_id = k.k_tenant AND version = $7 AND dimension = k.k_dimension
                                         AND grain = k.k_grain AND start_at = k.k_start AND metric = k.k_metric
                                         AND key = k.k_key LIMIT 1) AS c"
            );
            rows = sqlx::query_as(&sql)
                .bind(tenants)
                .bind(grains)
                .bind(starts)
                .bind(metrics)
                .bind(dimensions)
                .bind(names)
                .bind(i64::from(version))
                .fetch_all(&mut **tx)
                .await?;
        }
        Tx::Sqlite(tx) => {
            let mut remaining = keys;
            while !remaining.is_empty() {
                let (chunk, rest) = remaining.split_at(statement_rows(remaining.len()));
                remaining = rest;
                let sql = format!(
                    "SELECT c.tenant_id, c.grain, c.start_at, c.metric, c.dimension, c.key, c.cell FROM {CELLS_TABLE} c
                       JOIN (VALUES {}) AS k
                         ON c.tenant_id = k.column1 AND c.version = ? AND c.dimension = k.column5
                        AND c.grain = k.column2 AND c.start_at = k.column3 AND c.metric = k.column4 AND c.key = k.column6",
                    vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
                );
                let mut query = sqlx::query_as(&sql);
                for (tenant, key) in chunk {
                    query = query
                        .bind(tenant)
                        .bind(key.grain.code())
                        .bind(key.start.timestamp())
                        .bind(key.metric.as_str())
                        .bind(key.dimension)
                        .bind(&key.key);
                }
                let chunk_rows: Vec<CellRow> = query.bind(i64::from(version)).fetch_all(&mut **tx).await?;
                rows.extend(chunk_rows);
            }
        }
    }
    for (tenant, grain, start, metric, dimension, key, cell) in rows {
        let key = cell_key(grain, start, &metric, &dimension, key)?;
        found.insert((tenant, key), Cell::decode(&cell).map_err(corrupt)?);
    }
    Ok(found)
}

fn cell_key(
    grain: i32,
    start: i64,
    metric: &str,
    dimension: &str,
    key: String,
) -> Result<CellKey, sqlx::Error> {
    let grain = Grain::of_code(grain).ok_or_else(|| corrupt(format!("a cell of grain {grain}")))?;
    let start =
        DateTime::from_timestamp(start, 0).ok_or_else(|| corrupt(format!("a cell starting at {start}")))?;
    let metric = Metric::parse(metric).ok_or_else(|| corrupt(format!("a cell of metric {metric}")))?;
    let dimension = match dimension {
        "" => "",
        name => Dimension::parse(name).ok_or_else(|| corrupt(format!("a cell of dimension {name}")))?.name(),
    };
    Ok(CellKey { grain, start, metric, dimension, key })
}

async fn write_cells(
    tx: &mut Tx<'_>,
    version: u32,
    rows: &[(&(String, CellKey), Vec<u8>)],
) -> Result<(), ProjectionError> {
    let mut remaining = rows;
    while !remaining.is_empty() {
        let (chunk, rest) = remaining.split_at(statement_rows(remaining.len()));
        remaining = rest;
        let sql = format!(
            "INSERT INTO {CELLS_TABLE} (tenant_id, version, grain, start_at, metric, dimension, key, cell) VALUES {}
             ON CONFLICT (tenant_id, version, dimension, grain, start_at, metric, key) DO UPDATE SET cell = excluded.cell",
            parameter_rows(numbered(tx), chunk.len(), 8)
        );
        on_tx!(tx, |conn| {
            let mut query = sqlx::query(&sql);
            for ((tenant, key), cell) in chunk {
                query = query
                    .bind(tenant)
                    .bind(i64::from(version))
                    .bind(key.grain.code())
                    .bind(key.start.timestamp())
                    .bind(key.metric.as_str())
                    .bind(key.dimension)
                    .bind(&key.key)
                    .bind(cell);
            }
            query.execute(conn).await?;
        });
    }
    Ok(())
}

/// Counts every current fact of `tenant`'s definition `version` into fresh cells, numbering its
/// conversations and contacts afresh in log order: what the projection's batches would have
/// written, for facts stored without them (the load benchmark fills `report_facts` with SQL). How
/// many facts.
pub async fn recount(store: &Store, tenant: &TenantId, version: u32) -> Result<u64, ProjectionError> {
    let filter = Filter { current_only: true, ..Filter::default() };
    let (sink, mut facts) = tokio::sync::mpsc::channel(4096);
    let reading = query::each_in_log_order(store, tenant, version, &filter, sink);
    let counting = async {
        let mut numbers: [HashMap<String, u32>; 2] = [HashMap::new(), HashMap::new()];
        let mut cells: HashMap<(String, CellKey), Cell> = HashMap::new();
        let mut counted = 0u64;
        while let Some(fact) = facts.recv().await {
            let mut number = |kind: usize, id: &String| {
                let next = u32::try_from(numbers[kind].len() + 1).unwrap_or(u32::MAX);
                *numbers[kind].entry(id.clone()).or_insert(next)
            };
            let fact_counted = Counted {
                conversation: number(0, &fact.conversation_id),
                contact: number(1, &fact.contact_id),
                value: fact.value,
                business_value: fact.business_value,
            };
            for key in keys_of(&fact) {
                cells.entry((tenant.as_str().to_owned(), key)).or_default().add(&fact_counted);
            }
            counted += 1;
        }
        (numbers, cells, counted)
    };
    let (read, (numbers, cells, counted)) = tokio::join!(reading, counting);
    read?;
    let mut tx = store.begin(colloquy_infra::File::ReadModels, colloquy_infra::Durability::Durable).await?;
    for table in [CELLS_TABLE, NUMBERS_TABLE, HEADS_TABLE] {
        let sql = format!("DELETE FROM {table} WHERE tenant_id = $1 AND version = $2");
        on_tx!(&mut *tx, |conn| {
            sqlx::query(&sql).bind(tenant.as_str()).bind(i64::from(version)).execute(conn).await?;
        });
    }
    for (kind, numbered_ids) in [CONVERSATION, CONTACT].into_iter().zip(numbers) {
        let last = numbered_ids.values().max().copied().unwrap_or(0);
        write_heads(&mut tx, version, kind, &[(tenant.as_str(), i64::from(last))]).await?;
        let rows: Vec<(&str, String, i64)> =
            numbered_ids.into_iter().map(|(id, number)| (tenant.as_str(), id, i64::from(number))).collect();
        for chunk in rows.chunks(crate::rows::ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO {NUMBERS_TABLE} (tenant_id, version, kind, id, number) VALUES {}",
                parameter_rows(numbered(&tx), chunk.len(), 5)
            );
            on_tx!(&mut *tx, |conn| {
                let mut query = sqlx::query(&sql);
                for (tenant, id, number) in chunk {
                    query = query.bind(*tenant).bind(i64::from(version)).bind(kind).bind(id).bind(*number);
                }
                query.execute(conn).await?;
            });
        }
    }
    let rows: Vec<(&(String, CellKey), Vec<u8>)> =
        cells.iter().map(|(key, cell)| (key, cell.encode())).collect();
    write_cells(&mut tx, version, &rows).await?;
    tx.commit().await?;
    Ok(counted)
}

/// Whether a report over `filter` can be read from the cells: it counts the current facts as the
/// log stands now, of every metric or of some, and narrows by no dimension or kind.
pub fn serves(filter: &Filter) -> bool {
    filter.current_only
        && filter.at_position.is_none()
        && filter.kind.is_none()
        && filter.conversation_id.is_none()
        && filter.contact_id.is_none()
        && filter.agent_id.is_none()
        && filter.team_id.is_none()
        && filter.inbox_id.is_none()
        && filter.channel.is_none()
        && filter.priority.is_none()
        && filter.label.is_none()
}

/// Of a period, the whole cells to read, largest first, and the partial spans at either end whose
/// facts are folded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Pieces {
    cells: Vec<(Grain, DateTime<Utc>, DateTime<Utc>)>,
    edges: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

fn ceil(at: DateTime<Utc>, grain: Grain) -> DateTime<Utc> {
    let start = grain.start(at);
    if start == at {
        start
    } else {
        start + grain.length()
    }
}

/// The pieces of `[since, until)` with cells of `grains` (finest first; each a whole number of
/// the one before): the whole cells of the largest grain within it, then, on either side, of the
/// next grain down, and so on; what no whole cell covers is folded from the facts.
fn pieces(since: DateTime<Utc>, until: DateTime<Utc>, grains: &[Grain]) -> Pieces {
    let mut pieces = Pieces::default();
    split(since, until, grains, &mut pieces);
    pieces
}

fn split(since: DateTime<Utc>, until: DateTime<Utc>, grains: &[Grain], pieces: &mut Pieces) {
    if since >= until {
        return;
    }
    let Some((&grain, finer)) = grains.split_last() else {
        pieces.edges.push((since, until));
        return;
    };
    let (first, last) = (ceil(since, grain), grain.start(until));
    if first > last {
        return split(since, until, finer, pieces);
    }
    if first == last {
        // No whole cell, but a boundary: either side in finer pieces, so no edge spans one.
        split(since, first, finer, pieces);
        return split(first, until, finer, pieces);
    }
    pieces.cells.push((grain, first, last));
    split(since, first, finer, pieces);
    split(last, until, finer, pieces);
}

/// The most days of cells one task reads: a 30-day period's in four tasks.
const DAYS_PER_TASK: i32 = 8;

/// `cells` as tasks read them: a long run of days cut into runs of [`DAYS_PER_TASK`], so both
/// cores decode and merge them.
fn in_tasks(cells: Vec<(Grain, DateTime<Utc>, DateTime<Utc>)>) -> Vec<(Grain, DateTime<Utc>, DateTime<Utc>)> {
    let per_task = Grain::Day.length() * DAYS_PER_TASK;
    cells
        .into_iter()
        .flat_map(|(grain, from, to)| {
            let step = if grain == Grain::Day { per_task } else { to - from };
            std::iter::successors(Some(from), move |at| Some(*at + step))
                .take_while(move |at| *at < to)
                .map(move |at| (grain, at, (at + step).min(to)))
        })
        .collect()
}

/// A key of a report read from the cells: the metric and the dimension's key (`None` for a fact
/// without one, and for the whole tenant).
pub type FigureKey = (Metric, Option<String>);

/// The figures of `tenant`'s facts of `version` (of `metrics`, every one when empty) that ended in
/// `[since, until)`, for the whole tenant (`dimension` none) or per key of `dimension`: the whole
/// UTC days' cells merged, with the whole hours' and five minutes' cells and the facts of the
/// partial five minutes at either end for the tenant, or the whole six hours' cells and the facts
/// of the partial six hours for a dimension ([`pieces`]). Each piece (and each run of
/// [`DAYS_PER_TASK`] days) is read by a task of its own, so that the database reads one while this
/// process merges others.
pub async fn figures(
    store: &Store,
    tenant: &TenantId,
    version: u32,
    dimension: Option<Dimension>,
    metrics: &[Metric],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<BTreeMap<FigureKey, Cell>, StoreError> {
    let grains: &[Grain] = if dimension.is_none() { &TENANT_GRAINS } else { &KEY_GRAINS };
    let pieces = pieces(since, until, grains);
    let runs = in_tasks(pieces.cells);
    // A set of tasks: a request given up (its client gone) aborts them as it drops the set.
    let mut parts = tokio::task::JoinSet::new();
    for (grain, from, to) in runs {
        let (store, tenant, metrics) = (store.clone(), tenant.clone(), metrics.to_vec());
        parts.spawn(
            async move { cells(&store, &tenant, version, dimension, &metrics, grain, (from, to)).await },
        );
    }
    for (from, to) in pieces.edges {
        let (store, tenant, metrics) = (store.clone(), tenant.clone(), metrics.to_vec());
        parts.spawn(async move { edge(&store, &tenant, version, dimension, &metrics, (from, to)).await });
    }
    // Merged as they finish: a figure is the same whatever the order its pieces merge in.
    let mut figures: BTreeMap<FigureKey, Cell> = BTreeMap::new();
    while let Some(part) = parts.join_next().await {
        let part = match part {
            Ok(part) => part?,
            Err(failed) => match failed.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Only a runtime shutting down cancels them.
                Err(cancelled) => return Err(StoreError::Io(std::io::Error::other(cancelled))),
            },
        };
        for (key, cell) in part {
            match figures.entry(key) {
                std::collections::btree_map::Entry::Vacant(vacant) => {
                    vacant.insert(cell);
                }
                std::collections::btree_map::Entry::Occupied(mut occupied) => occupied.get_mut().merge(&cell),
            }
        }
    }
    // A cell whose only facts were superseded stays, empty: its key has no facts, as a fold would
    // not list it.
    figures.retain(|_, cell| !cell.is_empty());
    Ok(figures)
}

/// The cells of `grain` starting in `[from, to)`, merged per metric and key.
async fn cells(
    store: &Store,
    tenant: &TenantId,
    version: u32,
    dimension: Option<Dimension>,
    metrics: &[Metric],
    grain: Grain,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> Result<BTreeMap<FigureKey, Cell>, StoreError> {
    let wanted = |metric: Metric| metrics.is_empty() || metrics.contains(&metric);
    let mut gathered: BTreeMap<FigureKey, Vec<Cell>> = BTreeMap::new();
    let sql = format!(
        "SELECT metric, key, cell FROM {CELLS_TABLE}
          WHERE tenant_id = $1 AND version = $2 AND dimension = $3 AND grain = $4
            AND start_at >= $5 AND start_at < $6"
    );
    on_pool!(store, |pool| {
        let mut rows = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(i64::from(version))
            .bind(dimension.map_or("", Dimension::name))
            .bind(grain.code())
            .bind(from.timestamp())
            .bind(to.timestamp())
            .fetch(pool);
        while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
            let metric: String = row.try_get(0)?;
            let Some(metric) = Metric::parse(&metric).filter(|m| wanted(*m)) else { continue };
            let key: String = row.try_get(1)?;
            let bytes: &[u8] = row.try_get(2)?;
            let cell = Cell::decode(bytes).map_err(corrupt)?;
            let key = if key.is_empty() { None } else { Some(key) };
            gathered.entry((metric, key)).or_default().push(cell);
        }
    });
    Ok(gathered.into_iter().map(|(key, cells)| (key, Cell::merged(cells))).collect())
}

/// The current facts that ended in `[from, to)`, folded per metric and key as cells.
async fn edge(
    store: &Store,
    tenant: &TenantId,
    version: u32,
    dimension: Option<Dimension>,
    metrics: &[Metric],
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> Result<BTreeMap<FigureKey, Cell>, StoreError> {
    let filter = Filter {
        metrics: metrics.to_vec(),
        since: Some(from),
        until: Some(to),
        current_only: true,
        ..Filter::default()
    };
    let edge = query::tallied(store, tenant, version, &filter, dimension).await?;
    // Looked up once per conversation and contact, not per fact: six hours' facts name a few
    // thousand conversations.
    let conversations =
        numbers_of(store, tenant, version, CONVERSATION, edge.iter().map(|f| &f.conversation_id)).await?;
    let contacts = numbers_of(store, tenant, version, CONTACT, edge.iter().map(|f| &f.contact_id)).await?;
    let mut figures: BTreeMap<FigureKey, Gathered> = BTreeMap::new();
    for fact in edge {
        let counted = Counted {
            conversation: conversations.get(&fact.conversation_id).copied().unwrap_or_default(),
            contact: contacts.get(&fact.contact_id).copied().unwrap_or_default(),
            value: fact.value,
            business_value: fact.business_value,
        };
        for key in fact.keys {
            figures.entry((fact.metric, key)).or_default().add(&counted);
        }
    }
    Ok(figures.into_iter().map(|(key, gathered)| (key, gathered.cell())).collect())
}

/// The stored numbers of `ids` of `kind`: on PostgreSQL in one statement (an array the planner
/// looks up key by key), on SQLite a few hundred at a time.
async fn numbers_of<'a>(
    store: &Store,
    tenant: &TenantId,
    version: u32,
    kind: &str,
    ids: impl Iterator<Item = &'a String>,
) -> Result<HashMap<String, u32>, StoreError> {
    let ids: Vec<&str> = ids.map(String::as_str).collect::<BTreeSet<_>>().into_iter().collect();
    let mut found: Vec<(String, i64)> = Vec::new();
    if let Some(pool) = store.reads().postgres() {
        let sql = format!(
            "SELECT n.id, n.number FROM {NUMBERS_TABLE} n JOIN UNNEST($4::text[]) AS k (k_id) ON n.id = k.k_id
              WHERE n.tenant_id = $1 AND n.version = $2 AND n.kind = $3"
        );
        let query = sqlx::query_as(&sql).bind(tenant.as_str()).bind(i64::from(version)).bind(kind).bind(&ids);
        found = query.fetch_all(pool).await?;
    } else if let Some(pool) = store.reads().sqlite() {
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> = (0..chunk.len()).map(|n| format!("${}", n + 4)).collect();
            let sql = format!(
                "SELECT id, number FROM {NUMBERS_TABLE} WHERE tenant_id = $1 AND version = $2 AND kind = $3
                    AND id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_as(&sql).bind(tenant.as_str()).bind(i64::from(version)).bind(kind);
            for id in chunk {
                query = query.bind(*id);
            }
            found.extend(query.fetch_all(pool).await?);
        }
    }
    let mut numbers = HashMap::with_capacity(found.len());
    for (id, number) in found {
        numbers.insert(id, u32::try_from(number).map_err(|e| corrupt(e.to_string()))?);
    }
    Ok(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 time")
    }

    #[test]
    fn a_period_is_whole_days_then_whole_hours_then_whole_five_minutes_then_the_facts() {
        let pieces = pieces(utc("2026-11-01T10:22:00Z"), utc("2026-11-04T03:07:30Z"), &TENANT_GRAINS);
        assert_eq!(
            pieces.cells,
            vec![
                (Grain::Day, utc("2026-11-02T00:00:00Z"), utc("2026-11-04T00:00:00Z")),
                (Grain::Hour, utc("2026-11-01T11:00:00Z"), utc("2026-11-02T00:00:00Z")),
                (Grain::FiveMinutes, utc("2026-11-01T10:25:00Z"), utc("2026-11-01T11:00:00Z")),
                (Grain::Hour, utc("2026-11-04T00:00:00Z"), utc("2026-11-04T03:00:00Z")),
                (Grain::FiveMinutes, utc("2026-11-04T03:00:00Z"), utc("2026-11-04T03:05:00Z")),
            ]
        );
        assert_eq!(
            pieces.edges,
            vec![
                (utc("2026-11-01T10:22:00Z"), utc("2026-11-01T10:25:00Z")),
                (utc("2026-11-04T03:05:00Z"), utc("2026-11-04T03:07:30Z"))
            ]
        );
    }

    #[test]
    fn a_period_within_a_day_or_an_hour_uses_the_grains_it_holds() {
        let within_a_day = pieces(utc("2026-11-01T10:00:00Z"), utc("2026-11-01T12:30:00Z"), &TENANT_GRAINS);
        assert_eq!(
            within_a_day.cells,
            vec![
                (Grain::Hour, utc("2026-11-01T10:00:00Z"), utc("2026-11-01T12:00:00Z")),
                (Grain::FiveMinutes, utc("2026-11-01T12:00:00Z"), utc("2026-11-01T12:30:00Z")),
            ]
        );
        assert!(within_a_day.edges.is_empty());
        let within_five = pieces(utc("2026-11-01T10:06:00Z"), utc("2026-11-01T10:09:00Z"), &TENANT_GRAINS);
        assert!(within_five.cells.is_empty());
        assert_eq!(within_five.edges, vec![(utc("2026-11-01T10:06:00Z"), utc("2026-11-01T10:09:00Z"))]);
        let aligned = pieces(utc("2026-11-01T00:00:00Z"), utc("2026-11-03T00:00:00Z"), &TENANT_GRAINS);
        assert_eq!(
            aligned.cells,
            vec![(Grain::Day, utc("2026-11-01T00:00:00Z"), utc("2026-11-03T00:00:00Z"))]
        );
        assert!(aligned.edges.is_empty());
        assert_eq!(
            pieces(utc("2026-11-03T00:00:00Z"), utc("2026-11-01T00:00:00Z"), &TENANT_GRAINS),
            Pieces::default()
        );
    }

    #[test]
    fn for_a_key_a_period_is_whole_days_then_whole_six_hours_then_the_facts() {
        let pieces = pieces(utc("2026-11-01T10:20:00Z"), utc("2026-11-04T03:05:00Z"), &KEY_GRAINS);
        assert_eq!(
            pieces.cells,
            vec![
                (Grain::Day, utc("2026-11-02T00:00:00Z"), utc("2026-11-04T00:00:00Z")),
                (Grain::SixHours, utc("2026-11-01T12:00:00Z"), utc("2026-11-02T00:00:00Z")),
            ]
        );
        assert_eq!(
            pieces.edges,
            vec![
                (utc("2026-11-01T10:20:00Z"), utc("2026-11-01T12:00:00Z")),
                (utc("2026-11-04T00:00:00Z"), utc("2026-11-04T03:05:00Z"))
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn the_pieces_tile_the_period_exactly(
            start in 0i64..10_000_000,
            // Short spans as often as long ones: those within a cell, or across one boundary.
            length in proptest::prop_oneof![0i64..1_000, 0i64..50_000, 0i64..5_000_000],
            of_a_key in proptest::bool::ANY,
        ) {
            let since = utc("2026-01-01T00:00:00Z") + chrono::Duration::seconds(start);
            let until = since + chrono::Duration::seconds(length);
            let grains: &[Grain] = if of_a_key { &KEY_GRAINS } else { &TENANT_GRAINS };
            let pieces = pieces(since, until, grains);
            let tasks = in_tasks(pieces.cells.clone());
            let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> =
                tasks.iter().map(|(_, from, to)| (*from, *to)).chain(pieces.edges.iter().copied()).collect();
            for (grain, from, to) in &tasks {
                proptest::prop_assert_eq!(grain.start(*from), *from);
                proptest::prop_assert_eq!(grain.start(*to), *to);
                proptest::prop_assert!(*grain != Grain::Day || *to - *from <= Grain::Day.length() * DAYS_PER_TASK);
            }
            spans.sort();
            let mut at = since;
            for (from, to) in spans {
                proptest::prop_assert_eq!(from, at);
                proptest::prop_assert!(from < to);
                at = to;
            }
            proptest::prop_assert_eq!(at, until.max(since));
            for (from, to) in &pieces.edges {
                proptest::prop_assert!(*to - *from < grains[0].length());
            }
        }
    }
}
