-- An enrolment token may be minted for one node id: only such a token re-enrols a node that
-- exists already (a revoked one, say). NULL: the token enrols new node ids only.
ALTER TABLE enrollment_tokens ADD COLUMN node_id TEXT;
