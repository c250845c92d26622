-- Endpoint verification (WebhookConfig::require_verification): 'pending' until the receiver
-- answers a signed challenge; NULL when verified or never asked. Deliveries to a pending
-- endpoint are recorded but get no job (queued = false) until it is verified.
ALTER TABLE webhook_endpoints
    ADD COLUMN verification text,
    ADD COLUMN verification_challenge text,
    ADD COLUMN verification_expires_at timestamptz,
    ADD COLUMN verified_at timestamptz;
