CREATE TABLE webhook_event_types (
    name text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    schema jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_endpoints (
    id uuid PRIMARY KEY,
    tenant_id uuid,
    url text NOT NULL,
    -- The current secret first, then earlier ones still signed with until secrets_overlap_until.
    secrets text[] NOT NULL,
    secrets_overlap_until timestamptz,
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    rate_limit_per_second integer CHECK (rate_limit_per_second > 0),
    headers jsonb NOT NULL DEFAULT '{}',
    description text NOT NULL DEFAULT '',
    fifo boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id);

CREATE TABLE webhook_subscriptions (
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- An event type, a prefix ending in ".*", or "*".
    filter text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint_id, filter)
);

CREATE TABLE webhook_messages (
    id uuid PRIMARY KEY,
    event_type text NOT NULL,
    tenant_id uuid,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    message_id uuid NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE,
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- pending, delivered, dead
    status text NOT NULL DEFAULT 'pending',
    -- A delivery job exists for it (FIFO endpoints queue only their oldest pending delivery).
    queued boolean NOT NULL DEFAULT false,
    attempts integer NOT NULL DEFAULT 0,
    response_status integer,
    response_body text,
    duration_ms integer,
    last_error text,
    next_attempt_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    UNIQUE (message_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, status, updated_at);
CREATE INDEX webhook_deliveries_fifo_head ON webhook_deliveries (endpoint_id, id) WHERE status = 'pending';
