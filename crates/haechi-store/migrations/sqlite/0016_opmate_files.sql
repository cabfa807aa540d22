-- OPMATE's file repository (issue 24 item 8): files uploaded through the API or put by running
-- scripts, and the per-run tokens with which a running script reaches them through its agent.

-- One row per file name; a replace bumps `version`. `encryption` is 'vault' (content sealed
-- with the vault's active data key `key_id`, bound to the name and version, `nonce` set) or
-- 'plain' (content as given). `sha256` is of the plaintext, hex.
CREATE TABLE opmate_files (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    encryption TEXT NOT NULL CHECK (encryption IN ('vault', 'plain')),
    key_id BIGINT,
    nonce BLOB,
    content BLOB NOT NULL,
    version BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The SHA-256 (hex) of the file token an agent gave a running execution's script. Only good
-- while the execution is WAIT or RUN on that node; removed when its result is committed.
CREATE TABLE opmate_file_tokens (
    exec_id BIGINT PRIMARY KEY,
    node_id TEXT NOT NULL,
    token_sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
