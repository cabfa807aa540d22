//! Users, roles, tokens and user groups as the admin API shows and takes them.

use haechi_identity as id;
use haechi_types::time::iso_ms;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::mirror_enum;

mirror_enum! {
    /// `human` accounts log in to the console and lock after inactivity; `api` accounts (MDRM's
    /// `lock_flg = '8'`) are for machines: no console login, never locked for inactivity.
    #[serde(rename_all = "lowercase")]
    pub enum UserKind mirrors id::UserKind { Human, Api }
}

mirror_enum! {
    /// One right. Roles hold sets of them; every request checks one.
    pub enum Permission mirrors id::Permission {
        #[serde(rename = "admin.users")]
        AdminUsers,
        #[serde(rename = "admin.settings")]
        AdminSettings,
        #[serde(rename = "audit.read")]
        AuditRead,
        #[serde(rename = "workflow.view")]
        WorkflowView,
        #[serde(rename = "workflow.execute")]
        WorkflowExecute,
        #[serde(rename = "workflow.control")]
        WorkflowControl,
        #[serde(rename = "workflow.manage")]
        WorkflowManage,
        #[serde(rename = "node.view")]
        NodeView,
        #[serde(rename = "node.manage")]
        NodeManage,
        #[serde(rename = "task.develop")]
        TaskDevelop,
        #[serde(rename = "task.approve")]
        TaskApprove,
        #[serde(rename = "task.execute")]
        TaskExecute,
        #[serde(rename = "dbpolicy.manage")]
        DbPolicyManage,
        #[serde(rename = "vault.use")]
        VaultUse,
        #[serde(rename = "vault.locker_admin")]
        VaultLockerAdmin,
        #[serde(rename = "vault.settings")]
        VaultSettings,
    }
}

/// A user as the admin API shows it. Never carries the password hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub user_id: String,
    pub name: String,
    pub kind: UserKind,
    pub roles: Vec<String>,
    pub allowed_ips: Vec<String>,
    pub disabled: bool,
    /// Locked after too many failed logins (lifts by itself after `lockout_secs`, or by an admin).
    pub locked: bool,
    pub failed_logins: i64,
    #[schema(format = DateTime)]
    pub last_login_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<&id::User> for User {
    fn from(u: &id::User) -> Self {
        User {
            id: u.id,
            user_id: u.user_id.clone(),
            name: u.name.clone(),
            kind: u.kind.into(),
            roles: u.roles.clone(),
            allowed_ips: u.allowed_ips.clone(),
            disabled: u.disabled,
            locked: u.locked,
            failed_logins: u.failed_logins,
            last_login_at: u.last_login_at.map(iso_ms),
            created_at: iso_ms(u.created_at),
            updated_at: iso_ms(u.updated_at),
        }
    }
}

/// A new user (`POST /api/v1/users`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewUser {
    pub user_id: String,
    pub name: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    #[serde(default = "default_kind")]
    pub kind: UserKind,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub allowed_ips: Vec<String>,
}

fn default_kind() -> UserKind {
    UserKind::Human
}

impl From<NewUser> for id::NewUser {
    fn from(n: NewUser) -> Self {
        id::NewUser {
            user_id: n.user_id,
            name: n.name,
            password: n.password,
            kind: n.kind.into(),
            roles: n.roles,
            allowed_ips: n.allowed_ips,
        }
    }
}

/// Changes to a user (`PATCH /api/v1/users/{user_id}`); absent fields stay as they are.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct UserPatch {
    pub name: Option<String>,
    pub roles: Option<Vec<String>>,
    pub allowed_ips: Option<Vec<String>>,
    pub disabled: Option<bool>,
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    pub kind: Option<UserKind>,
}

impl From<UserPatch> for id::UserPatch {
    fn from(p: UserPatch) -> Self {
        id::UserPatch {
            name: p.name,
            roles: p.roles,
            allowed_ips: p.allowed_ips,
            disabled: p.disabled,
            password: p.password,
            kind: p.kind.map(Into::into),
        }
    }
}

/// A role as a principal holds it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RoleRef {
    pub id: i64,
    pub name: String,
}

impl From<&id::RoleRef> for RoleRef {
    fn from(r: &id::RoleRef) -> Self {
        RoleRef {
            id: r.id,
            name: r.name.clone(),
        }
    }
}

/// A role as the admin API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Role {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub permissions: Vec<Permission>,
    pub builtin: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<&id::Role> for Role {
    fn from(r: &id::Role) -> Self {
        Role {
            id: r.id,
            name: r.name.clone(),
            description: r.description.clone(),
            permissions: r.permissions.iter().map(|p| (*p).into()).collect(),
            builtin: r.builtin,
            created_at: iso_ms(r.created_at),
            updated_at: iso_ms(r.updated_at),
        }
    }
}

/// A new role (`POST /api/v1/roles`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewRole {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub permissions: Vec<String>,
}

impl From<NewRole> for id::NewRole {
    fn from(n: NewRole) -> Self {
        id::NewRole {
            name: n.name,
            description: n.description,
            permissions: n.permissions,
        }
    }
}

/// Changes to a custom role.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct RolePatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub permissions: Option<Vec<String>>,
}

impl From<RolePatch> for id::RolePatch {
    fn from(p: RolePatch) -> Self {
        id::RolePatch {
            name: p.name,
            description: p.description,
            permissions: p.permissions,
        }
    }
}

/// One of the caller's tokens (never the token itself).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    /// The login endpoint that issued it.
    pub family: String,
    pub client_ip: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub last_used_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The token this request was made with.
    pub current: bool,
}

impl From<&id::TokenInfo> for TokenInfo {
    fn from(t: &id::TokenInfo) -> Self {
        TokenInfo {
            id: t.id,
            family: t.family.clone(),
            client_ip: t.client_ip.clone(),
            created_at: iso_ms(t.created_at),
            last_used_at: iso_ms(t.last_used_at),
            expires_at: iso_ms(t.expires_at),
            current: t.current,
        }
    }
}

/// A user group.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserGroup {
    pub name: String,
    pub description: String,
    /// Member user ids, sorted.
    pub members: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&id::UserGroup> for UserGroup {
    fn from(g: &id::UserGroup) -> Self {
        UserGroup {
            name: g.name.clone(),
            description: g.description.clone(),
            members: g.members.clone(),
            created_by: g.created_by.clone(),
            created_at: g.created_at,
            updated_at: g.updated_at,
        }
    }
}

/// `POST /api/v1/user-groups` and `PUT /api/v1/user-groups/{name}` body; on `PUT` an absent
/// field keeps its value.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct UserGroupSpec {
    /// The group's name (create only; on `PUT` it must match the path when given).
    pub name: Option<String>,
    pub description: Option<String>,
    /// Member user ids (each must exist).
    pub members: Option<Vec<String>>,
}

impl From<UserGroupSpec> for id::UserGroupSpec {
    fn from(s: UserGroupSpec) -> Self {
        id::UserGroupSpec {
            name: s.name,
            description: s.description,
            members: s.members,
        }
    }
}
