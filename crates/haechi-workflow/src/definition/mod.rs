//! Workflow definitions (CONTRACT §7): what a definition may say, parsed from JSON or YAML into
//! [`Definition`], and checked so that every problem is a 400 naming the step and field.
//!
//! Parsing is done by hand over a JSON value rather than with `#[serde(deny_unknown_fields)]`
//! because the common step fields and the per-type fields share one object: serde cannot both
//! flatten them and reject unknown fields, and hand-written checks give messages that name the
//! step (`steps[2].retries: step 'db_stop': must be a whole number from 0 to 100`).
//!
//! The stored form of a version is [`Definition`] serialised as JSON; it is read back with
//! plain serde (it was validated when it was written).
//!
//! Adding a step type is one variant of [`Action`], one parser in `action.rs`, and one arm in
//! the driver's attempt runner.
//!
//! The files: `model.rs` (the types), `parse.rs` (the top level, schedules and common step
//! fields), `action.rs` (each step type's fields), `params.rs` (parameter declarations and an
//! execution's values), `template.rs` (`${name}`), `checks.rs` (checks across steps: needs,
//! cycles, parameter references) and `fields.rs` (field access that names the step).

/// Most steps in one workflow.
pub const MAX_STEPS: usize = 1000;
/// Longest sleep, step timeout or retry delay: 30 days.
pub const MAX_SECONDS_MS: u64 = 30 * 24 * 3600 * 1000;
/// Most retries of one step.
pub const MAX_RETRIES: u64 = 100;
const MAX_NAME_CHARS: usize = 200;
const MAX_STEP_NAME_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 4000;
const MAX_TEXT_BYTES: usize = 1024 * 1024;
const MAX_URL_BYTES: usize = 8 * 1024;
const MAX_NODES: usize = 10_000;
const MAX_ARGUMENTS: usize = 1000;
const MAX_PARAMS: usize = 200;
const MAX_CONCURRENCY: u64 = 10_000;

mod action;
mod checks;
mod fields;
mod model;
mod params;
mod parse;
mod template;
#[cfg(test)]
mod tests;

pub use action::{check_url, host_is_fixed};
pub use model::*;
pub use params::{resolve_params, scalar_text};
pub use parse::{parse, yaml_to_value};
pub use template::{substitute, substitute_json, template_refs};
