-- Workflows (MDRM): definitions and their versions, executions, their steps and the log of
-- their transitions, and the per-day sequence behind EXEC_YYYYMMDD_NNNN ids.
CREATE TABLE workflows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    group_name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    version BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX workflows_live_name ON workflows(name) WHERE deleted_at IS NULL;
CREATE INDEX workflows_group ON workflows(group_name);

CREATE TABLE workflow_versions (
    workflow_id BIGINT NOT NULL REFERENCES workflows(id),
    version BIGINT NOT NULL,
    name TEXT NOT NULL,
    group_name TEXT NOT NULL,
    description TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workflow_id, version)
);

CREATE TABLE workflow_exec_seq (
    day TEXT PRIMARY KEY,
    last BIGINT NOT NULL
);

CREATE TABLE workflow_executions (
    id TEXT PRIMARY KEY,
    workflow_id BIGINT NOT NULL,
    version BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'STOPPED')),
    active BOOLEAN NOT NULL,
    rev BIGINT NOT NULL,
    params TEXT NOT NULL,
    started_by TEXT NOT NULL,
    started_by_pk BIGINT NOT NULL,
    source_ip TEXT NOT NULL,
    family TEXT NOT NULL,
    current_step TEXT NOT NULL DEFAULT '',
    steps_total BIGINT NOT NULL,
    steps_done BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    ended_at BIGINT,
    FOREIGN KEY (workflow_id, version) REFERENCES workflow_versions(workflow_id, version)
);
CREATE INDEX workflow_executions_active ON workflow_executions(lease_until) WHERE active;
CREATE INDEX workflow_executions_owner ON workflow_executions(owner) WHERE active;
CREATE INDEX workflow_executions_workflow ON workflow_executions(workflow_id, created_at);
CREATE INDEX workflow_executions_created ON workflow_executions(created_at);

CREATE TABLE workflow_steps (
    execution_id TEXT NOT NULL REFERENCES workflow_executions(id),
    idx BIGINT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('WAITING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'SKIPPED', 'STOPPED')),
    attempts BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT,
    ended_at BIGINT,
    attempt_started_at BIGINT,
    retry_at BIGINT,
    resumes BIGINT NOT NULL DEFAULT 0,
    task_instance_no BIGINT,
    decision TEXT,
    decided_by TEXT,
    decided_at BIGINT,
    decision_comment TEXT,
    error TEXT,
    result TEXT,
    PRIMARY KEY (execution_id, idx),
    UNIQUE (execution_id, name)
);

CREATE TABLE workflow_events (
    execution_id TEXT NOT NULL,
    rev BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    at BIGINT NOT NULL,
    step TEXT,
    status TEXT NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    task_instance_no BIGINT,
    PRIMARY KEY (execution_id, rev, idx)
);
