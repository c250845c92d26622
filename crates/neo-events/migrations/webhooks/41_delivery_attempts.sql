-- Each delivery's latest attempts (WebhookConfig::attempt_history of them: attempt n is kept
-- in slot n % attempt_history, so a delivery never holds more rows than that), written by the
-- statement that records an attempt's outcome on its delivery (one statement, one round
-- trip). Response body and error are excerpts. No foreign key (as for deliveries, migration
-- 2): the rows go with their delivery in purge, delete_endpoint and offboarding.
CREATE TABLE webhook_delivery_attempts (
    delivery_id bigint NOT NULL,
    slot integer NOT NULL,
    attempt integer NOT NULL,
    endpoint_id uuid NOT NULL,
    tenant_id uuid,
    -- The delivery's status after the attempt: delivered, pending (a retry follows), dead.
    outcome text NOT NULL,
    response_status integer,
    response_excerpt text,
    duration_ms integer,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, slot)
);
