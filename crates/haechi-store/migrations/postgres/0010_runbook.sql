-- Runbook operator features (issue 22): operator actions on failed steps, and the per-step
-- state they need.
--
-- `arguments`: a task step's arguments as an operator's retry gave them (a JSON array of
-- strings); absent = the definition's. `cut_by_failure`: the step was stopped or skipped
-- because another step failed and ended the run; an action that sets the run going again
-- makes it WAITING again.
ALTER TABLE workflow_steps ADD COLUMN arguments TEXT;
ALTER TABLE workflow_steps ADD COLUMN cut_by_failure BOOLEAN NOT NULL DEFAULT FALSE;

-- Every retry / skip / mark_succeeded an operator took on a step, in order (`n` from 1 per
-- step), with who, when and why.
CREATE TABLE workflow_step_actions (
    execution_id TEXT NOT NULL REFERENCES workflow_executions(id),
    idx BIGINT NOT NULL,
    n BIGINT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('retry', 'skip', 'mark_succeeded')),
    by_user TEXT NOT NULL,
    at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    arguments TEXT,
    PRIMARY KEY (execution_id, idx, n)
);

-- A workflow's edit lock: one editor at a time (absent: nobody holds it).
ALTER TABLE workflows ADD COLUMN edit_lock_holder TEXT;
ALTER TABLE workflows ADD COLUMN edit_lock_since BIGINT;
