-- Backend TLS that authenticates the database (issue 26 item 7): tls = 'verify-full' checks the
-- server's certificate against the CA file named here and its name against the target's host.
-- allow_insecure_password lets the gateway send the account's password in clear or MD5 form
-- (or MySQL full authentication) without such TLS; off, it refuses to.
ALTER TABLE db_targets ADD COLUMN tls_ca_file TEXT;
ALTER TABLE db_targets ADD COLUMN allow_insecure_password BOOLEAN NOT NULL DEFAULT FALSE;
