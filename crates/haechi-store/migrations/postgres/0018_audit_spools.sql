-- Where each audit spool's replay stands (`haechi_audit` spool: under `audit.durability =
-- strict` on SQLite an event is written to a file beside the database before its answer
-- leaves, and committed here a few milliseconds later). `applied` is the number of the last
-- spooled event committed, moved in the same transaction as the events: at start, the records
-- after it are appended. PostgreSQL keeps no spool; the table is here so both schemas match.
CREATE TABLE audit_spools (
    name TEXT PRIMARY KEY,
    applied BIGINT NOT NULL
);
