-- Audit forwarding (audit.sinks): each sink's durable cursor, the last event the sink is known
-- to have; the forwarder sends the events after it and moves it forward, never back.
CREATE TABLE audit_sink_cursors (
    sink TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Agents' clocks: the agent's clock minus the server's, from its latest heartbeat (haechi doctor).
ALTER TABLE nodes ADD COLUMN clock_skew_ms BIGINT;
