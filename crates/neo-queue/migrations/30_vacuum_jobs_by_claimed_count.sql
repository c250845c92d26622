-- Every claim leaves the entries of the jobs it took in the claim indexes (they index
-- state = 'available' only) until vacuum removes them, and they sit where the next claim
-- starts reading: the oldest jobs. By default autovacuum waits until a fifth of the table is
-- dead, so under a backlog the dead entries grow with it: at 1,000,000 waiting jobs, 200,000
-- claimed jobs were walked by every fair claim (1,459 index pages, 24 ms instead of 1.8 ms;
-- EXPLAIN ANALYZE). Vacuum the table once 10,000 rows are dead, whatever its size, so a claim
-- never walks more than about 70 pages of them.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);
