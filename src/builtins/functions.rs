//! `engine::functions::list` and `engine::functions::info`.

use serde::Deserialize;
use serde_json::{json, Value};
use std::ops::Bound;
use std::sync::Arc;

use super::paging::{self, Page};
use super::rows::{self, FunctionView};
use crate::ids::{FunctionKey, DEFAULT_NAMESPACE};
use crate::node::Node;
use crate::protocol::error::EngineError;
use crate::protocol::Payload;
use crate::registry::Registry;

#[derive(Debug, Default, Deserialize)]
pub struct ListInput {
    #[serde(default)]
    search: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    worker: Option<String>,
    #[serde(default)]
    workers: Option<Vec<String>>,
    #[serde(default)]
    include_internal: Option<bool>,
    #[serde(flatten)]
    page: Page,
}

/// Whether discovery hides a function unless `include_internal` is set.
fn is_internal(view: &FunctionView<'_>) -> bool {
    let id = &view.key.id;
    (id.starts_with("engine::") && !id.starts_with("engine::queue::"))
        || view
            .function
            .and_then(|f| f.metadata.as_ref())
            .and_then(|m| m.get("internal"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
}

/// Search rank: 0 = equals a `::` segment or starts the id, 1 = in the id, 2 = only in
/// the description, `None` = no match.
fn rank(view: &FunctionView<'_>, needle: &str) -> Option<u8> {
    let id = view.key.id.to_lowercase();
    if id.starts_with(needle) || id.split("::").any(|segment| segment == needle) {
        return Some(0);
    }
    if id.contains(needle) {
        return Some(1);
    }
    let description = view
        .function
        .and_then(|f| f.description.as_deref())
        .unwrap_or("")
        .to_lowercase();
    description.contains(needle).then_some(2)
}

/// The rows of one answer are copied out of the registry under its read lock, then
/// rendered straight to JSON text after the lock is released. Without a search, the rows
/// come from a range of the registry, which is kept in the order the list pages in, so a
/// page costs its own rows; a search ranks every match and still reads the whole registry.
pub fn list(node: &Arc<Node>, input: ListInput) -> Result<Payload, EngineError> {
    let (rows, next) = {
        let registry = node.registry();
        match input.search.as_deref() {
            None => page_in_order(&registry, &input)?,
            Some(search) => ranked(&registry, &input, &search.to_lowercase())?,
        }
    };
    paging::render("functions", &rows, next)
}

/// Rows in (id, namespace) order and the next page's cursor.
type Rows = (Vec<rows::FunctionSummary>, Option<String>);

/// Whether a function passes the filters other than the search.
fn wanted(registry: &Registry, input: &ListInput, view: &FunctionView<'_>) -> bool {
    let internal_ok = input.include_internal.unwrap_or(false) || !is_internal(view);
    let prefix_ok = input
        .prefix
        .as_deref()
        .is_none_or(|p| view.key.id.starts_with(p));
    let worker_ok = (input.workers.as_ref().is_none_or(Vec::is_empty) && input.worker.is_none())
        || {
            let name = rows::worker_name_of(registry, view.function.map(|f| f.owner), &view.key.id);
            input.worker.as_deref() == Some(name)
                || input.workers.iter().flatten().any(|w| w == name)
        };
    internal_ok && prefix_ok && worker_ok
}

/// A list without a search: a range scan from the cursor (or the prefix), stopped once
/// the page is full or the prefix is passed.
fn page_in_order(registry: &Registry, input: &ListInput) -> Result<Rows, EngineError> {
    // The cursor is [rank, id, namespace]; the rank is "0" for every row of such a list.
    let after = match input.page.after()?.as_deref() {
        None => None,
        Some([_rank, id, namespace]) => Some(FunctionKey::new(namespace.as_str(), id.as_str())),
        Some(_) => return Err(paging::forged_cursor()),
    };
    let prefix = input.prefix.as_deref().unwrap_or("");
    // Ids that start with the prefix sort together, from the prefix itself on.
    let prefix_start = FunctionKey::new("", prefix);
    let start = match &after {
        Some(after) if *after >= prefix_start => Bound::Excluded(after),
        _ => Bound::Included(&prefix_start),
    };
    let limit = input.page.limit();
    let mut page: Vec<FunctionView<'_>> = rows::functions_from(registry, start)
        .take_while(|v| v.key.id.starts_with(prefix))
        .filter(|v| wanted(registry, input, v))
        .take(limit.saturating_add(1))
        .collect();
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last()
            .map(|v| paging::cursor(&["0".into(), v.key.id.clone(), v.key.namespace.clone()]))
    } else {
        None
    };
    let rows = page.iter().map(|v| rows::summary(registry, v)).collect();
    Ok((rows, next))
}

/// A list with a search: every match, best rank first, (id, namespace) order within a rank.
fn ranked(registry: &Registry, input: &ListInput, needle: &str) -> Result<Rows, EngineError> {
    let mut views: Vec<(u8, FunctionView<'_>)> = rows::all_functions(registry)
        .into_iter()
        .filter(|v| wanted(registry, input, v))
        .filter_map(|v| rank(&v, needle).map(|r| (r, v)))
        .collect();
    // `all_functions` is sorted by (id, namespace); a stable sort by rank keeps that order
    // within each rank.
    views.sort_by_key(|(rank, _)| *rank);
    let (views, next) = input.page.cut(views, |(rank, v)| {
        vec![rank.to_string(), v.key.id.clone(), v.key.namespace.clone()]
    })?;
    let rows = views
        .iter()
        .map(|(_, v)| rows::summary(registry, v))
        .collect();
    Ok((rows, next))
}

#[derive(Debug, Default, Deserialize)]
pub struct InfoInput {
    #[serde(default)]
    function_id: Option<String>,
    #[serde(default)]
    function_ids: Option<Vec<String>>,
    #[serde(default)]
    namespace: Option<String>,
}

/// Resolution for info: explicit namespace is strict; otherwise `default` wins, then an
/// id found in exactly one namespace.
fn find<'a>(
    registry: &'a Registry,
    id: &str,
    namespace: Option<&str>,
) -> Result<FunctionView<'a>, EngineError> {
    let matches: Vec<FunctionView<'a>> = rows::functions_with_id(registry, id);
    let namespaces: Vec<String> = matches.iter().map(|v| v.key.namespace.clone()).collect();
    let wanted = match namespace {
        Some(ns) => matches.into_iter().find(|v| v.key.namespace == ns),
        None if namespaces.iter().any(|n| n == DEFAULT_NAMESPACE) => {
            matches.into_iter().find(|v| v.key.namespace == DEFAULT_NAMESPACE)
        }
        None if namespaces.len() == 1 => matches.into_iter().next(),
        None if namespaces.len() > 1 => {
            return Err(EngineError::NotFound(format!(
                "Function '{id}' is ambiguous: it is registered in namespace(s): {}. Pass `namespace` to select one.",
                namespaces.join(", ")
            )))
        }
        None => None,
    };
    wanted.ok_or_else(|| EngineError::NotFound(format!("Function '{id}' is not registered.")))
}

pub fn info(node: &Arc<Node>, input: InfoInput) -> Result<Value, EngineError> {
    let registry = node.registry();
    let namespace = input.namespace.as_deref();
    match (input.function_id, input.function_ids) {
        (Some(id), None) => {
            find(&registry, &id, namespace).map(|v| rows::function_detail(&registry, &v))
        }
        (None, Some(ids)) if (1..=32).contains(&ids.len()) => {
            let mut seen = Vec::new();
            let rows: Vec<Value> = ids
                .into_iter()
                .filter(|id| {
                    let new = !seen.contains(id);
                    seen.push(id.clone());
                    new
                })
                .map(|id| match find(&registry, &id, namespace) {
                    Ok(v) => rows::function_detail(&registry, &v),
                    Err(_) => json!({"function_id": id, "error": "not_found"}),
                })
                .collect();
            Ok(json!({ "functions": rows }))
        }
        _ => Err(EngineError::InvalidArguments(
            "Give exactly one of `function_id` or `function_ids` (1 to 32 ids).".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WorkerId;
    use crate::registry::{Announcement, Command, Registration, WorkerMeta};

    /// A registry with one worker per namespace, each serving `ids`.
    fn registry_with(namespaces: &[(&str, &[&str])]) -> Registry {
        let mut registry = Registry::default();
        for (n, (namespace, ids)) in namespaces.iter().enumerate() {
            let worker = WorkerId(uuid::Uuid::from_bytes([n as u8 + 1; 16]));
            registry.apply(&Command::WorkerConnected {
                worker,
                node: 1,
                token_hash: String::new(),
                at_ms: 0,
                ip_address: None,
            });
            let mut items = vec![Registration::Announce(Announcement {
                namespace: namespace.to_string(),
                meta: WorkerMeta::default(),
            })];
            items.extend(ids.iter().map(|id| Registration::Function {
                id: id.to_string(),
                description: None,
                request_format: None,
                response_format: None,
                metadata: None,
                invocation: None,
            }));
            registry.apply(&Command::Registrations { worker, items });
        }
        registry
    }

    /// (id, namespace) of each row.
    fn keys(rows: &[rows::FunctionSummary]) -> Vec<(String, String)> {
        let rows = serde_json::to_value(rows).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let field = |f: &str| r[f].as_str().unwrap().to_string();
                (field("function_id"), field("namespace"))
            })
            .collect()
    }

    fn input(limit: Option<usize>, cursor: Option<String>) -> ListInput {
        ListInput {
            page: Page { limit, cursor },
            ..ListInput::default()
        }
    }

    fn sample() -> Registry {
        registry_with(&[
            ("default", &["b::x", "a::y", "c::z", "engine::queue::q"]),
            ("orders", &["a::y", "b::w", "b"]),
        ])
    }

    #[test]
    fn a_full_list_is_in_id_then_namespace_order_without_internal_functions() {
        let (rows, next) = page_in_order(&sample(), &input(None, None)).unwrap();
        let expected: Vec<(String, String)> = [
            ("a::y", "default"),
            ("a::y", "orders"),
            ("b", "orders"),
            ("b::w", "orders"),
            ("b::x", "default"),
            ("c::z", "default"),
            ("engine::queue::q", "default"),
        ]
        .iter()
        .map(|(id, ns)| (id.to_string(), ns.to_string()))
        .collect();
        assert_eq!(keys(&rows), expected);
        assert_eq!(next, None);
    }

    #[test]
    fn pages_walk_every_row_once_in_the_order_of_the_search_path() {
        let registry = sample();
        for include_internal in [false, true] {
            for prefix in [None, Some("b"), Some("b::"), Some("engine::"), Some("zz")] {
                let filters = |page: Page| ListInput {
                    include_internal: Some(include_internal),
                    prefix: prefix.map(str::to_string),
                    page,
                    ..ListInput::default()
                };
                // An empty search ranks every row 0: the old path, which sorts everything.
                let (all, _) = ranked(&registry, &filters(Page::default()), "").unwrap();
                let mut walked = Vec::new();
                let mut cursor = None;
                loop {
                    let page = Page {
                        limit: Some(2),
                        cursor: cursor.take(),
                    };
                    let (rows, next) = page_in_order(&registry, &filters(page)).unwrap();
                    assert!(rows.len() <= 2);
                    walked.extend(keys(&rows));
                    match next {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                assert_eq!(walked, keys(&all), "{include_internal} {prefix:?}");
            }
        }
    }

    #[test]
    fn a_cursor_of_the_wrong_shape_is_invalid_arguments() {
        let forged = input(Some(1), Some("[\"0\"]".into()));
        let err = page_in_order(&sample(), &forged).unwrap_err();
        assert_eq!(err.code(), "INVALID_ARGUMENTS");
    }
}
