//! Reads a SQLite row into a row type through serde, by column position.
//!
//! Lists read on the calling thread ([`crate::Inline::rows`]) come straight out of SQLite's row
//! into the same row types the PostgreSQL arm reads with sqlx, with no JSON between them: a
//! struct takes the next columns in the order its fields are declared, and a nested struct (a
//! field sqlx reads with `#[sqlx(flatten)]`) takes the columns after those, as many as it has
//! fields. `Option` reads NULL as `None`; booleans are SQLite's integers 0 and 1 (and
//! [`crate::packed::int_bool`] reads them too).

use std::fmt;

use rusqlite::types::ValueRef;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, SeqAccess, Visitor};

/// Why a row did not read into its type.
#[derive(Debug)]
pub struct RowError(String);

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RowError {}

impl de::Error for RowError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        RowError(msg.to_string())
    }
}

/// Reads `T` from every column of `row`, in order; a column left over is an error (the query
/// and the type disagree).
pub fn from_row<T: de::DeserializeOwned>(row: &rusqlite::Row<'_>) -> Result<T, RowError> {
    // Each column's value is asked of SQLite once (a type, then the value).
    let values = (0..row.as_ref().column_count())
        .map(|i| row.get_ref(i))
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| RowError(e.to_string()))?;
    let mut cols = Columns {
        values: &values,
        next: 0,
    };
    let value = T::deserialize(&mut cols)?;
    if cols.next != values.len() {
        return Err(RowError(format!(
            "the row has {} columns and its type read {}",
            values.len(),
            cols.next
        )));
    }
    Ok(value)
}

struct Columns<'v, 'a> {
    values: &'v [ValueRef<'a>],
    next: usize,
}

impl<'a> Columns<'_, 'a> {
    fn peek(&self) -> Result<ValueRef<'a>, RowError> {
        self.values.get(self.next).copied().ok_or_else(|| {
            RowError(format!(
                "the type reads more than the row's {} columns",
                self.values.len()
            ))
        })
    }

    fn take(&mut self) -> Result<ValueRef<'a>, RowError> {
        let v = self.peek()?;
        self.next += 1;
        Ok(v)
    }

    fn text(&mut self) -> Result<&'a str, RowError> {
        let at = self.next;
        match self.take()? {
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map_err(|_| RowError(format!("column {at} is not UTF-8 text"))),
            other => Err(RowError(format!(
                "column {at} is {} where text was expected",
                other.data_type()
            ))),
        }
    }
}

impl<'de> Deserializer<'de> for &mut Columns<'_, '_> {
    type Error = RowError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        match self.take()? {
            ValueRef::Null => visitor.visit_none(),
            ValueRef::Integer(i) => visitor.visit_i64(i),
            ValueRef::Real(f) => visitor.visit_f64(f),
            ValueRef::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => visitor.visit_str(s),
                Err(_) => visitor.visit_bytes(t),
            },
            ValueRef::Blob(b) => visitor.visit_bytes(b),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        match self.take()? {
            ValueRef::Integer(i) => visitor.visit_bool(i != 0),
            other => Err(RowError(format!(
                "column {} is {} where a boolean (0 or 1) was expected",
                self.next - 1,
                other.data_type()
            ))),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_str(self.text()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_str(self.text()?)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        if matches!(self.peek()?, ValueRef::Null) {
            self.next += 1;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RowError> {
        visitor.visit_seq(Fields {
            cols: self,
            left: fields.len(),
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        visitor.visit_seq(Fields {
            cols: self,
            left: len,
        })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        self.deserialize_tuple(len, visitor)
    }

    /// A unit enum stored as its name (a status column).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RowError> {
        let name: &str = self.text()?;
        visitor.visit_enum(name.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct
        seq map identifier ignored_any
    }
}

/// The fields of one struct or tuple: the next `left` columns.
struct Fields<'c, 'v, 'a> {
    cols: &'c mut Columns<'v, 'a>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Fields<'_, '_, '_> {
    type Error = RowError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, RowError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.cols).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}
