-- Tamper evidence (docs/adr/0010): each event's link in its tenant's hash chain, by global
-- position. The writer computes the links (SQLite has no SHA-256 of its own) inside the
-- transaction that appends the events (infra/src/writer.rs), so no event commits without its
-- link; events stored before this migration are linked when the store next opens
-- (`chain::link_unlinked`). `colloquy audit verify` recomputes the chain and names the first
-- position where a stored event no longer matches.
CREATE TABLE event_hashes
(
    position integer PRIMARY KEY,
    hash     blob    NOT NULL CHECK (length(hash) = 32)
) STRICT;
