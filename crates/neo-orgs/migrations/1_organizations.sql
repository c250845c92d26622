CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;

CREATE TABLE organizations (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    slug text NOT NULL,
    display_name text,
    description text,
    status text NOT NULL,
    suspension_reason text,
    verification jsonb NOT NULL DEFAULT '{}',
    primary_contact uuid,
    legal jsonb NOT NULL DEFAULT '{}',
    branding jsonb NOT NULL DEFAULT '{}',
    website text,
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    version bigint NOT NULL
);
-- Slugs stay reserved while an organization is soft-deleted, so it can be restored.
CREATE UNIQUE INDEX organizations_slug ON organizations (slug);
CREATE INDEX organizations_name_id ON organizations (name, id) WHERE deleted_at IS NULL;
CREATE INDEX organizations_search ON organizations
    USING gin ((name || ' ' || slug) public.gin_trgm_ops) WHERE deleted_at IS NULL;

CREATE TABLE organization_domains (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    domain text NOT NULL UNIQUE,
    verification_token text NOT NULL,
    verified_at timestamptz,
    PRIMARY KEY (organization_id, domain)
);

CREATE TABLE organization_members (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id uuid NOT NULL,
    role text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);

CREATE TABLE organization_audit (
    id bigserial PRIMARY KEY,
    organization_id uuid NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    before jsonb,
    after jsonb,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organization_audit_org ON organization_audit (organization_id, id);
