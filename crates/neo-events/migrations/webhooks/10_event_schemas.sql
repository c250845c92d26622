-- JSON Schemas of event payloads, one per event type and schema version
-- (DomainEvent::schema_version): versions of a type coexist. One catalogue for every tenant,
-- like webhook_event_types; an event type with no row here is not checked.
CREATE TABLE webhook_event_schemas (
    event_type text NOT NULL,
    version integer NOT NULL CHECK (version > 0),
    schema jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_type, version)
);
