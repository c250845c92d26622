-- Organization verification with documents: the host stores the documents, here only their
-- ids and kinds; the status moves submitted -> in_review -> verified / rejected, each move
-- with its audit record below (and its event through the outbox, in the same transaction).
CREATE TABLE organization_verifications (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    status text NOT NULL,
    documents jsonb NOT NULL,
    submitted_by text NOT NULL,
    reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organization_verifications_org ON organization_verifications (organization_id, created_at);

CREATE TABLE organization_verification_audit (
    id bigserial PRIMARY KEY,
    verification_id uuid NOT NULL REFERENCES organization_verifications (id) ON DELETE CASCADE,
    actor text NOT NULL,
    from_status text,
    to_status text NOT NULL,
    reason text,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organization_verification_audit_of ON organization_verification_audit (verification_id, id);
