-- The W3C trace context (`{"traceparent": ..., "tracestate": ...}`) of the span that enqueued
-- the job, so the job's run can link to it (NewJob::trace_context, Job::trace_context). NULL
-- when the job was enqueued outside a traced span. A nullable column without a default: adding
-- it rewrites nothing.
ALTER TABLE jobs ADD COLUMN trace_context jsonb;
