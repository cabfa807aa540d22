//! Nodes: the registry, enrolment tokens, agent credentials, enable/disable, revocation.

use base64::Engine;
use haechi_identity::{Caller, Permission};
use haechi_protocol::{EnrollRequest, EnrollResponse, AUTH_SCHEME};
use haechi_store::{in_tx, read, Listed, Paging, Tx};
use haechi_types::{time::now_ms, Error, Result};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::{stored, Node, NodeFilter, NodeStatus};
use crate::Exec;
use haechi_store::{bind_args, list_page_inline, Where};

/// `POST /api/v1/agents/enrollment-tokens` body.
#[derive(Debug, Clone, Default)]
pub struct NewEnrollmentToken {
    /// Lifetime in seconds (default `agents.enrollment_token_ttl_secs`; at most 30 days).
    pub ttl_secs: Option<u64>,
    /// How many agents may enrol with it (default 1, at most 100000).
    pub uses: Option<u64>,
    /// The one node id this token enrols. Only such a token enrols an id that exists already
    /// (a revoked node enrolled again); a token without it enrols new node ids only.
    pub node_id: Option<String>,
}

/// A new enrolment token (shown once; the server keeps its hash).
#[derive(Debug, Clone)]
pub struct EnrollmentToken {
    pub token: String,
    pub expires_at: i64,
    pub uses: u64,
    /// The node id it is bound to, if any.
    pub node_id: Option<String>,
}

#[derive(sqlx::FromRow, serde::Deserialize)]
pub(crate) struct NodeRow {
    id: String,
    agent_guid: String,
    secret_hash: Option<String>,
    agent_ver: String,
    os_name: String,
    ip: String,
    hostname: String,
    owner_user_id: String,
    status: String,
    heartbeat_at: Option<i64>,
    missing_since: Option<i64>,
    created_at: i64,
    updated_at: i64,
    labels: String,
    os_users: Option<String>,
}

const NODE_COLUMNS: &str =
    "id, agent_guid, secret_hash, agent_ver, os_name, ip, hostname, owner_user_id, status, \
                            heartbeat_at, missing_since, created_at, updated_at, labels, os_users";

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn random_guid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Node and task ids: 1–128 characters, letters (any script), digits, `.`, `_`, `-`.
pub(crate) fn check_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.chars().count() > 128 {
        return Err(Error::field(field, "must be 1 to 128 characters long"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::field(
            field,
            format_args!("may hold letters, digits, '.', '_' and '-' only (found {c:?})"),
        ));
    }
    // No fullwidth or other compatibility look-alikes of another id.
    haechi_types::ident::check(field, id, 128, haechi_types::ident::Spaces::Refused)
}

/// What the agent says of itself, as stored: at most 256 characters.
fn clip(s: &str) -> String {
    s.chars().take(256).collect()
}

/// Takes one use of the enrolment token `req` presents; returns who made it (the node's owner)
/// and the node it was made for, if any. One statement takes the use: the row is locked
/// (PostgreSQL) or the database is (SQLite) until the transaction ends, so two enrolments never
/// share the last use. Any later refusal drops the transaction and gives the use back.
async fn take_enrollment_use(
    tx: &mut Tx,
    req: &EnrollRequest,
    now: i64,
) -> Result<(String, Option<String>)> {
    let token: Option<(i64, String, Option<String>)> = in_tx!(tx, |c| {
        sqlx::query_as(
            "UPDATE enrollment_tokens SET uses_left = uses_left - 1 \
             WHERE token_hash = $1 AND uses_left > 0 AND expires_at > $2 \
             RETURNING id, created_by, node_id",
        )
        .bind(hash(&req.token))
        .bind(now)
        .fetch_optional(&mut *c)
        .await
    })?;
    let Some((_token_id, owner, bound_to)) = token else {
        return Err(Error::unauthenticated(
            "the enrolment token is unknown, expired or used up; create a new one",
        ));
    };
    if let Some(bound) = &bound_to {
        if *bound != req.node_id {
            return Err(Error::forbidden(format!(
                "this enrolment token was made for node '{bound}', not '{}'",
                req.node_id
            )));
        }
    }
    Ok((owner, bound_to))
}

/// Whether `node_id` may be enrolled, given its stored credential (`None`: no such node;
/// `Some(None)`: its credential was revoked) and whether the token was made for this node.
/// Returns whether the node is known (re-enrolled) rather than new. An enrolled node is never
/// taken over, and a revoked one only with a token made for it.
fn check_enrollable(node_id: &str, stored: Option<Option<String>>, bound: bool) -> Result<bool> {
    match stored {
        None => Ok(false),
        Some(None) if bound => Ok(true),
        Some(None) => Err(Error::forbidden(format!(
            "node '{node_id}' exists (its credential was revoked); enrolling it again needs a token made for it: POST /api/v1/agents/enrollment-tokens {{\"node_id\":\"{node_id}\"}}"
        ))),
        Some(Some(_)) => Err(Error::conflict(format!(
            "node '{node_id}' is already enrolled (on the server's own host the local agent enrols the host name): start this agent with another --node-id, or, to replace the enrolled agent, revoke its credential (POST /api/v1/nodes/{node_id}/revoke) and enrol with a token made for that node id"
        ))),
    }
}

impl NodeStatus {
    /// The `status` a request to enable or disable a node names: `E` or `D`, else a field error.
    pub fn from_request(code: &str) -> Result<NodeStatus> {
        NodeStatus::from_code(code).ok_or_else(|| {
            Error::field(
                "status",
                format_args!("must be \"E\" (enabled) or \"D\" (disabled), not {code:?}"),
            )
        })
    }
}

/// A node's new credential and what its agent said of itself, as an enrolment stores them.
struct Enrolment<'a> {
    req: &'a EnrollRequest,
    guid: &'a str,
    secret_hash: String,
    ip: String,
    now: i64,
}

impl Enrolment<'_> {
    /// A new node, owned by `owner`, enabled or not.
    async fn register(&self, tx: &mut Tx, owner: &str, status: NodeStatus) -> Result<()> {
        let r = self.req;
        in_tx!(tx, |c| {
            sqlx::query(
            "INSERT INTO nodes (id, agent_guid, secret_hash, agent_ver, os_name, ip, hostname, owner_user_id, status, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, $9, $9)"
        )
        .bind(&r.node_id)
        .bind(self.guid)
        .bind(&self.secret_hash)
        .bind(clip(&r.agent_ver))
        .bind(clip(&r.os_name))
        .bind(&self.ip)
        .bind(clip(&r.hostname))
        .bind(owner)
        .bind(self.now)
        .bind(status.as_code())
        .execute(&mut *c)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }

    /// A node whose credential was revoked gets a new one; its owner and status stay.
    async fn re_register(&self, tx: &mut Tx) -> Result<()> {
        let r = self.req;
        in_tx!(tx, |c| {
            sqlx::query(
            "UPDATE nodes SET agent_guid = $2, secret_hash = $3, agent_ver = $4, os_name = $5, hostname = $6, \
             ip = $7, updated_at = $8, missing_since = NULL WHERE id = $1"
        )
        .bind(&r.node_id)
        .bind(self.guid)
        .bind(&self.secret_hash)
        .bind(clip(&r.agent_ver))
        .bind(clip(&r.os_name))
        .bind(clip(&r.hostname))
        .bind(&self.ip)
        .bind(self.now)
        .execute(&mut *c)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }
}

/// A request's node list (`nodeIdList`): each a valid node id, none listed twice.
pub(crate) fn check_node_list(ids: &[String]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for (i, n) in ids.iter().enumerate() {
        check_id(&format!("nodeIdList[{i}]"), n)?;
        if !seen.insert(n.as_str()) {
            return Err(Error::field(
                "nodeIdList",
                format_args!("lists node '{n}' twice"),
            ));
        }
    }
    Ok(())
}

impl Exec {
    /// Creates a one-time (or N-time) enrolment token.
    pub async fn create_enrollment_token(
        &self,
        caller: &Caller,
        req: NewEnrollmentToken,
    ) -> Result<EnrollmentToken> {
        caller.require(Permission::NodeManage)?;
        let actor = &caller.actor;
        let ttl = req
            .ttl_secs
            .unwrap_or(self.cfg.agents.enrollment_token_ttl_secs);
        if ttl == 0 || ttl > 30 * 24 * 3600 {
            return Err(Error::field(
                "ttl_secs",
                "must be between 1 and 2592000 (30 days)",
            ));
        }
        let uses = req.uses.unwrap_or(1);
        if uses == 0 || uses > 100_000 {
            return Err(Error::field("uses", "must be between 1 and 100000"));
        }
        if let Some(node) = &req.node_id {
            check_id("node_id", node)?;
        }
        let token = random_secret("hce_");
        let now = now_ms();
        let expires_at = now + ttl as i64 * 1000;
        let mut tx = self.store.begin().await?;
        in_tx!(tx, |c| {
            sqlx::query(
            "INSERT INTO enrollment_tokens (token_hash, uses_left, expires_at, created_by, created_at, node_id) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        )
        .bind(hash(&token))
        .bind(uses as i64)
        .bind(expires_at)
        .bind(&actor.user_id)
        .bind(now)
        .bind(&req.node_id)
        .execute(&mut *c)
        .await
        .map(|_| ())
        })?;
        haechi_audit::append(
            &mut tx,
            actor.event("agent.enrollment_token.create").detail(
                serde_json::json!({ "ttl_secs": ttl, "uses": uses, "node_id": req.node_id }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(EnrollmentToken {
            token,
            expires_at,
            uses,
            node_id: req.node_id,
        })
    }

    /// Enrols an agent with a token: registers (or re-registers a revoked) node and returns the
    /// agent's own credential. The node's owner is the user who made the token.
    pub async fn enroll(&self, req: EnrollRequest, ip: std::net::IpAddr) -> Result<EnrollResponse> {
        check_id("nodeId", &req.node_id)?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let (owner, bound_to) = take_enrollment_use(&mut tx, &req, now).await?;
        let stored: Option<(Option<String>,)> = in_tx!(tx, |c| sqlx::query_as(
            "SELECT secret_hash FROM nodes WHERE id = $1"
        )
        .bind(&req.node_id)
        .fetch_optional(&mut *c)
        .await)?;
        let known = check_enrollable(&req.node_id, stored.map(|(h,)| h), bound_to.is_some())?;
        let secret = random_secret("hca_");
        let guid = random_guid();
        let enrolment = Enrolment {
            req: &req,
            guid: &guid,
            secret_hash: hash(&secret),
            ip: ip.to_string(),
            now,
        };
        if known {
            enrolment.re_register(&mut tx).await?;
        } else {
            let status = if self.cfg.agents.new_nodes_disabled {
                NodeStatus::Disabled
            } else {
                NodeStatus::Enabled
            };
            enrolment.register(&mut tx, &owner, status).await?;
        }
        haechi_audit::append(
            &mut tx,
            haechi_audit::Event::new(haechi_audit::Family::Admin, "node.enroll")
                .by(format!("agent:{}", req.node_id), Some(ip.to_string()))
                .target(req.node_id.clone())
                .detail(serde_json::json!({ "agent_guid": guid, "hostname": clip(&req.hostname), "owner": owner })),
        )
        .await?;
        tx.commit().await?;
        Ok(EnrollResponse {
            node_id: req.node_id,
            agent_guid: guid,
            secret,
        })
    }

    /// Checks an agent's `Authorization` header; returns its node id.
    pub async fn authenticate_agent(&self, authorization: Option<&str>) -> Result<String> {
        let refused = || {
            Error::unauthenticated(
                "this agent's credential is unknown or was revoked; enrol it again with a new enrolment token",
            )
        };
        let value = authorization.ok_or_else(|| {
            Error::unauthenticated(format!(
                "agents authenticate with 'Authorization: {AUTH_SCHEME} <node_id>:<secret>'"
            ))
        })?;
        let rest = value
            .strip_prefix(AUTH_SCHEME)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or_else(|| {
                Error::unauthenticated(format!(
                    "expected 'Authorization: {AUTH_SCHEME} <node_id>:<secret>'"
                ))
            })?;
        let (node_id, secret) = rest.rsplit_once(':').ok_or_else(refused)?;
        let stored: Option<(Option<String>,)> = read!(self.store, |db| sqlx::query_as(
            "SELECT secret_hash FROM nodes WHERE id = $1"
        )
        .bind(node_id)
        .fetch_optional(db)
        .await)?;
        let Some((Some(expected),)) = stored else {
            return Err(refused());
        };
        if bool::from(hash(secret).as_bytes().ct_eq(expected.as_bytes())) {
            Ok(node_id.to_owned())
        } else {
            Err(refused())
        }
    }

    fn node_from_row(&self, r: NodeRow) -> Result<Node> {
        let connected = self.hub.is_connected(&r.id);
        Ok(Node {
            revoked: r.secret_hash.is_none(),
            connected,
            id: r.id,
            agent_guid: r.agent_guid,
            agent_ver: r.agent_ver,
            os_name: r.os_name,
            ip: r.ip,
            hostname: r.hostname,
            owner_user_id: r.owner_user_id,
            status: stored("nodes.status", &r.status, NodeStatus::from_code)?,
            heartbeat_at: r.heartbeat_at,
            missing_since: r.missing_since,
            created_at: r.created_at,
            updated_at: r.updated_at,
            labels: serde_json::from_str(&r.labels).unwrap_or_default(),
            os_users: r.os_users.and_then(|u| serde_json::from_str(&u).ok()),
        })
    }

    /// Nodes matching `filter`, one page, ordered by id.
    pub async fn list_nodes(&self, filter: &NodeFilter, page: Paging) -> Result<Listed<Node>> {
        let mut w = Where::default();
        w.contains("id", &filter.id);
        w.contains("agent_ver", &filter.agent_ver);
        w.contains("ip", &filter.ip);
        w.contains("os_name", &filter.os_name);
        w.contains("hostname", &filter.hostname);
        w.eq_text("owner_user_id", &filter.owner_user_id);
        w.eq_text("status", &filter.status.map(|s| s.as_code().to_owned()));
        let rows: Listed<NodeRow> =
            list_page_inline(&self.store, NODE_COLUMNS, "nodes", &w, "id", page).await?;
        rows.try_map(|r| self.node_from_row(r))
    }

    /// Nodes whose heartbeats are missing, longest missing first, at most `limit`.
    pub async fn missing_nodes(&self, limit: i64) -> Result<Vec<Node>> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE missing_since IS NOT NULL \
             ORDER BY missing_since, id LIMIT $1"
        );
        let rows: Vec<NodeRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(limit)
            .fetch_all(db)
            .await)?;
        rows.into_iter().map(|r| self.node_from_row(r)).collect()
    }

    pub async fn get_node(&self, id: &str) -> Result<Node> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1");
        let row: Option<NodeRow> = read!(self.store, |db| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(db)
            .await)?;
        row.map(|r| self.node_from_row(r))
            .ok_or_else(|| Error::not_found(format_args!("node '{id}'")))?
    }

    /// Enables or disables a node. A disabled node gets no new work.
    pub async fn set_node_status(
        &self,
        caller: &Caller,
        id: &str,
        status: NodeStatus,
    ) -> Result<Node> {
        let actor = &caller.actor;
        let mut tx = self.store.begin().await?;
        let n = in_tx!(tx, |c| sqlx::query(
            "UPDATE nodes SET status = $2, updated_at = $3 WHERE id = $1"
        )
        .bind(id)
        .bind(status.as_code())
        .bind(now_ms())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(Error::not_found(format_args!("node '{id}'")));
        }
        let action = match status {
            NodeStatus::Enabled => "node.enable",
            NodeStatus::Disabled => "node.disable",
        };
        haechi_audit::append(&mut tx, actor.event(action).target(id)).await?;
        tx.commit().await?;
        self.get_node(id).await
    }

    /// Revokes a node's agent credential and drops its connection; the agent must enrol again.
    pub async fn revoke_agent(&self, caller: &Caller, id: &str) -> Result<Node> {
        let actor = &caller.actor;
        let mut tx = self.store.begin().await?;
        let n = in_tx!(tx, |c| sqlx::query(
            "UPDATE nodes SET secret_hash = NULL, updated_at = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(now_ms())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(Error::not_found(format_args!("node '{id}'")));
        }
        haechi_audit::append(&mut tx, actor.event("node.revoke").target(id)).await?;
        tx.commit().await?;
        self.hub.close(id, "this agent's credential was revoked");
        self.get_node(id).await
    }

    /// Checks that every node exists and is enabled (the reason names the first that is not).
    pub(crate) async fn check_nodes_runnable(
        tx: &mut haechi_store::Tx,
        node_ids: &[String],
    ) -> Result<()> {
        let mut found: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        for chunk in node_ids.chunks(500) {
            let mut w = Where::default();
            let marks: Vec<String> = chunk
                .iter()
                .map(|id| w.arg(haechi_store::Arg::Text(id.clone())))
                .collect();
            let sql = format!(
                "SELECT id, status FROM nodes WHERE id IN ({})",
                marks.join(", ")
            );
            let rows: Vec<(String, String)> =
                in_tx!(tx, |c| bind_args!(sqlx::query_as(&sql), w.args)
                    .fetch_all(&mut *c)
                    .await)?;
            found.extend(rows);
        }
        for id in node_ids {
            let status = match found.get(id) {
                None => {
                    return Err(Error::field(
                        "nodeIdList",
                        format_args!("node '{id}' does not exist"),
                    ))
                }
                Some(s) => stored("nodes.status", s, NodeStatus::from_code)?,
            };
            if status == NodeStatus::Disabled {
                return Err(Error::conflict(format!(
                    "nodeIdList: node '{id}' is disabled (status D) and gets no work; enable it with PATCH /api/v1/nodes/{id}"
                )));
            }
        }
        Ok(())
    }
}

/// An enabled node heard from recently, with what its heartbeats said of its clock
/// (`haechi doctor`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeClock {
    pub id: String,
    /// The node's clock minus the server's, in ms, from its latest heartbeat that carried it.
    pub clock_skew_ms: Option<i64>,
    /// Since when its heartbeats are missing (unix ms), if they are.
    pub missing_since: Option<i64>,
}

/// Enabled nodes whose last heartbeat is at or after `heard_since` (unix ms). Read straight from
/// the store, so it works with the server stopped.
pub async fn node_clocks(store: &haechi_store::Store, heard_since: i64) -> Result<Vec<NodeClock>> {
    Ok(read!(store, |db| sqlx::query_as(
        "SELECT id, clock_skew_ms, missing_since FROM nodes \
         WHERE status = 'E' AND heartbeat_at IS NOT NULL AND heartbeat_at >= $1 ORDER BY id"
    )
    .bind(heard_since)
    .fetch_all(db)
    .await)?)
}

#[cfg(test)]
mod tests {
    use haechi_types::Code;

    use super::*;

    #[test]
    fn a_new_node_enrols_and_a_revoked_one_only_with_a_token_made_for_it() {
        assert!(!check_enrollable("n1", None, false).expect("new"));
        assert!(!check_enrollable("n1", None, true).expect("new, bound token"));
        assert!(check_enrollable("n1", Some(None), true).expect("revoked, bound token"));
        let e = check_enrollable("n1", Some(None), false).expect_err("revoked, any token");
        assert_eq!(e.code, Code::Forbidden);
        assert!(e
            .message
            .ends_with("POST /api/v1/agents/enrollment-tokens {\"node_id\":\"n1\"}"));
    }

    #[test]
    fn an_enrolled_node_is_never_taken_over() {
        for bound in [false, true] {
            let e = check_enrollable("n1", Some(Some("hash".into())), bound).expect_err("taken");
            assert_eq!(e.code, Code::Conflict);
            assert!(e.message.contains("(POST /api/v1/nodes/n1/revoke)"));
        }
    }

    #[test]
    fn a_node_list_names_each_node_once() {
        assert!(check_node_list(&["a".into(), "b".into()]).is_ok());
        let e = check_node_list(&["a".into(), "a".into()]).expect_err("twice");
        assert_eq!(e.field.as_deref(), Some("nodeIdList"));
        let e = check_node_list(&["a".into(), "a b".into()]).expect_err("bad id");
        assert_eq!(e.field.as_deref(), Some("nodeIdList[1]"));
    }
}
