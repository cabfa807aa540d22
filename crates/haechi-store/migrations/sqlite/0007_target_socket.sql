-- A database target the gateway reaches over a Unix socket on its own machine instead of TCP
-- (PostgreSQL: the socket directory, as libpq's host; MySQL: the socket file). host and port
-- stay the target's address, which policies match.
ALTER TABLE db_targets ADD COLUMN socket TEXT;
