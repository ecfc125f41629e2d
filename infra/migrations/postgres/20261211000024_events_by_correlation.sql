-- A request's events by its correlation id, for `POST /v1/commands/{correlation_id}/revert`
-- (`Store::correlated`): without it, finding them reads every event of the tenant.
CREATE INDEX events_correlation ON events (tenant_id, (metadata ->> 'correlation_id'));
