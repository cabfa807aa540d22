//! A bound value of a query built at run time (a list's filters), for both backends and for
//! SQLite's inline reads.

use crate::inline::Value;

/// A value bound to a `$n` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Int(i64),
    Bool(bool),
    Text(String),
}

impl Arg {
    /// The value for [`crate::Inline::row`] (SQLite stores booleans as integers).
    pub fn value(&self) -> Value {
        match self {
            Arg::Int(i) => Value::Integer(*i),
            Arg::Bool(b) => Value::Integer(i64::from(*b)),
            Arg::Text(t) => Value::Text(t.clone()),
        }
    }
}

/// The values of `args` for [`crate::Inline::row`].
pub fn values<'a>(args: impl IntoIterator<Item = &'a Arg>) -> Vec<Value> {
    args.into_iter().map(Arg::value).collect()
}

/// Binds every [`Arg`] of `$args` (anything with `.iter()`), in order, to the query `$q`
/// (either backend's query type).
#[macro_export]
macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args.iter() {
            q = match a {
                $crate::Arg::Int(v) => q.bind(*v),
                $crate::Arg::Bool(v) => q.bind(*v),
                $crate::Arg::Text(v) => q.bind(v.clone()),
            };
        }
        q
    }};
}
