-- Progress and output (JobContext::record_progress, Queue::job_output): what a running job's
-- handler recorded, kept apart from `jobs` so that it outlives the job's ack (which deletes
-- the job) and is pruned on its own (QueueConfig::retain_outputs). Written only under the
-- job's live claim (its id, fence and unexpired lease).
CREATE TABLE job_outputs (
    id uuid PRIMARY KEY,
    tenant text,
    kind text NOT NULL,
    progress real CHECK (progress >= 0 AND progress <= 100),
    output jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_outputs_updated ON job_outputs (updated_at, id);
