//! What both wire protocols share: the login of a person (CONTRACT §7), the policy that
//! applies to their session, the verdict on each statement, audit and metrics. `pg` and
//! `mysql` each keep the client side (`frontend`) apart from the database side (`backend`).

mod auditor;
mod cancel;
mod io;
mod login;
pub mod mysql;
pub mod pg;
mod session;
mod threads;
mod tls;

pub use crate::decision::Verdict;
pub use crate::error::LoginFailed;
pub use auditor::{Auditor, StatementRecord};
pub(crate) use cancel::CancelRegistry;
pub(crate) use io::{before, dial, send, Prefixed};
pub use io::{BoxIo, Io, PRE_AUTH_DEADLINE, PRE_AUTH_MAX_MESSAGE};
pub use session::{Liveness, Session, LIVENESS_INTERVAL};
pub(crate) use threads::{spawn_session, SessionThreads};
pub use tls::backend_tls_config;
pub(crate) use tls::ca_roots;
