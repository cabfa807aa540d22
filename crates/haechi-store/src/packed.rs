//! A list in one value, on SQLite.
//!
//! A row that carries a list beside its columns (a user and its role names) reads it as one
//! JSON text: `json_group_array` in a subquery, read back here with serde. Lists of rows are
//! read row by row on the calling thread instead ([`crate::Inline::rows`]): an earlier version
//! packed whole pages this way, and building and parsing the JSON cost more than the rows.

use haechi_types::{Error, Result};
use serde::de::{DeserializeOwned, Deserializer, Visitor};

/// The rows of a packed answer (`json_group_array(json_array(...) ORDER BY ...)`); each row
/// type reads a JSON array as its fields in order (serde's derived `Deserialize` does).
/// SQLite's booleans are integers: read them with [`int_bool`].
pub fn unpack<T: DeserializeOwned>(text: &str) -> Result<Vec<T>> {
    serde_json::from_str(text)
        .map_err(|e| Error::internal(format!("a packed list from the store did not decode: {e}")))
}

/// Reads a boolean stored by SQLite (an integer, 0 or 1) or given as JSON `true`/`false`.
pub fn int_bool<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    struct IntBool;
    impl Visitor<'_> for IntBool {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a boolean or the integer 0 or 1")
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<bool, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<bool, E> {
            Ok(v != 0)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<bool, E> {
            Ok(v != 0)
        }
    }
    d.deserialize_any(IntBool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Inner {
        a: i64,
        b: Option<String>,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Row {
        id: i64,
        name: String,
        #[serde(deserialize_with = "int_bool")]
        flag: bool,
        inner: Inner,
    }

    /// A packed answer of real SQLite reads back into nested row types, in the asked order,
    /// with NULLs, integer booleans and text JSON must escape; no rows is an empty list.
    #[tokio::test]
    async fn sqlite_rows_round_trip() {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, flag BOOLEAN NOT NULL, a BIGINT, b TEXT)",
        )
        .execute(&mut c)
        .await
        .unwrap();
        for (id, name, flag, b) in [
            (3, "three \"q\" \\ \n\t é 한", true, None),
            (1, "one", false, Some("x")),
            (2, "", true, Some("")),
        ] {
            sqlx::query("INSERT INTO t VALUES ($1, $2, $3, $4, $5)")
                .bind(id)
                .bind(name)
                .bind(flag)
                .bind(id * 10)
                .bind(b)
                .execute(&mut c)
                .await
                .unwrap();
        }
        let sql = |cond: &str| {
            format!(
                "SELECT json_group_array(json_array(id, name, flag, json_array(a, b)) ORDER BY id) \
                 FROM t WHERE {cond}"
            )
        };
        let text: String = sqlx::query_scalar(&sql("1"))
            .fetch_one(&mut c)
            .await
            .unwrap();
        let rows: Vec<Row> = unpack(&text).unwrap();
        assert_eq!(
            rows,
            vec![
                Row {
                    id: 1,
                    name: "one".into(),
                    flag: false,
                    inner: Inner {
                        a: 10,
                        b: Some("x".into())
                    }
                },
                Row {
                    id: 2,
                    name: "".into(),
                    flag: true,
                    inner: Inner {
                        a: 20,
                        b: Some("".into())
                    }
                },
                Row {
                    id: 3,
                    name: "three \"q\" \\ \n\t é 한".into(),
                    flag: true,
                    inner: Inner { a: 30, b: None }
                },
            ]
        );
        let none: String = sqlx::query_scalar(&sql("0"))
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(unpack::<Row>(&none).unwrap(), vec![]);
        assert!(unpack::<Row>("[[1]]").is_err());
    }
}
