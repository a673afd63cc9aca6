//! Paging for the list built-ins: an optional `limit` and `cursor` in the input, and a
//! `next_cursor` in the answer while rows remain.
//!
//! Old SDKs send neither field, and their answer is unchanged: every row, no
//! `next_cursor`. The cursor is the sort key of the last row given (an opaque string to
//! clients), so a walk returns each row at most once even when the registry changes
//! between pages: a row added behind the cursor is simply not seen by that walk.

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::protocol::error::EngineError;
use crate::protocol::Payload;

/// The paging fields of a list input.
#[derive(Debug, Default, Deserialize)]
pub struct Page {
    /// Most rows in this answer; absent (or 0) means all of them.
    #[serde(default)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page; absent for the first.
    #[serde(default)]
    pub cursor: Option<String>,
}

impl Page {
    /// The sort key of the last row the previous page gave, read from `cursor`.
    pub fn after(&self) -> Result<Option<Vec<String>>, EngineError> {
        let Some(cursor) = &self.cursor else {
            return Ok(None);
        };
        serde_json::from_str(cursor)
            .map(Some)
            .map_err(|_| forged_cursor())
    }

    /// Most rows in this answer.
    pub fn limit(&self) -> usize {
        self.limit.filter(|l| *l > 0).unwrap_or(usize::MAX)
    }

    /// The page of `rows` (sorted ascending by `key`) this input asks for, and the cursor of
    /// the next page when rows remain after it.
    pub fn cut<T>(
        &self,
        mut rows: Vec<T>,
        key: impl Fn(&T) -> Vec<String>,
    ) -> Result<(Vec<T>, Option<String>), EngineError> {
        if let Some(after) = self.after()? {
            let start = rows.partition_point(|row| key(row) <= after);
            rows.drain(..start);
        }
        let limit = self.limit();
        if rows.len() <= limit {
            return Ok((rows, None));
        }
        rows.truncate(limit);
        let next = rows.last().map(|row| cursor(&key(row)));
        Ok((rows, next))
    }
}

/// The `next_cursor` of a page whose last row has sort key `key`.
pub fn cursor(key: &[String]) -> String {
    serde_json::to_string(key).unwrap_or_default()
}

/// The error for a cursor this engine did not give.
pub fn forged_cursor() -> EngineError {
    EngineError::InvalidArguments("`cursor` is not a `next_cursor` this engine gave".into())
}

/// The answer object `{field: rows}`, with `next_cursor` when there is a next page.
pub fn answer(field: &str, rows: Vec<Value>, next_cursor: Option<String>) -> Value {
    let mut answer = Map::new();
    answer.insert(field.to_string(), Value::Array(rows));
    if let Some(cursor) = next_cursor {
        answer.insert("next_cursor".into(), Value::String(cursor));
    }
    Value::Object(answer)
}

/// The same answer as [`answer`], rendered straight to JSON text from borrowed rows: for
/// lists large enough that a `Value` per row would cost more than the rows themselves.
pub fn render<T: Serialize>(
    field: &str,
    rows: &[T],
    next_cursor: Option<String>,
) -> Result<Payload, EngineError> {
    let listing = Listing {
        field,
        rows,
        next_cursor,
    };
    Payload::render(&listing).map_err(|e| EngineError::AnswerNotRendered(e.to_string()))
}

/// `{field: rows, next_cursor}` with the field named at run time, keys in the order a
/// `Value` would give them.
struct Listing<'a, T> {
    field: &'a str,
    rows: &'a [T],
    next_cursor: Option<String>,
}

impl<T: Serialize> Serialize for Listing<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(self.field, self.rows)?;
        if let Some(cursor) = &self.next_cursor {
            map.serialize_entry("next_cursor", cursor)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &u32) -> Vec<String> {
        vec![format!("{n:05}")]
    }

    #[test]
    fn no_paging_input_returns_every_row_and_no_cursor() {
        let (rows, next) = Page::default().cut((0..10).collect(), key).unwrap();
        assert_eq!(rows.len(), 10);
        assert_eq!(next, None);
    }

    #[test]
    fn a_walk_returns_every_row_exactly_once() {
        let all: Vec<u32> = (0..103).collect();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = Page {
                limit: Some(10),
                cursor: cursor.take(),
            };
            let (rows, next) = page.cut(all.clone(), key).unwrap();
            seen.extend(rows);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn a_rendered_answer_is_the_same_json_as_the_value_answer() {
        let rows = vec![serde_json::json!({"a": 1}), serde_json::json!({"b": "x"})];
        for next in [None, Some("[\"k\"]".to_string())] {
            let value = answer("functions", rows.clone(), next.clone());
            let rendered = render("functions", &rows, next).unwrap();
            assert_eq!(
                serde_json::to_string(&rendered).unwrap(),
                serde_json::to_string(&value).unwrap()
            );
        }
    }

    #[test]
    fn a_forged_cursor_is_invalid_arguments() {
        let page = Page {
            limit: Some(1),
            cursor: Some("not json".into()),
        };
        let err = page.cut(vec![1u32], key).unwrap_err();
        assert_eq!(err.code(), "INVALID_ARGUMENTS");
    }
}
