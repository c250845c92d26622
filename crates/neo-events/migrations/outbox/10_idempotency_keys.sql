-- Idempotent publish (Outbox::publish_idempotent): the first event published under a key, per
-- tenant (events of no tenant share one scope), kept until expires_at. A key seen again before
-- then publishes nothing and answers this event_id; after it, the key starts over.
CREATE TABLE outbox_idempotency (
    tenant_id uuid,
    key text NOT NULL,
    event_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX outbox_idempotency_key
    ON outbox_idempotency ((coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)), key);
CREATE INDEX outbox_idempotency_expiry ON outbox_idempotency (expires_at);
