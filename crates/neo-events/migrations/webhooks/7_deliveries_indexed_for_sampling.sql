-- The sampler's (neo-observe) webhook queries read an index instead of the whole table. At 1M
-- deliveries, endpoint health (deliveries updated in the health window) was a sequential scan
-- of every row (129-210 ms per sample) and the dead-delivery count read every row when fewer
-- dead ones than its cap exist (179-193 ms); with these they read only what they count
-- (0.5 ms and 0.9 ms; docs/PERFORMANCE.md). Rows are updated with a new `updated_at`, which an
-- index already holds (`webhook_deliveries_endpoint`), so no update was HOT before; appending
-- to the right edge of this one costs little. The dead index holds dead deliveries only.
CREATE INDEX webhook_deliveries_updated ON webhook_deliveries (updated_at);
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (id) WHERE status = 'dead';
