-- The folded form of each user id and role name (NFKC, case-folded: haechi_types::ident::fold),
-- unique, so `ADMIN` or a fullwidth `ａｄｍｉｎ` cannot be created beside `admin`. Filled in by
-- the server for rows that existed before (NULL where two old names fold alike).
ALTER TABLE users ADD COLUMN id_key TEXT;
CREATE UNIQUE INDEX users_id_key_unique ON users (id_key);
ALTER TABLE roles ADD COLUMN name_key TEXT;
CREATE UNIQUE INDEX roles_name_key_unique ON roles (name_key);
