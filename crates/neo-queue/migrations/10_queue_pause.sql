-- Pause (Queue::pause, Queue::resume): while this table has its one row, every claim of the
-- queue comes back empty (the claim's `NOT EXISTS` over it is an uncorrelated subquery,
-- evaluated once per claim). Workers keep heartbeating the jobs they hold; running jobs finish.
CREATE TABLE queue_pause (
    paused boolean PRIMARY KEY DEFAULT true CHECK (paused),
    paused_at timestamptz NOT NULL DEFAULT now(),
    paused_by text
);
