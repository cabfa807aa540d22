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

-- SQLite has one writer at a time: a row trigger per table and event. A value's own update
-- (a new secret, a key's re-wrap) changes no list, so only its slot's identity counts.
CREATE TRIGGER vault_credentials_insert_list_generation AFTER INSERT ON vault_credentials
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_credentials_delete_list_generation AFTER DELETE ON vault_credentials
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_credentials_update_list_generation AFTER UPDATE ON vault_credentials
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_attributes_insert_list_generation AFTER INSERT ON vault_attributes
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_attributes_delete_list_generation AFTER DELETE ON vault_attributes
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_attributes_update_list_generation AFTER UPDATE ON vault_attributes
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_values_insert_list_generation AFTER INSERT ON vault_values
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_values_delete_list_generation AFTER DELETE ON vault_values
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_values_update_list_generation AFTER UPDATE OF attribute_id, slot ON vault_values
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_locker_members_insert_list_generation AFTER INSERT ON vault_locker_members
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_locker_members_delete_list_generation AFTER DELETE ON vault_locker_members
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_locker_members_update_list_generation AFTER UPDATE ON vault_locker_members
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_locker_consumers_insert_list_generation AFTER INSERT ON vault_locker_consumers
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_locker_consumers_delete_list_generation AFTER DELETE ON vault_locker_consumers
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER vault_locker_consumers_update_list_generation AFTER UPDATE ON vault_locker_consumers
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER user_roles_insert_list_generation AFTER INSERT ON user_roles
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER user_roles_delete_list_generation AFTER DELETE ON user_roles
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER user_roles_update_list_generation AFTER UPDATE ON user_roles
BEGIN UPDATE vault_list_generation SET generation = generation + 1 WHERE id = 1; END;
