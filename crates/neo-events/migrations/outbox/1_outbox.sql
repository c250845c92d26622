CREATE TABLE outbox (
    id uuid PRIMARY KEY,
    event_type text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    tenant_id uuid,
    payload jsonb NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL,
    correlation_id uuid,
    causation_id uuid,
    schema_version integer NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);
CREATE INDEX outbox_pending ON outbox (recorded_at, id) WHERE processed_at IS NULL;
CREATE INDEX outbox_processed ON outbox (processed_at) WHERE processed_at IS NOT NULL;
CREATE TABLE outbox_archive (LIKE outbox INCLUDING DEFAULTS);
ALTER TABLE outbox_archive ADD PRIMARY KEY (id);
