-- Workflows (Queue::enqueue_many with NewJob::depends_on): a job that depends on others
-- waits in state 'waiting' (never claimed) with the ids it still waits for in `depends_on`,
-- and what to do when one of them dies or is cancelled in `on_dependency_failure`. A job
-- that others depend on has `has_dependents` set: the ack, nack and rescue statements leave
-- such jobs to a second statement that also moves their dependents on, so a job without
-- dependents costs what it did before. All three columns are NULL on every other job, which
-- costs no bytes (the row's null bitmap already has room), and the index holds only waiting
-- jobs.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('available', 'running', 'dead', 'cancelled', 'waiting')) NOT VALID;
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD COLUMN depends_on uuid[];
ALTER TABLE jobs ADD COLUMN on_dependency_failure text
    CHECK (on_dependency_failure IN ('cancel', 'fail', 'run'));
ALTER TABLE jobs ADD COLUMN has_dependents boolean;
CREATE INDEX jobs_waiting_on ON jobs USING gin (depends_on) WHERE state = 'waiting';
