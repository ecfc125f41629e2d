-- Secondary indexes of a read model that a rebuild dropped while it writes the rows, with the
-- statement that builds each again. A rebuild notes an index here in the transaction that drops
-- it, and forgets it in the transaction that builds it; one that stopped early leaves its notes,
-- and the indexes are built at the next start of the projectors (projections/src/deferred.rs).
-- A migration that changes one of these indexes must drop it with IF EXISTS and delete its note.
CREATE TABLE deferred_indexes
(
    index_name text PRIMARY KEY,
    table_name text NOT NULL,
    definition text NOT NULL
);
