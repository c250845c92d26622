-- Cancellation (Queue::cancel, cancel_unique_keys, cancel_matching): a cancelled job keeps
-- its row in state 'cancelled' (readable by id, pruned by retention) and frees its unique
-- key. A running job cancelled loses its lease at once, so its fenced ack or nack is refused.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('available', 'running', 'dead', 'cancelled')) NOT VALID;
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD COLUMN cancelled_at timestamptz;
CREATE INDEX jobs_cancelled ON jobs (cancelled_at, id) WHERE state = 'cancelled';
-- Cancelling by unique key finds the pending or running job of the key through the unique
-- index; cancelling by kind needs this one.
CREATE INDEX jobs_pending_by_kind ON jobs (kind) WHERE state IN ('available', 'running');
