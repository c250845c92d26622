-- A user's organizations in one index range (the primary key serves an organization's
-- members): `Memberships::organizations_of` pages by organization id.
CREATE INDEX organization_members_user ON organization_members (user_id, organization_id);
