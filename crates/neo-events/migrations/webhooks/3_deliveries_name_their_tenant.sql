-- Each delivery names the tenant of its message, so that the fan-out statement can hand it to
-- the delivery's queue job from its own RETURNING (no join, no second statement), and so can
-- replay and the FIFO head. Existing deliveries take their message's tenant.
ALTER TABLE webhook_deliveries ADD COLUMN tenant_id uuid;

UPDATE webhook_deliveries d SET tenant_id = m.tenant_id
    FROM webhook_messages m
    WHERE m.id = d.message_id AND m.tenant_id IS NOT NULL;
