-- Periodic jobs (neo_queue::PeriodicJobs): one row per periodic job, with its last tick, the
-- latest one that was enqueued (or passed by its catch-up policy or a pause). A scheduler's
-- round advances `last_tick` from the value it read, in the statement that inserts the tick's
-- jobs: of N schedulers racing for a tick exactly one advances it, so exactly one enqueues it.
-- Operator state, not a tenant's (like queue_pause): no tenant column, no row-level security.
CREATE TABLE periodic_jobs (
    name text PRIMARY KEY,
    last_tick timestamptz NOT NULL,
    known_since timestamptz NOT NULL DEFAULT now(),
    paused_at timestamptz,
    paused_by text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
