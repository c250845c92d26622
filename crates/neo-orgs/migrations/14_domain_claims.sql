-- Domain claims for verification by DNS: the domain and its token stay in
-- `organization_domains`; here, until when the claim stands, when DNS showed the token and
-- whether the verified domain lets users with matching e-mail addresses join (opt-in).
CREATE TABLE organization_domain_claims (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    domain text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    verified_at timestamptz,
    auto_join boolean NOT NULL DEFAULT false,
    PRIMARY KEY (organization_id, domain)
);
-- Auto-join looks up the organizations of one e-mail domain.
CREATE INDEX organization_domain_claims_joinable ON organization_domain_claims (domain)
    WHERE auto_join AND verified_at IS NOT NULL;
