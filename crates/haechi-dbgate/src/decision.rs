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
}
