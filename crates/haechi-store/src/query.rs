//! Paged list queries: a small builder for their `WHERE` clauses (conditions with `$n`
//! placeholders and their values) and the page-and-total read, run the same way on both
//! backends; on SQLite on the calling thread where the row type reads by position.

use haechi_types::Result;
use serde::de::DeserializeOwned;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::FromRow;

use crate::{like_escape, values, Arg, Listed, Paging, Store};

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

/// One page of a list query and the number of all its matches: `select` (`SELECT ... FROM ...`)
/// with the conditions of `w`, ordered by `order_by`, `page.limit` rows from `page.offset`; and
/// `count` (`SELECT COUNT(*) FROM ...`) with the same conditions and binds, so the total always
/// counts what the pages show (run only when the page does not tell it: `Paging::total_from`).
pub async fn list_page<R>(
    store: &Store,
    select: &str,
    count: &str,
    w: &Where,
    order_by: &str,
    page: Paging,
) -> Result<Listed<R>>
where
    R: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let (count_sql, page_sql, page_args) = page_queries(select, count, w, order_by, page);
    let items: Vec<R> = crate::read!(store, |db| crate::bind_args!(
        sqlx::query_as(&page_sql),
        page_args
    )
    .fetch_all(db)
    .await)?;
    page.listed(items, async || -> Result<i64> {
        Ok(crate::read!(store, |db| crate::bind_args!(
            sqlx::query_scalar(&count_sql),
            w.args
        )
        .fetch_one(db)
        .await)?)
    })
    .await
}

/// [`list_page`] of `SELECT {columns} FROM {from}` for a row type that also reads by column
/// position through serde: on SQLite the page and its total are read on the calling thread
/// ([`crate::Inline`]: no hand-off to sqlx's SQLite thread and back, a page is bounded);
/// PostgreSQL runs the same two queries through sqlx.
pub async fn list_page_inline<R>(
    store: &Store,
    columns: &str,
    from: &str,
    w: &Where,
    order_by: &str,
    page: Paging,
) -> Result<Listed<R>>
where
    R: DeserializeOwned
        + for<'r> FromRow<'r, SqliteRow>
        + for<'r> FromRow<'r, PgRow>
        + Send
        + Unpin,
{
    let select = format!("SELECT {columns} FROM {from}");
    let count = format!("SELECT COUNT(*) FROM {from}");
    if store.inline().is_none() {
        return list_page(store, &select, &count, w, order_by, page).await;
    }
    let (count_sql, page_sql, page_args) = page_queries(&select, &count, w, order_by, page);
    // The count's placeholders are the first of the page's, which it shares.
    let args = values(&page_args);
    let items: Vec<R> = store.rows_inline(&page_sql, &args)?;
    page.listed(items, async || -> Result<i64> {
        Ok(crate::inline::columns::<(i64,)>(store.read_inline(&count_sql, &args)?)?.0)
    })
    .await
}

/// The count query, the page query and the page query's binds (the conditions', then limit
/// and offset).
fn page_queries(
    select: &str,
    count: &str,
    w: &Where,
    order_by: &str,
    page: Paging,
) -> (String, String, Vec<Arg>) {
    let conditions = w.sql();
    let mut pw = w.clone();
    let lim = pw.arg(Arg::Int(page.limit));
    let off = pw.arg(Arg::Int(page.offset));
    (
        format!("{count}{conditions}"),
        format!("{select}{conditions} ORDER BY {order_by} LIMIT {lim} OFFSET {off}"),
        pw.args,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{in_tx, StoreOptions};

    #[test]
    fn the_page_and_the_count_share_conditions_and_binds() {
        let mut w = Where::default();
        w.eq_text("status", &Some("E".into()));
        let (count, page, args) = page_queries(
            "SELECT id FROM nodes",
            "SELECT COUNT(*) FROM nodes",
            &w,
            "id",
            Paging {
                limit: 10,
                offset: 20,
            },
        );
        assert_eq!(count, "SELECT COUNT(*) FROM nodes WHERE status = $1");
        assert_eq!(
            page,
            "SELECT id FROM nodes WHERE status = $1 ORDER BY id LIMIT $2 OFFSET $3"
        );
        assert!(matches!(
            args.as_slice(),
            [Arg::Text(s), Arg::Int(10), Arg::Int(20)] if s == "E"
        ));
    }

    #[tokio::test]
    async fn a_page_holds_its_slice_and_the_total_counts_every_match() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&StoreOptions::sqlite(dir.path().join("store.db")))
            .await
            .expect("open the store");
        let mut tx = store.begin().await.expect("begin");
        for (id, status) in [("a", "E"), ("b", "D"), ("c", "E"), ("d", "E"), ("e", "E")] {
            in_tx!(tx, |c| sqlx::query(
                "INSERT INTO nodes (id, agent_guid, status, created_at, updated_at) VALUES ($1, $1, $2, 1, 1)"
            )
            .bind(id)
            .bind(status)
            .execute(&mut *c)
            .await
            .map(|_| ()))
            .expect("node");
        }
        tx.commit().await.expect("commit");
        let mut w = Where::default();
        w.eq_text("status", &Some("E".into()));
        // Four matches, newest id first. A short page tells the total without the count; a full
        // page, and an empty one past the end, count.
        for (limit, offset, ids, total) in [
            (2, 1, &["d", "c"][..], 4),
            (10, 1, &["d", "c", "a"][..], 4),
            (10, 3, &["a"][..], 4),
            (10, 9, &[][..], 4),
        ] {
            let page: Listed<(String,)> = list_page(
                &store,
                "SELECT id FROM nodes",
                "SELECT COUNT(*) FROM nodes",
                &w,
                "id DESC",
                Paging { limit, offset },
            )
            .await
            .expect("list");
            let got: Vec<&str> = page.items.iter().map(|(id,)| id.as_str()).collect();
            assert_eq!(
                (&got[..], page.total),
                (ids, total),
                "limit {limit} offset {offset}"
            );
        }
    }
}
