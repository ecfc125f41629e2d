-- Personal data under a key per contact (docs/adr/0011, infra/src/personal.rs). Each data key is
-- kept wrapped by a master key (its id beside it); an erasure sets the key to NULL and
-- `erased_at` in the commit that records it, so the contact's sealed values read as erased from
-- then on. `personal_master_keys` holds the master key the store keeps when none is configured.
CREATE TABLE personal_keys
(
    tenant_id     text NOT NULL,
    subject_id    text NOT NULL,
    master_key_id text,
    wrapped_key   blob,
    created_at    text NOT NULL,
    erased_at     text,
    PRIMARY KEY (tenant_id, subject_id),
    CHECK ((wrapped_key IS NULL) = (erased_at IS NOT NULL))
) STRICT;

CREATE TABLE personal_master_keys
(
    id  text PRIMARY KEY,
    key text NOT NULL
) STRICT;
