-- Execution engine: nodes and their agents, enrolment tokens, tasks and their revisions,
-- task instances, node executions and their output, schedule fires.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    agent_guid TEXT NOT NULL UNIQUE,
    secret_hash TEXT,
    agent_ver TEXT NOT NULL DEFAULT '',
    os_name TEXT NOT NULL DEFAULT '',
    ip TEXT NOT NULL DEFAULT '',
    hostname TEXT NOT NULL DEFAULT '',
    owner_user_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'E' CHECK (status IN ('E', 'D')),
    heartbeat_at BIGINT,
    missing_since BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE enrollment_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash TEXT NOT NULL UNIQUE,
    uses_left BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    owner_user_id TEXT NOT NULL,
    revision_no BIGINT NOT NULL,
    apprv_status TEXT NOT NULL DEFAULT 'N' CHECK (apprv_status IN ('N', 'Q', 'A', 'R')),
    apprv_user_id TEXT NOT NULL DEFAULT '',
    apprv_requested_by TEXT NOT NULL DEFAULT '',
    apprv_comment TEXT NOT NULL DEFAULT '',
    apprv_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE task_revisions (
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    revision_no BIGINT NOT NULL,
    script_name TEXT NOT NULL,
    script TEXT NOT NULL,
    os_user TEXT NOT NULL,
    exec_ondemand TEXT NOT NULL,
    exec_scheduler TEXT NOT NULL,
    exec_task TEXT NOT NULL,
    schedule TEXT,
    schedule_tz TEXT,
    next_task_id TEXT NOT NULL DEFAULT '',
    timeout_secs BIGINT NOT NULL,
    target_nodes TEXT NOT NULL DEFAULT '[]',
    arguments TEXT NOT NULL DEFAULT '[]',
    description TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (task_id, revision_no)
);

CREATE TABLE task_targets (
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    node_id TEXT NOT NULL,
    PRIMARY KEY (task_id, node_id)
);
CREATE INDEX task_targets_node ON task_targets(node_id);

CREATE TABLE task_instances (
    instance_no INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    revision_no BIGINT NOT NULL,
    runner_id TEXT NOT NULL,
    runner_gubun TEXT NOT NULL CHECK (runner_gubun IN ('U', 'S', 'T')),
    origin TEXT,
    arguments TEXT NOT NULL,
    start_at BIGINT NOT NULL,
    end_at BIGINT,
    next_task_id TEXT NOT NULL DEFAULT '',
    next_instance_no BIGINT,
    prev_instance_no BIGINT
);
CREATE INDEX task_instances_task ON task_instances(task_id, start_at);
CREATE INDEX task_instances_origin ON task_instances(origin);
CREATE INDEX task_instances_open ON task_instances(end_at) WHERE end_at IS NULL;

CREATE TABLE node_executions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_no BIGINT NOT NULL REFERENCES task_instances(instance_no),
    node_id TEXT NOT NULL,
    exec_no BIGINT NOT NULL,
    latest BOOLEAN NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('WAIT', 'RUN', 'END', 'TIMEOUT', 'CANCEL', 'LOST')),
    result_cd TEXT,
    exit_cd BIGINT,
    reason TEXT,
    runner_id TEXT NOT NULL,
    runner_gubun TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    start_at BIGINT,
    end_at BIGINT,
    out_len BIGINT NOT NULL DEFAULT 0,
    err_len BIGINT NOT NULL DEFAULT 0,
    truncated BOOLEAN NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT 0,
    UNIQUE (instance_no, node_id, exec_no)
);
CREATE INDEX node_executions_active ON node_executions(node_id) WHERE status IN ('WAIT', 'RUN');
CREATE INDEX node_executions_latest ON node_executions(instance_no, latest, node_id);

CREATE TABLE execution_output (
    exec_id BIGINT NOT NULL,
    stream BIGINT NOT NULL,
    pos BIGINT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (exec_id, stream, pos)
);

CREATE TABLE schedule_fires (
    task_id TEXT NOT NULL,
    fire_at BIGINT NOT NULL,
    instance_no BIGINT,
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (task_id, fire_at)
);
