//! SQL statement classification for the database gateway (CONTRACT §4): statement text → the
//! DBSAFER privilege types it needs, with each database's own grammar. Its own crate so the
//! gateway and the policy simulator share one classifier (and so the parsers, the slowest part
//! of the gateway to compile, are not rebuilt with every change to the gateway).
//!
//! - `privilege`: the 27 privilege types and bit sets of them.
//! - `classify`: `pg` with PostgreSQL's own parser, `mysql` with a MySQL-dialect parser after
//!   expanding executable comments; `cache` of PostgreSQL classifications by statement shape;
//!   `corpus` the bypass corpus the unit tests and the gateway tests run.

pub mod classify;
pub mod privilege;

pub use privilege::{PrivSet, Privilege};
