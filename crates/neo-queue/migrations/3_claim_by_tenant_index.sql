-- Fair claims (QueueConfig::fair_claims, max_running_per_tenant) take turns across tenants:
-- they find the tenants with available jobs by skipping from one tenant to the next in this
-- index, and read each tenant's next jobs (highest priority, then oldest) from it. `id` is
-- the last column so that the claim's order (priority DESC, run_at, id) is this index's order
-- and no other, which keeps the planner from reading one tenant's jobs out of `jobs_claim`
-- by filtering every other tenant's.
CREATE INDEX jobs_claim_by_tenant ON jobs (tenant, priority DESC, run_at, id) WHERE state = 'available';
