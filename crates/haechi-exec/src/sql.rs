//! A small builder for the list queries' `WHERE` clauses: conditions with `$n` placeholders and
//! their values, run the same way on both backends.

use haechi_store::like_escape;

/// A bound value.
#[derive(Debug, Clone)]
pub enum Arg {
    Text(String),
    Int(i64),
}

/// Conditions joined with `AND`.
#[derive(Debug, Default, Clone)]
pub struct Where {
    clauses: Vec<String>,
    pub args: Vec<Arg>,
}

impl Where {
    /// Adds a value; returns its placeholder.
    pub fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    /// A raw condition (its placeholders must come from [`Where::arg`]).
    pub fn raw(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    /// `col` contains `value`, ignoring case.
    pub fn contains(&mut self, col: &str, value: &Option<String>) {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            let p = self.arg(Arg::Text(format!("%{}%", like_escape(&v.to_lowercase()))));
            self.clauses
                .push(format!("LOWER({col}) LIKE {p} ESCAPE '\\'"));
        }
    }

    /// `col` equals `value`.
    pub fn eq_text(&mut self, col: &str, value: &Option<String>) {
        if let Some(v) = value {
            let p = self.arg(Arg::Text(v.clone()));
            self.clauses.push(format!("{col} = {p}"));
        }
    }

    pub fn eq_int(&mut self, col: &str, value: Option<i64>) {
        if let Some(v) = value {
            let p = self.arg(Arg::Int(v));
            self.clauses.push(format!("{col} = {p}"));
        }
    }

    pub fn cmp_int(&mut self, col: &str, op: &str, value: Option<i64>) {
        if let Some(v) = value {
            let p = self.arg(Arg::Int(v));
            self.clauses.push(format!("{col} {op} {p}"));
        }
    }

    /// ` WHERE ...`, or nothing.
    pub fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// Binds every [`Arg`] of `$args` to the query `$q`.
macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args.iter() {
            q = match a {
                $crate::sql::Arg::Text(s) => q.bind(s.clone()),
                $crate::sql::Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }};
}
pub(crate) use bind_args;
