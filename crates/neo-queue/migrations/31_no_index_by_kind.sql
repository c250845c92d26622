-- Migration 11's `jobs_pending_by_kind` held an entry for every waiting and running job, so
-- every enqueue and every claim (a claim writes a new row version, still indexed as
-- 'running') paid for one more index insert, all under the same few keys. Cancelling by
-- kind (Queue::cancel_matching) is an operator's rare bulk action: it scans the table
-- instead, and the hot path pays nothing for it.
DROP INDEX IF EXISTS jobs_pending_by_kind;
