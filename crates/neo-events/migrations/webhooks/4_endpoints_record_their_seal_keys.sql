-- The ids of the keys the endpoint's secrets and header values are sealed under, sorted, with
-- '' for a value stored as plain text: what key rotation, retiring a key and the strict mode
-- (no plain text left) count without opening any value. NULL: not examined yet (rows written
-- before this column); Webhooks examines them (reading only the key id each value names).
ALTER TABLE webhook_endpoints ADD COLUMN sealed_with text[];
