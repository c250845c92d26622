-- Multi-region delivery: an endpoint's region (NULL: the default one), copied onto each of its
-- deliveries by fan-out so that the statement's own RETURNING picks the job kind of the
-- region (`{job_kind}:{region}`), which only that region's workers claim.
ALTER TABLE webhook_endpoints ADD COLUMN region text;
ALTER TABLE webhook_deliveries ADD COLUMN region text;
