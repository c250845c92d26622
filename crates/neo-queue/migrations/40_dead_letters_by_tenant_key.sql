-- One tenant's dead letters (the operations console's tenant view: its count and its keyset
-- pages by dead_at, id) read from here instead of filtering every tenant's out of
-- `jobs_dead`. Only dead jobs are in it, so a claim or an ack never writes to it.
CREATE INDEX jobs_dead_by_tenant_key ON jobs (tenant, dead_at, id) WHERE state = 'dead';
