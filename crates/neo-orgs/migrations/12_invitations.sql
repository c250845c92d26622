-- Invitations to join an organization: the token's SHA-256 only (the token itself is handed
-- to the host once, to send), single use (`accepted_at`), revocable, with an expiry.
CREATE TABLE organization_invitations (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email text NOT NULL,
    role text NOT NULL,
    token_hash bytea NOT NULL,
    invited_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    accepted_at timestamptz,
    accepted_by uuid,
    revoked_at timestamptz
);
CREATE INDEX organization_invitations_org ON organization_invitations (organization_id, id);
