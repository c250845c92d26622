-- The lease index serves the rescue of expired leases only. Its old predicate
-- (state = 'running') was implied by the ownership check of every ack, nack, heartbeat and
-- release, so PostgreSQL answered those with a bitmap scan of this index instead of one
-- primary-key probe per receipt. Bitmap scans never mark dead index entries, so each scan read
-- the entry of every job finished since the last vacuum: 2.35 million entries for 242 acks in
-- a 20,000-delivery webhook run. Rescue states the extra condition; the receipt statements do
-- not, so they can only use the primary key.
DROP INDEX jobs_lease;
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running' AND lease_owner IS NOT NULL;
