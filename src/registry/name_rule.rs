//! The name rule (`protocol::names`), enforced again where names are stored.
//!
//! The gateway refuses a namespace or worker name that breaks the rule before anything is
//! proposed, but the registry applies whatever the Raft log holds: an entry written by a
//! node of another version, a bug or a forged log must not store such a name either. A
//! batch of registrations holding one is refused as a whole in `apply`, with a rejection
//! per offending name and no change to the registry, so no part of the batch lands in a
//! namespace other than the one its worker meant. A binding made by
//! `engine::register_trigger` whose `trigger_namespace` breaks the rule is refused the same
//! way, with the reason in the outcome's `refusal`.

use super::command::{Registration, Rejection};
use crate::protocol::names::{check_name, echo, namespace_problem};

/// The refusals of the names in `items` that break the rule; empty when all keep it.
pub(super) fn refusals(items: &[Registration]) -> Vec<Rejection> {
    items.iter().flat_map(refusals_of).collect()
}

fn refusals_of(item: &Registration) -> Vec<Rejection> {
    let mut refused = Vec::new();
    let mut namespace = |field: &str, value: Option<&String>| {
        if let Some(message) = namespace_problem(field, &value.cloned()) {
            refused.push(Rejection::InvalidName {
                field: field.to_string(),
                message,
            });
        }
    };
    match item {
        Registration::Announce(announcement) => {
            namespace("namespace", Some(&announcement.namespace));
            if let Some(name) = &announcement.meta.name {
                if let Some(message) = worker_name_problem(name) {
                    refused.push(Rejection::InvalidName {
                        field: "name".into(),
                        message,
                    });
                }
            }
        }
        Registration::FixNamespace { namespace: ns } => namespace("namespace", Some(ns)),
        Registration::TriggerType { namespace: ns, .. } => namespace("namespace", ns.as_ref()),
        Registration::Trigger {
            namespace: ns,
            trigger_namespace,
            ..
        } => {
            namespace("namespace", ns.as_ref());
            namespace("trigger_namespace", trigger_namespace.as_ref());
        }
        _ => {}
    }
    refused
}

/// Why the `trigger_namespace` of a binding made by `engine::register_trigger` breaks the
/// rule; such a command changes nothing.
pub(super) fn durable_trigger_problem(trigger_namespace: &Option<String>) -> Option<String> {
    namespace_problem("trigger_namespace", trigger_namespace)
}

/// Why a worker name breaks the rule (blank names are never announced: the gateway turns
/// them into no name).
fn worker_name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("worker name is blank".into());
    }
    check_name(name)
        .err()
        .map(|err| format!("worker name `{}` {err}", echo(name)))
}
