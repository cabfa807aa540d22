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
-- lockers its creator made.
ALTER TABLE vault_lockers DROP CONSTRAINT vault_lockers_name_key;
CREATE UNIQUE INDEX vault_lockers_creator_name ON vault_lockers (created_by, name);
ALTER TABLE vault_credentials DROP CONSTRAINT vault_credentials_name_key;
CREATE UNIQUE INDEX vault_credentials_owner_name ON vault_credentials (owner_id, name);
