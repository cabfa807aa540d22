//! Permissions and the built-in roles (CONTRACT §1).

use serde::{Deserialize, Serialize};

/// One right. Roles hold sets of them; every request checks one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Manage users, roles and their tokens.
    #[serde(rename = "admin.users")]
    AdminUsers,
    /// Change server-wide settings.
    #[serde(rename = "admin.settings")]
    AdminSettings,
    /// Read the audit log.
    #[serde(rename = "audit.read")]
    AuditRead,
    /// List workflows and read executions.
    #[serde(rename = "workflow.view")]
    WorkflowView,
    /// Start workflows.
    #[serde(rename = "workflow.execute")]
    WorkflowExecute,
    /// Stop, pause and resume executions.
    #[serde(rename = "workflow.control")]
    WorkflowControl,
    /// Create, edit and delete workflow definitions.
    #[serde(rename = "workflow.manage")]
    WorkflowManage,
    /// See nodes, tasks and task results.
    #[serde(rename = "node.view")]
    NodeView,
    /// Enable/disable nodes, enrolment tokens, revoke agents.
    #[serde(rename = "node.manage")]
    NodeManage,
    /// Create and edit tasks, request approval.
    #[serde(rename = "task.develop")]
    TaskDevelop,
    /// Approve or reject tasks.
    #[serde(rename = "task.approve")]
    TaskApprove,
    /// Start task instances and re-run nodes.
    #[serde(rename = "task.execute")]
    TaskExecute,
    /// Manage DBSAFER policies, DB targets and accounts.
    #[serde(rename = "dbpolicy.manage")]
    DbPolicyManage,
    /// Use the credential vault: own credentials and lockers, consume what is shared.
    #[serde(rename = "vault.use")]
    VaultUse,
    /// See and manage every locker.
    #[serde(rename = "vault.locker_admin")]
    VaultLockerAdmin,
    /// Vault mode and master key.
    #[serde(rename = "vault.settings")]
    VaultSettings,
}

impl Permission {
    pub const ALL: &'static [Permission] = &[
        Permission::AdminUsers,
        Permission::AdminSettings,
        Permission::AuditRead,
        Permission::WorkflowView,
        Permission::WorkflowExecute,
        Permission::WorkflowControl,
        Permission::WorkflowManage,
        Permission::NodeView,
        Permission::NodeManage,
        Permission::TaskDevelop,
        Permission::TaskApprove,
        Permission::TaskExecute,
        Permission::DbPolicyManage,
        Permission::VaultUse,
        Permission::VaultLockerAdmin,
        Permission::VaultSettings,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::AdminUsers => "admin.users",
            Permission::AdminSettings => "admin.settings",
            Permission::AuditRead => "audit.read",
            Permission::WorkflowView => "workflow.view",
            Permission::WorkflowExecute => "workflow.execute",
            Permission::WorkflowControl => "workflow.control",
            Permission::WorkflowManage => "workflow.manage",
            Permission::NodeView => "node.view",
            Permission::NodeManage => "node.manage",
            Permission::TaskDevelop => "task.develop",
            Permission::TaskApprove => "task.approve",
            Permission::TaskExecute => "task.execute",
            Permission::DbPolicyManage => "dbpolicy.manage",
            Permission::VaultUse => "vault.use",
            Permission::VaultLockerAdmin => "vault.locker_admin",
            Permission::VaultSettings => "vault.settings",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.iter().copied().find(|p| p.as_str() == s)
    }

    fn bit(self) -> u32 {
        1 << (Permission::ALL
            .iter()
            .position(|p| *p == self)
            .unwrap_or(31) as u32)
    }
}

/// A set of permissions, as a bit set (the check on every request is one AND).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PermissionSet(u32);

impl PermissionSet {
    pub fn of(perms: &[Permission]) -> Self {
        PermissionSet(perms.iter().fold(0, |acc, p| acc | p.bit()))
    }

    pub fn has(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn union(self, other: PermissionSet) -> Self {
        PermissionSet(self.0 | other.0)
    }

    /// A pair of permissions this set holds that one account must never hold together
    /// (separation of duties: [`CONFLICTING`]).
    pub fn conflict(self) -> Option<(Permission, Permission)> {
        CONFLICTING
            .iter()
            .copied()
            .find(|(a, b)| self.has(*a) && self.has(*b))
    }

    pub fn list(self) -> Vec<Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(|p| self.has(*p))
            .collect()
    }
}

/// Permissions one account may not hold together, through any mix of roles: whoever manages
/// users must not also read the audit log that records what they did (issue 18, item 6).
pub const CONFLICTING: &[(Permission, Permission)] =
    &[(Permission::AdminUsers, Permission::AuditRead)];

pub const SYSTEM_ADMIN: &str = "System Admin";
pub const AUDITOR: &str = "Auditor";
pub const LOCKER_ADMIN: &str = "Locker Admin";

/// The built-in roles, created (and kept up to date) at every start. `System Admin` holds every
/// permission except reading the audit log: that is the `Auditor`'s alone (separation of duties:
/// no account may hold both `admin.users` and `audit.read`, see [`CONFLICTING`]).
pub fn builtin_roles() -> Vec<(&'static str, &'static str, Vec<Permission>)> {
    use Permission::*;
    vec![
        (
            SYSTEM_ADMIN,
            "Everything except reading the audit log",
            Permission::ALL
                .iter()
                .copied()
                .filter(|p| *p != AuditRead)
                .collect(),
        ),
        (
            "Workflow Operator",
            "List, execute and control workflows; view nodes and task results; start and re-run tasks",
            vec![WorkflowView, WorkflowExecute, WorkflowControl, NodeView, TaskExecute],
        ),
        (
            "Task Developer",
            "Create and edit tasks, request approval",
            vec![TaskDevelop, NodeView],
        ),
        (
            "Task Approver",
            "Approve or reject tasks",
            vec![TaskApprove, NodeView],
        ),
        (
            "DB Policy Admin",
            "Manage DBSAFER policies, DB targets and accounts",
            vec![DbPolicyManage],
        ),
        (
            "Vault User",
            "Own credentials and lockers, consume what is shared",
            vec![VaultUse],
        ),
        (
            LOCKER_ADMIN,
            "See and manage every locker in the vault",
            vec![VaultUse, VaultLockerAdmin],
        ),
        (AUDITOR, "Read the audit log only", vec![AuditRead]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(*p));
            let json = serde_json::to_string(p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert_eq!(Permission::parse("nope"), None);
    }

    #[test]
    fn set_ops() {
        let s = PermissionSet::of(&[Permission::AuditRead, Permission::VaultUse]);
        assert!(s.has(Permission::AuditRead));
        assert!(!s.has(Permission::AdminUsers));
        assert_eq!(s.list(), vec![Permission::AuditRead, Permission::VaultUse]);
    }

    #[test]
    fn admin_cannot_read_audit_but_auditor_can() {
        let roles = builtin_roles();
        let admin = &roles.iter().find(|r| r.0 == SYSTEM_ADMIN).unwrap().2;
        let auditor = &roles.iter().find(|r| r.0 == AUDITOR).unwrap().2;
        assert!(!admin.contains(&Permission::AuditRead));
        assert_eq!(auditor, &vec![Permission::AuditRead]);
        for (name, _, perms) in &roles {
            assert_eq!(PermissionSet::of(perms).conflict(), None, "{name}");
        }
        assert_eq!(
            PermissionSet::of(admin)
                .union(PermissionSet::of(auditor))
                .conflict(),
            Some((Permission::AdminUsers, Permission::AuditRead))
        );
    }
}
