//! Types every Haechi crate shares: the one error table, time helpers, and the accept loop.
//!
//! The engines return [`Error`]; the HTTP layer renders it in each product family's own envelope.
//! Nothing here knows about a wire format.

mod error;
pub mod ident;
pub mod net;
pub mod time;

pub use error::{Code, Error, Result};
