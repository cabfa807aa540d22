-- Credential vault (Control Room 11.3): lockers, their members and consumers, credentials,
-- attributes, encrypted values, wrapped data keys, and the vault's mode and key check.
-- No plaintext value or key is ever stored: values are AES-256-GCM ciphertexts under data keys
-- that are themselves stored only wrapped by a key derived from the master key.
CREATE TABLE vault_data_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    wrapped BLOB NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE vault_state (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    mode TEXT NOT NULL CHECK (mode IN ('Express', 'Manual')),
    kek_salt BLOB NOT NULL,
    key_check BLOB NOT NULL,
    active_key_id BIGINT NOT NULL REFERENCES vault_data_keys(id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE vault_lockers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    created_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_by BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE vault_locker_members (
    locker_id BIGINT NOT NULL REFERENCES vault_lockers(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    can_own BOOLEAN NOT NULL,
    can_manage BOOLEAN NOT NULL,
    can_participate BOOLEAN NOT NULL,
    PRIMARY KEY (locker_id, user_id)
);
CREATE INDEX vault_locker_members_user ON vault_locker_members(user_id);

CREATE TABLE vault_locker_consumers (
    locker_id BIGINT NOT NULL REFERENCES vault_lockers(id) ON DELETE CASCADE,
    role_id BIGINT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (locker_id, role_id)
);
CREATE INDEX vault_locker_consumers_role ON vault_locker_consumers(role_id);

-- owner_id has no foreign key: a deleted user's credentials stay, for a Locker Admin to give
-- to someone else.
CREATE TABLE vault_credentials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    owner_id BIGINT NOT NULL,
    locker_id BIGINT REFERENCES vault_lockers(id),
    created_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_by BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX vault_credentials_owner ON vault_credentials(owner_id);
CREATE INDEX vault_credentials_locker ON vault_credentials(locker_id);

CREATE TABLE vault_attributes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    credential_id BIGINT NOT NULL REFERENCES vault_credentials(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    user_provided BOOLEAN NOT NULL,
    masked BOOLEAN NOT NULL,
    created_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_by BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0,
    UNIQUE (credential_id, name)
);

-- One value per (attribute, slot): slot is the user id of a userProvided value, 0 for a
-- standard attribute's single value (user_id NULL). The ciphertext's associated data binds it
-- to (credential_id, attribute_id, slot).
CREATE TABLE vault_values (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    credential_id BIGINT NOT NULL REFERENCES vault_credentials(id) ON DELETE CASCADE,
    attribute_id BIGINT NOT NULL REFERENCES vault_attributes(id) ON DELETE CASCADE,
    user_id BIGINT REFERENCES users(id) ON DELETE CASCADE,
    slot BIGINT NOT NULL,
    key_id BIGINT NOT NULL REFERENCES vault_data_keys(id),
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_by BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0,
    UNIQUE (attribute_id, slot)
);
CREATE INDEX vault_values_credential ON vault_values(credential_id, user_id);
CREATE INDEX vault_values_key ON vault_values(key_id);
