-- Which revisions of a task were approved, and by whom (issue 18 item 5): an approver is shown
-- the diff from the last approved revision to the one under review. Revisions approved before
-- this migration: the task's current revision when it stands approved.
ALTER TABLE task_revisions ADD COLUMN approved_by TEXT;
ALTER TABLE task_revisions ADD COLUMN approved_at BIGINT;
UPDATE task_revisions
   SET approved_by = (SELECT t.apprv_user_id FROM tasks t WHERE t.id = task_revisions.task_id),
       approved_at = (SELECT COALESCE(t.apprv_at, t.updated_at) FROM tasks t
                       WHERE t.id = task_revisions.task_id)
 WHERE EXISTS (SELECT 1 FROM tasks t
                WHERE t.id = task_revisions.task_id
                  AND t.revision_no = task_revisions.revision_no
                  AND t.apprv_status = 'A');

-- Vault names are unique per owner, no longer across the vault (issue 18 item 10): creating a
-- credential or locker under a name someone else uses must not answer 409 and so tell that it
-- exists. A credential's name is unique among its owner's credentials, a locker's among the
-- lockers its creator made. SQLite cannot drop an inline UNIQUE: both tables are rebuilt (the
-- migration runs with foreign keys off, on a connection of its own; see migrate.rs).
CREATE TABLE vault_lockers_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    description TEXT,
    created_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_by BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0
);
INSERT INTO vault_lockers_new (id, name, description, created_by, created_at, updated_by, updated_at, version)
    SELECT id, name, description, created_by, created_at, updated_by, updated_at, version FROM vault_lockers;
-- Keep AUTOINCREMENT's high-water mark: ids of deleted rows are never handed out again.
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'vault_lockers_new', seq FROM sqlite_sequence WHERE name = 'vault_lockers'
     AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'vault_lockers_new');
UPDATE sqlite_sequence
   SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'vault_lockers'), 0))
 WHERE name = 'vault_lockers_new';
DROP TABLE vault_lockers;
ALTER TABLE vault_lockers_new RENAME TO vault_lockers;
CREATE UNIQUE INDEX vault_lockers_creator_name ON vault_lockers (created_by, name);

CREATE TABLE vault_credentials_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    description TEXT,
    owner_id BIGINT NOT NULL,
    locker_id BIGINT REFERENCES vault_lockers(id),
    created_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_by BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0
);
INSERT INTO vault_credentials_new (id, name, description, owner_id, locker_id, created_by, created_at, updated_by, updated_at, version)
    SELECT id, name, description, owner_id, locker_id, created_by, created_at, updated_by, updated_at, version FROM vault_credentials;
-- Keep AUTOINCREMENT's high-water mark: ids of deleted rows are never handed out again.
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'vault_credentials_new', seq FROM sqlite_sequence WHERE name = 'vault_credentials'
     AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'vault_credentials_new');
UPDATE sqlite_sequence
   SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'vault_credentials'), 0))
 WHERE name = 'vault_credentials_new';
DROP TABLE vault_credentials;
ALTER TABLE vault_credentials_new RENAME TO vault_credentials;
CREATE INDEX vault_credentials_owner ON vault_credentials(owner_id);
CREATE INDEX vault_credentials_locker ON vault_credentials(locker_id);
CREATE UNIQUE INDEX vault_credentials_owner_name ON vault_credentials (owner_id, name);
