-- Rate limits (QueueConfig::rate_limit): the jobs each partition (the queue, a tenant or a
-- kind) started, per slot of a sixteenth of the period; `slot` is when the slot ends. A claim
-- of a rate-limited queue counts the starts whose slot ends within the last period, adds the
-- jobs it takes to the current slot and deletes the expired slots of the partitions it
-- touched, all in its one statement. Rows live about one period; Queue::prune deletes the
-- expired ones no claim came back for. Unused (empty) by queues without a rate limit.
CREATE TABLE rate_limit_starts (
    partition text NOT NULL,
    slot timestamptz NOT NULL,
    started int8 NOT NULL CHECK (started > 0),
    PRIMARY KEY (partition, slot)
);
