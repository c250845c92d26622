-- An endpoint's deliveries in id order (keyset pages newest first, health over the latest
-- deliveries) for the operations console, whatever their status.
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
