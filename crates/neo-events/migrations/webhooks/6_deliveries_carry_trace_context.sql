-- Each delivery keeps the W3C trace context of its event (`{"traceparent", "tracestate"}`), so
-- that its queue job carries it whenever the job is made: by the fan-out statement's own
-- RETURNING, and later by replay and by a FIFO endpoint's next turn. The delivery span links to
-- it, and with WebhookConfig::send_trace_context the request sends it. NULL for an event
-- without one; existing deliveries have none.
ALTER TABLE webhook_deliveries ADD COLUMN trace_context jsonb;
