//! The scripts' sandbox: Landlock rules that keep a script out of the paths it must never
//! read or change (the agent's own data directory with its credential and journal, and for the
//! server's local agent the server's data directory with `vault.key` and the store).
//!
//! Landlock only grants: once a ruleset handles an access right, only paths beneath a rule get
//! it. So "everything but these paths" is built by walking from `/` down to each protected
//! path: every entry beside that walk gets every right (a rule on a directory covers all that is
//! beneath it, also what is created there later); the directories on the walk (the protected
//! paths' ancestors) may only be listed; the protected paths get nothing. What this costs a
//! script: it cannot create or open files that appear *directly* in an ancestor directory after
//! it started (for example `/tmp/x` when a protected path is under `/tmp`); it gets its own
//! `TMPDIR` for that. Symbolic links beside the walk get no rule of their own: Landlock checks the
//! path a link resolves to, which is covered (or not) by its own place in the tree.
//!
//! The rules are applied by the user-switch helper ([`crate::exec_as`]) to itself just before it
//! executes the script, so they bind the script and everything it starts, whatever its user
//! (root included). Landlock also denies the script `ptrace` and `/proc/<pid>/{environ,mem,fd}`
//! of processes outside its sandbox, such as the agent and the server.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, ABI,
};

/// The Landlock ABI whose rights the ruleset handles (newer kernels' extra rights are not
/// needed; older kernels get the subset they know).
const TARGET_ABI: ABI = ABI::V5;

/// Whether this kernel enforces Landlock: `Ok(())`, or why not.
pub fn probe() -> Result<(), String> {
    let created = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|r| r.create());
    match created {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "this kernel does not enforce Landlock ({e}); Linux 5.13 or later with Landlock enabled (CONFIG_SECURITY_LANDLOCK, the `lsm=` boot list) is needed"
        )),
    }
}

/// What [`plan`] decided: the paths that get every right, and the directories that may only be
/// listed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub full: Vec<PathBuf>,
    pub list_only: Vec<PathBuf>,
}

/// Computes the rules that allow everything except `protect` (and what is beneath it).
/// Protected paths that do not exist are ignored.
pub fn plan(protect: &[PathBuf]) -> Result<Plan, String> {
    let protected: BTreeSet<PathBuf> = protect
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    if protected.iter().any(|p| p.parent().is_none()) {
        return Err("the sandbox cannot protect / itself".into());
    }
    let ancestors: BTreeSet<PathBuf> = protected
        .iter()
        .flat_map(|p| p.ancestors().skip(1).map(Path::to_path_buf))
        .collect();
    if protected.is_empty() {
        return Ok(Plan {
            full: vec![PathBuf::from("/")],
            list_only: Vec::new(),
        });
    }
    let mut plan = Plan::default();
    for dir in &ancestors {
        if protected.contains(dir) {
            // Beneath another protected path: nothing to grant.
            continue;
        }
        plan.list_only.push(dir.clone());
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot list {} for the sandbox: {e}", dir.display()))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| format!("cannot list {} for the sandbox: {e}", dir.display()))?;
            let path = entry.path();
            if protected.contains(&path) || ancestors.contains(&path) {
                continue;
            }
            if entry.file_type().map(|t| t.is_symlink()).unwrap_or(true) {
                continue;
            }
            plan.full.push(path);
        }
    }
    // Ancestors under a protected path are not listed either.
    plan.list_only
        .retain(|d| !protected.iter().any(|p| d.starts_with(p)));
    plan.full
        .retain(|d| !protected.iter().any(|p| d.starts_with(p)));
    Ok(plan)
}

/// How the sandbox came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    /// Every handled right is enforced.
    Fully,
    /// The kernel knows an older Landlock: reading and writing files and directories are
    /// enforced, some newer rights (such as truncate) are not.
    Partly,
}

/// Restricts the calling thread (and what it executes afterwards) to everything but
/// `protect`. `no_new_privs` must be true unless the caller holds `CAP_SYS_ADMIN` (root):
/// the kernel requires it of unprivileged callers. Errors when the kernel does not enforce
/// Landlock at all.
pub fn restrict(protect: &[PathBuf], no_new_privs: bool) -> Result<Enforced, String> {
    let plan = plan(protect)?;
    let all = AccessFs::from_all(TARGET_ABI);
    let list: BitFlags<AccessFs> = AccessFs::ReadDir.into();
    let fail = |e: landlock::RulesetError| format!("cannot set up the sandbox: {e}");
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .map_err(fail)?
        .create()
        .map_err(fail)?
        .no_new_privs(no_new_privs);
    for path in &plan.full {
        // An entry that vanished since it was listed needs no rule.
        let Ok(fd) = PathFd::new(path) else { continue };
        let is_dir = path.is_dir();
        let access = if is_dir {
            all
        } else {
            AccessFs::from_file(TARGET_ABI)
        };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(fail)?;
    }
    for dir in &plan.list_only {
        let fd = PathFd::new(dir)
            .map_err(|e| format!("cannot open {} for the sandbox: {e}", dir.display()))?;
        ruleset = ruleset.add_rule(PathBeneath::new(fd, list)).map_err(fail)?;
    }
    let status = ruleset.restrict_self().map_err(fail)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(Enforced::Fully),
        RulesetStatus::PartiallyEnforced => Ok(Enforced::Partly),
        RulesetStatus::NotEnforced => Err(probe()
            .err()
            .unwrap_or_else(|| "the kernel did not enforce the sandbox".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_allows_everything_beside_the_protected_paths() {
        let root = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(root.path()).unwrap();
        for d in ["data/agent", "data/other", "work", "elsewhere"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::write(base.join("data/vault.key"), b"k").unwrap();
        std::fs::write(base.join("loose.txt"), b"x").unwrap();
        std::os::unix::fs::symlink(base.join("data"), base.join("link")).unwrap();

        let p = plan(&[base.join("data"), base.join("missing")]).unwrap();
        // Siblings of the walk get everything; the protected path and links do not.
        assert!(p.full.contains(&base.join("work")), "{p:?}");
        assert!(p.full.contains(&base.join("elsewhere")), "{p:?}");
        assert!(p.full.contains(&base.join("loose.txt")), "{p:?}");
        assert!(
            !p.full.iter().any(|x| x.starts_with(base.join("data"))),
            "{p:?}"
        );
        assert!(!p.full.contains(&base.join("link")), "{p:?}");
        // The ancestors may only be listed, down to the root.
        assert!(p.list_only.contains(&base), "{p:?}");
        assert!(p.list_only.contains(&PathBuf::from("/")), "{p:?}");
        assert!(!p.full.contains(&base), "{p:?}");

        // Nested protected paths: the outer one wins.
        let q = plan(&[base.join("data"), base.join("data/agent")]).unwrap();
        assert!(
            !q.full.iter().any(|x| x.starts_with(base.join("data"))),
            "{q:?}"
        );
        assert!(
            !q.list_only.iter().any(|x| x.starts_with(base.join("data"))),
            "{q:?}"
        );

        // Nothing to protect: everything.
        assert_eq!(plan(&[]).unwrap().full, vec![PathBuf::from("/")]);
        assert!(plan(&[PathBuf::from("/")]).is_err());
    }
}
