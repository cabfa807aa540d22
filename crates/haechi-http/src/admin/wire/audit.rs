//! The audit chain's verification as the admin API shows it.

use haechi_audit as au;
use serde::Serialize;

/// The result of checking the chain.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Verification {
    /// Events checked.
    pub checked: i64,
    /// The first broken link, if any.
    pub broken: Option<Broken>,
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Broken {
    /// The sequence number of the first event that does not verify.
    pub seq: i64,
    pub reason: String,
}

impl From<&au::Verification> for Verification {
    fn from(v: &au::Verification) -> Self {
        Verification {
            checked: v.checked,
            broken: v.broken.as_ref().map(|b| Broken {
                seq: b.seq,
                reason: b.reason.clone(),
            }),
        }
    }
}
