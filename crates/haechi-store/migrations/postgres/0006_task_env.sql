-- Task instances whose runs get environment variables from the vault (a workflow task step's
-- env_from_vault): the variables' names, as a JSON array. The values are never stored; the
-- server holds them in memory for the instance's life.
ALTER TABLE task_instances ADD COLUMN env_names TEXT;
