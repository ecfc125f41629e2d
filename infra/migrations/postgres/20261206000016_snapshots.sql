-- Snapshots of aggregates (infra/src/snapshots.rs): one aggregate's state at a version, so that
-- loading it reads the snapshot and the events after it, not its whole history. Derived data: a
-- lost one costs only a longer load. The state is the aggregate's serde form, kept as text (it
-- is only ever read back whole); `shape` names that form's version (`Snapshot::SHAPE`).
CREATE TABLE snapshots
(
    tenant_id      text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL,
    shape          bigint      NOT NULL,
    state          text        NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, aggregate_type, aggregate_id)
);
