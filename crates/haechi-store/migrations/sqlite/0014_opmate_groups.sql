-- OPMATE as its users run it (issue 24): node groups with attributes and run windows, labels
-- the agent reports, task targets (groups, label selector), run windows and runner groups on
-- task revisions, user groups, the resolved targets of an instance, and per-execution
-- attributes and revision.

-- What the agent reports of its node: labels (os, arch, hostname and the agent's own
-- KEY=VALUE labels) and the OS users it can run scripts as (NULL: the agent did not say).
ALTER TABLE nodes ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE nodes ADD COLUMN os_users TEXT;

CREATE TABLE node_groups (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    -- JSON object KEY -> VALUE.
    attributes TEXT NOT NULL DEFAULT '{}',
    -- Higher wins when two groups of one node set the same key (then the later name).
    priority INTEGER NOT NULL DEFAULT 0,
    -- JSON array of run windows; '[]' = no restriction.
    run_windows TEXT NOT NULL DEFAULT '[]',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE node_group_members (
    group_name TEXT NOT NULL REFERENCES node_groups (name) ON DELETE CASCADE,
    node_id TEXT NOT NULL,
    PRIMARY KEY (group_name, node_id)
);
CREATE INDEX node_group_members_node ON node_group_members (node_id);

-- Task revisions: default target groups and label selector (JSON), run windows, runner groups.
ALTER TABLE task_revisions ADD COLUMN target_groups TEXT NOT NULL DEFAULT '[]';
ALTER TABLE task_revisions ADD COLUMN target_labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE task_revisions ADD COLUMN run_windows TEXT NOT NULL DEFAULT '[]';
ALTER TABLE task_revisions ADD COLUMN runner_groups TEXT NOT NULL DEFAULT '[]';

-- How an instance's nodes were chosen (JSON: source, resolved nodes, skipped nodes and why).
ALTER TABLE task_instances ADD COLUMN targets TEXT;

-- The attributes a node's script was given (JSON, only the keys the script names), and the
-- task revision a re-run runs when it is not the instance's.
ALTER TABLE node_executions ADD COLUMN attrs TEXT;
ALTER TABLE node_executions ADD COLUMN revision_no BIGINT;

CREATE TABLE user_groups (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE user_group_members (
    group_name TEXT NOT NULL REFERENCES user_groups (name) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    PRIMARY KEY (group_name, user_id)
);
CREATE INDEX user_group_members_user ON user_group_members (user_id);
