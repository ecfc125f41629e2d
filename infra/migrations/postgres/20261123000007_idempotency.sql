-- Idempotency keys (infra/src/idempotency.rs): the first response to a POST with an
-- Idempotency-Key, replayed to retries with the same key and request. A row with no status is a
-- request still running. Rows are kept 24 hours. Times are Unix milliseconds.
CREATE TABLE idempotency_keys
(
    tenant_id    text   NOT NULL,
    key          text   NOT NULL,
    request_hash text   NOT NULL,
    status       bigint,
    headers      text,
    body         bytea,
    created_at   bigint NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
