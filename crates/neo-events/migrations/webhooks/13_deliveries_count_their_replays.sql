-- A delivery's job is unique per delivery and life: a replay starts a new life whose job has a
-- key of its own (`webhook-delivery:{id}:replay-{replays}`), so a replay made while the job that
-- let the delivery die is still unacknowledged is not skipped as its duplicate.
ALTER TABLE webhook_deliveries ADD COLUMN replays integer NOT NULL DEFAULT 0;
