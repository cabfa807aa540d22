-- Runbooks (issue 22 items 4, 5, 8): sub-workflows, password parameters, schedules.
--
-- A child execution names the execution and step (index) whose attempt started it; the
-- parent's step names its current child. The child is created in the same transaction as the
-- attempt that starts it, so an attempt never has two children.
ALTER TABLE workflow_executions ADD COLUMN parent_execution_id TEXT;
ALTER TABLE workflow_executions ADD COLUMN parent_step BIGINT;
ALTER TABLE workflow_steps ADD COLUMN child_execution_id TEXT;
CREATE INDEX workflow_executions_parent ON workflow_executions (parent_execution_id);

-- The values of an execution's password parameters, sealed with a vault data key (AES-256-GCM,
-- bound to the execution and the name); deleted, ciphertext and all, once the run ends.
CREATE TABLE workflow_secret_params (
    execution_id TEXT NOT NULL,
    name TEXT NOT NULL,
    key_id BIGINT NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    PRIMARY KEY (execution_id, name)
);

-- The current version's schedules of a workflow (JSON list; NULL: none), so the scheduler
-- finds the scheduled workflows without reading every definition; and who saved them (their
-- rights start the scheduled runs).
ALTER TABLE workflows ADD COLUMN schedules TEXT;
ALTER TABLE workflows ADD COLUMN schedules_by BIGINT;
ALTER TABLE workflows ADD COLUMN schedules_at BIGINT;

-- The edit lock's last use by its holder (taking, renewing or an edit): it expires
-- `workflow.edit_lock_idle_secs` after it, and the next user takes it.
ALTER TABLE workflows ADD COLUMN edit_lock_touched BIGINT;

-- Schedules of OPMATE tasks (issue 24 item 4): a JSON list of {cron, timezone} | {at}, with
-- nodeIdList and arguments, set by PUT /api/v1/tasks/{id}/schedules.
CREATE TABLE task_schedules (
    task_id TEXT PRIMARY KEY,
    schedules TEXT NOT NULL,
    updated_by BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One row per fire of any schedule (kind 'workflow' or 'task', the target's id, the schedule's
-- key, the fire time): inserted in the same transaction as what the fire starts, so with
-- several servers on one store each fire starts exactly once. outcome: 'started', 'skipped'
-- (refused: reason says why) or 'misfire_skipped'.
CREATE TABLE schedule_runs (
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    sched TEXT NOT NULL,
    fire_at BIGINT NOT NULL,
    claimed_at BIGINT NOT NULL,
    claimed_by TEXT NOT NULL,
    outcome TEXT NOT NULL,
    started TEXT,
    reason TEXT,
    PRIMARY KEY (kind, target, sched, fire_at)
);
