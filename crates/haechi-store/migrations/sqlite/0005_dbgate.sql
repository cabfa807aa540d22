-- DB gateway: DBSAFER access policies, database targets and their accounts.
CREATE TABLE db_policies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    policy_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    account TEXT,
    client_ip_begin TEXT,
    client_ip_end TEXT,
    server_address TEXT,
    server_port BIGINT,
    sid TEXT,
    sql_privileges TEXT NOT NULL DEFAULT '[]',
    policy_type TEXT,
    reserved1 TEXT,
    reserved2 TEXT,
    reserved3 TEXT,
    start_at BIGINT,
    end_at BIGINT,
    locked BOOLEAN NOT NULL DEFAULT 0,
    -- Set by a time-boxed unlock: the policy counts as locked from this instant on.
    relock_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX db_policies_user ON db_policies(user_id);

-- Bumped in the transaction of every policy change, so every server sharing the store
-- notices a change made by another and reloads its in-memory copy.
CREATE TABLE db_policy_version (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO db_policy_version (id, version) VALUES (1, 0);

CREATE TABLE db_targets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('postgres', 'mysql')),
    host TEXT NOT NULL,
    port BIGINT NOT NULL,
    database TEXT NOT NULL,
    tls TEXT NOT NULL DEFAULT 'disable',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The password of an account is the value of attribute `attribute` of vault credential
-- `credential_id`; it is never stored here.
CREATE TABLE db_accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target_id BIGINT NOT NULL REFERENCES db_targets(id) ON DELETE CASCADE,
    account TEXT NOT NULL,
    credential_id BIGINT NOT NULL,
    attribute TEXT NOT NULL,
    registered_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (target_id, account)
);
