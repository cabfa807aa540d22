//! The verdict on one classified statement string, from the policies that match a session.
//!
//! One pure function, [`decide`], with no I/O and no session state beyond what it is given:
//! the gateway calls it for every statement (through `Session::decide`, which only adds the
//! session's liveness and re-matches policies when they changed), and the policy simulator
//! (`DbGate::simulate`) calls the same function with the policies that would match, so the
//! simulator cannot drift from what the gateway does. [`explain`] says which policy grants
//! each privilege; it never changes a verdict.

use std::sync::Arc;

use crate::classify::Classification;
use crate::policy::Policy;
use crate::privilege::{PrivSet, Privilege};

/// The verdict on one statement string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused: `message` names the policy and what is missing.
    Refuse {
        message: String,
        missing: PrivSet,
    },
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

/// A policy's state at `now`, in the words the gateway's messages use.
pub fn state_of(p: &Policy, now: i64) -> &'static str {
    if p.locked_at(now) {
        "locked"
    } else if p.start_at.is_some_and(|s| now < s) {
        "not yet valid"
    } else if p.end_at.is_some_and(|e| now > e) {
        "expired"
    } else {
        "in force"
    }
}

/// The verdict on `c` for a session whose matching policies are `matches` (in index order),
/// at `now` (unix ms). `lexer_uncertain`: an earlier statement of the session changed how its
/// text is read, so only `ALL` allows.
pub fn decide(
    matches: &[Arc<Policy>],
    now: i64,
    c: &Classification,
    lexer_uncertain: bool,
) -> Verdict {
    let mut granted = PrivSet::EMPTY;
    let mut any = false;
    for p in matches.iter().filter(|p| p.effective(now)) {
        granted = granted.union(p.privset());
        any = true;
    }
    if !any {
        let message = match matches.first() {
            Some(p) => format!(
                "Haechi DB gateway: refused: DBSAFER policy {} is {}",
                p.policy_id,
                state_of(p, now)
            ),
            None => "Haechi DB gateway: refused: no DBSAFER policy grants this session any more"
                .to_owned(),
        };
        return Verdict::Refuse {
            message,
            missing: c.needs,
        };
    }
    let mut needs = c.needs;
    if lexer_uncertain {
        needs.add(Privilege::All);
    }
    let missing = granted.missing(needs);
    if missing.is_empty() {
        return Verdict::Allow;
    }
    let policies = matches
        .iter()
        .filter(|p| p.effective(now))
        .map(|p| p.policy_id.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let message = match &c.unclassifiable {
        Some(why) => format!(
            "Haechi DB gateway: refused by DBSAFER policy {policies}: the statement could not be classified ({why}); only a policy granting ALL allows it"
        ),
        None if lexer_uncertain => format!(
            "Haechi DB gateway: refused by DBSAFER policy {policies}: an earlier statement changed how this session's SQL is read; only a policy granting ALL allows further statements (reconnect)"
        ),
        None => format!(
            "Haechi DB gateway: refused by DBSAFER policy {policies}: the statement needs {}, which the policy does not grant",
            missing.names()
        ),
    };
    Verdict::Refuse { message, missing }
}

/// One needed privilege and the policy that grants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub privilege: Privilege,
    /// The first policy in force (by index) that grants it, directly or by `ALL`; `None`
    /// when none does.
    pub policy: Option<(i64, String)>,
}

/// For each privilege `needs` holds: which policy in force at `now` grants it.
pub fn explain(matches: &[Arc<Policy>], now: i64, needs: PrivSet) -> Vec<Grant> {
    needs
        .iter()
        .map(|privilege| Grant {
            privilege,
            policy: matches
                .iter()
                .filter(|p| p.effective(now))
                .find(|p| {
                    let s = p.privset();
                    s.has(privilege) || s.has(Privilege::All)
                })
                .map(|p| (p.index, p.policy_id.clone())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(index: i64, id: &str, privs: &[Privilege]) -> Arc<Policy> {
        let mut p = crate::policy::blank(0);
        p.index = index;
        p.policy_id = id.to_owned();
        p.privileges = privs.to_vec();
        Arc::new(p)
    }

    #[test]
    fn privileges_of_every_policy_in_force_are_united() {
        let a = policy(1, "A", &[Privilege::Select]);
        let b = policy(2, "B", &[Privilege::Insert]);
        let need = Classification::needs(PrivSet::of(&[Privilege::Select, Privilege::Insert]), 2);
        assert_eq!(
            decide(&[a.clone(), b.clone()], 10, &need, false),
            Verdict::Allow
        );
        let grants = explain(&[a.clone(), b.clone()], 10, need.needs);
        assert_eq!(grants[0].policy, Some((2, "B".into())), "{grants:?}");
        assert_eq!(grants[1].policy, Some((1, "A".into())), "{grants:?}");
        match decide(&[a], 10, &need, false) {
            Verdict::Refuse { message, missing } => {
                assert_eq!(missing, PrivSet::of(&[Privilege::Insert]));
                assert!(
                    message.contains("policy A") && message.contains("INSERT"),
                    "{message}"
                );
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_locked_or_expired_policy_grants_nothing_and_is_named() {
        let mut p = crate::policy::blank(0);
        p.policy_id = "L".into();
        p.privileges = vec![Privilege::All];
        p.locked = true;
        let need = Classification::needs(PrivSet::of(&[Privilege::Select]), 1);
        match decide(&[Arc::new(p.clone())], 10, &need, false) {
            Verdict::Refuse { message, .. } => assert!(message.ends_with("policy L is locked")),
            v => panic!("{v:?}"),
        }
        p.locked = false;
        p.end_at = Some(5);
        match decide(&[Arc::new(p)], 10, &need, false) {
            Verdict::Refuse { message, .. } => {
                assert!(message.ends_with("is expired"), "{message}")
            }
            v => panic!("{v:?}"),
        }
        assert!(!decide(&[], 10, &need, false).allowed());
    }

    #[test]
    fn unclassifiable_text_needs_all() {
        let sel = policy(1, "S", &[Privilege::Select]);
        let c = Classification::unclassifiable("does not parse");
        assert!(!decide(&[sel], 0, &c, false).allowed());
        let all = policy(2, "ALL", &[Privilege::All]);
        assert!(decide(std::slice::from_ref(&all), 0, &c, false).allowed());
        let plain = Classification::needs(PrivSet::of(&[Privilege::Select]), 1);
        assert!(decide(&[all], 0, &plain, true).allowed());
    }

    fn needs(privs: &[Privilege]) -> Classification {
        Classification::needs(PrivSet::of(privs), 1)
    }

    fn refusal(v: Verdict) -> (String, PrivSet) {
        match v {
            Verdict::Refuse { message, missing } => (message, missing),
            Verdict::Allow => panic!("allowed, expected a refusal"),
        }
    }

    #[test]
    fn a_policy_outside_its_window_is_named_with_its_state() {
        let mut p = crate::policy::blank(0);
        p.policy_id = "W".into();
        p.privileges = vec![Privilege::Select];
        p.start_at = Some(100);
        p.end_at = Some(200);
        let p = Arc::new(p);
        let sel = needs(&[Privilege::Select]);
        let (message, missing) = refusal(decide(std::slice::from_ref(&p), 99, &sel, false));
        assert_eq!(
            message,
            "Haechi DB gateway: refused: DBSAFER policy W is not yet valid"
        );
        assert_eq!(
            missing, sel.needs,
            "everything the statement needs is missing"
        );
        // Both ends of the window are inclusive.
        assert!(decide(std::slice::from_ref(&p), 100, &sel, false).allowed());
        assert!(decide(std::slice::from_ref(&p), 200, &sel, false).allowed());
        let (message, _) = refusal(decide(&[p], 201, &sel, false));
        assert!(message.ends_with("policy W is expired"), "{message}");
    }

    #[test]
    fn a_time_boxed_unlock_ends_at_its_relock_time() {
        let mut p = crate::policy::blank(0);
        p.policy_id = "T".into();
        p.privileges = vec![Privilege::Update];
        p.relock_at = Some(50);
        let p = Arc::new(p);
        let upd = needs(&[Privilege::Update]);
        assert!(decide(std::slice::from_ref(&p), 49, &upd, false).allowed());
        let (message, _) = refusal(decide(std::slice::from_ref(&p), 50, &upd, false));
        assert!(message.ends_with("policy T is locked"), "{message}");
        assert_eq!(state_of(&p, 49), "in force");
        assert_eq!(state_of(&p, 50), "locked");
    }

    #[test]
    fn no_matching_policy_refuses_everything() {
        let (message, missing) = refusal(decide(&[], 0, &needs(&[Privilege::Select]), false));
        assert!(
            message.contains("no DBSAFER policy grants this session"),
            "{message}"
        );
        assert_eq!(missing, PrivSet::of(&[Privilege::Select]));
    }

    #[test]
    fn only_policies_in_force_grant_and_are_named() {
        let sel = policy(1, "SEL", &[Privilege::Select]);
        let mut locked = crate::policy::blank(0);
        locked.index = 2;
        locked.policy_id = "DEL".into();
        locked.privileges = vec![Privilege::Delete];
        locked.locked = true;
        let locked = Arc::new(locked);
        let ins = policy(3, "INS", &[Privilege::Insert]);
        let matches = [sel, locked, ins];
        let del = needs(&[Privilege::Select, Privilege::Delete]);
        let (message, missing) = refusal(decide(&matches, 0, &del, false));
        assert_eq!(missing, PrivSet::of(&[Privilege::Delete]));
        assert_eq!(
            message,
            "Haechi DB gateway: refused by DBSAFER policy SEL, INS: the statement needs DELETE, which the policy does not grant"
        );
        let grants = explain(&matches, 0, del.needs);
        let by = |privilege| {
            grants
                .iter()
                .find(|g| g.privilege == privilege)
                .and_then(|g| g.policy.clone())
        };
        assert_eq!(by(Privilege::Select), Some((1, "SEL".into())));
        assert_eq!(
            by(Privilege::Delete),
            None,
            "a locked policy grants nothing"
        );
    }

    #[test]
    fn all_grants_every_privilege_and_explain_names_it() {
        let all = policy(7, "EVERY", &[Privilege::All]);
        let many = needs(&[Privilege::Drop, Privilege::Grant, Privilege::Select]);
        assert!(decide(std::slice::from_ref(&all), 0, &many, false).allowed());
        let grants = explain(&[all], 0, many.needs);
        assert_eq!(grants.len(), 3);
        assert!(grants.iter().all(|g| g.policy == Some((7, "EVERY".into()))));
    }

    #[test]
    fn a_statement_that_needs_nothing_is_allowed_by_any_policy_in_force() {
        let sel = policy(1, "S", &[Privilege::Select]);
        assert!(decide(&[sel], 0, &Classification::needs(PrivSet::EMPTY, 0), false).allowed());
    }

    #[test]
    fn after_a_lexing_change_only_all_allows() {
        let sel = policy(1, "S", &[Privilege::Select]);
        let (message, missing) = refusal(decide(&[sel], 0, &needs(&[Privilege::Select]), true));
        assert!(missing.has(Privilege::All), "{missing:?}");
        assert!(
            message.contains("changed how this session's SQL is read")
                && message.contains("reconnect"),
            "{message}"
        );
    }

    #[test]
    fn an_unclassifiable_refusal_says_why() {
        let sel = policy(1, "S", &[Privilege::Select]);
        let (message, missing) = refusal(decide(
            &[sel],
            0,
            &Classification::unclassifiable("it does not parse"),
            false,
        ));
        assert_eq!(missing, PrivSet::of(&[Privilege::All]));
        assert!(
            message.contains("could not be classified (it does not parse)")
                && message.contains("only a policy granting ALL"),
            "{message}"
        );
    }
}
