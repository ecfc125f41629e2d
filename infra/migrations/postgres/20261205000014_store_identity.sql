-- The store's own id, made once when the store is new (infra/src/store.rs, `Store::id`). A
-- JetStream stream is bound to the store whose relay made it, so a new or restored store beside
-- a stream of another store is refused loudly instead of projecting nothing (infra/src/relay.rs).
-- `secret` keys the ids the server derives (a contact made for a phone number), so that no other
-- tenant can compute one and take it first; it is never sent anywhere.
CREATE TABLE store_identity
(
    singleton integer PRIMARY KEY CHECK (singleton = 1),
    store_id  text    NOT NULL,
    secret    text    NOT NULL
);
