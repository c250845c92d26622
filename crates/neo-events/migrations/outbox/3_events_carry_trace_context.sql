-- The W3C trace context (`{"traceparent": ..., "tracestate": ...}`) of the span that published
-- the event (DomainEvent::trace_context), which the dispatch span and the webhook deliveries
-- link to. NULL for an event published outside a traced span. The archive gets the same column
-- in the same place, so archival's `INSERT ... SELECT *` still lines up.
ALTER TABLE outbox ADD COLUMN trace_context jsonb;
ALTER TABLE outbox_archive ADD COLUMN trace_context jsonb;
