-- A checkpoint's generation: `projections rebuild` moves it on when it clears a read model, so a
-- projector in another process that applied batches before the reset learns that they are gone
-- and goes on from the rebuild's checkpoint, instead of saving its own further one over it.
-- (On a store whose read models were moved to their own file this alters the table there.)
ALTER TABLE checkpoints ADD COLUMN generation integer NOT NULL DEFAULT 0;
