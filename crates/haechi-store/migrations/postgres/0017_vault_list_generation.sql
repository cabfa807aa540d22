-- The vault's list generation: a number that moves, in the same transaction, with every change
-- that can change what a credential list answers (the credentials, their attributes, whether a
-- value is stored, locker members and consumers, users' roles). A list cached under the
-- generation read before its query stays right while the generation stands; any server on the
-- same database sees the move (see `haechi_vault::Vault::list_generation`).
CREATE TABLE vault_list_generation (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO vault_list_generation (id, generation) VALUES (1, 0);

-- One statement trigger per table. It takes the audit head's lock before the generation's:
-- every audited change locks `audit_head` until it commits, some before and some after the
-- statements that fire this trigger, so taking both in this one order keeps two such
-- transactions from each holding the lock the other waits for.
CREATE FUNCTION vault_list_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM audit_head WHERE id = 1 FOR UPDATE;
    UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;
CREATE TRIGGER vault_credentials_list_generation AFTER INSERT OR DELETE OR UPDATE ON vault_credentials
    FOR EACH STATEMENT EXECUTE FUNCTION vault_list_generation_bump();
CREATE TRIGGER vault_attributes_list_generation AFTER INSERT OR DELETE OR UPDATE ON vault_attributes
    FOR EACH STATEMENT EXECUTE FUNCTION vault_list_generation_bump();
CREATE TRIGGER vault_values_list_generation AFTER INSERT OR DELETE OR UPDATE OF attribute_id, slot ON vault_values
    FOR EACH STATEMENT EXECUTE FUNCTION vault_list_generation_bump();
CREATE TRIGGER vault_locker_members_list_generation AFTER INSERT OR DELETE OR UPDATE ON vault_locker_members
    FOR EACH STATEMENT EXECUTE FUNCTION vault_list_generation_bump();
CREATE TRIGGER vault_locker_consumers_list_generation AFTER INSERT OR DELETE OR UPDATE ON vault_locker_consumers
    FOR EACH STATEMENT EXECUTE FUNCTION vault_list_generation_bump();
CREATE TRIGGER user_roles_list_generation AFTER INSERT OR DELETE OR UPDATE ON user_roles
    FOR EACH STATEMENT EXECUTE FUNCTION vault_list_generation_bump();
