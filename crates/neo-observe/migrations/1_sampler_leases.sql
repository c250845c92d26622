-- One row per sampler name: the instance that holds the lease samples until expires_at.
CREATE TABLE sampler_leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires_at timestamptz NOT NULL
);
