//! What one worker connection may do, decided once at connect from its token: which
//! namespaces it may use, whether it may register functions and trigger types, which function
//! ids it may call, and what the `engine::*::list`/`info` built-ins show it.
//!
//! The session asks with one line per frame kind; every refusal names the token and the rule,
//! never the token itself. With `--worker-auth off` the grant is unrestricted and every check
//! is a single branch.

use serde_json::Value;
use std::sync::Arc;

use super::tokens::{glob_matches, namespaces};
use crate::ids::DEFAULT_NAMESPACE;
use crate::protocol::error::{EngineError, FUNCTION_NAMESPACE_CONFLICT};
use crate::protocol::{ErrorBody, Outgoing, Payload};
use crate::registry::{reserved, Registration, WorkerMeta, WorkerToken};

/// Built-ins every token may call, as in iii: announcing a worker and opening a channel.
const ALWAYS_ALLOWED: [&str; 2] = ["engine::workers::register", "engine::channels::create"];

/// Built-ins that bind triggers in `default`: only for tokens that may use `default`.
const BINDS_IN_DEFAULT: [&str; 2] = ["engine::register_trigger", "engine::unregister_trigger"];

/// The rights of one connection.
#[derive(Debug)]
pub struct Grant {
    /// `None` when worker auth is off or for a managed worker: everything is allowed.
    token: Option<WorkerToken>,
    /// For this node's own managed worker (admitted with its local token): the one worker
    /// name the connection may announce.
    managed: Option<String>,
}

impl Grant {
    /// A connection on a node without worker auth.
    pub fn unrestricted() -> Arc<Self> {
        Arc::new(Self {
            token: None,
            managed: None,
        })
    }

    /// A connection admitted with `token`.
    pub fn of(token: WorkerToken) -> Arc<Self> {
        Arc::new(Self {
            token: Some(token),
            managed: None,
        })
    }

    /// This node's managed worker `name`, admitted with its local token: every right (its
    /// operator chose what it runs), but no other worker name.
    pub fn managed(name: String) -> Arc<Self> {
        Arc::new(Self {
            token: None,
            managed: Some(name),
        })
    }

    /// The managed worker this connection was admitted as, if any.
    pub fn managed_name(&self) -> Option<&str> {
        self.managed.as_deref()
    }

    /// Refuses an announcement (`engine::workers::register`) the connection may not make:
    /// a namespace its token does not allow, or, for a managed worker, another name.
    pub fn check_announcement(&self, namespace: &str, meta: &WorkerMeta) -> Result<(), ErrorBody> {
        let name = meta.name.as_deref();
        if let Some(own) = self.managed.as_deref().filter(|own| name != Some(*own)) {
            return Err(forbidden(format!(
                "this connection was admitted with the local token of managed worker '{own}' and may announce only that name"
            )));
        }
        self.check_namespace(namespace)
    }

    /// The name of the token the connection was admitted with.
    pub fn token_name(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.name.as_str())
    }

    /// Refuses a call the token does not allow (`FORBIDDEN`). `data` is the call's input: a
    /// durable binding made with `engine::register_trigger` must target a callable function.
    pub fn check_call(
        &self,
        namespace: &str,
        function_id: &str,
        data: Option<&Value>,
    ) -> Result<(), ErrorBody> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        if ALWAYS_ALLOWED.contains(&function_id) && namespace == DEFAULT_NAMESPACE {
            return Ok(());
        }
        let builtin = namespace == DEFAULT_NAMESPACE && reserved::is_builtin_function(function_id);
        if !builtin || BINDS_IN_DEFAULT.contains(&function_id) {
            self.check_namespace(namespace)?;
        }
        if function_id == BINDS_IN_DEFAULT[0] {
            let target = data
                .and_then(|d| d.get("function_id"))
                .and_then(Value::as_str);
            if let Some(target) = target.filter(|t| !may_call(token, t)) {
                return Err(forbidden(format!(
                    "worker token '{}' may not bind a trigger to '{target}' (allowed: {})",
                    token.name,
                    token.call.join(", ")
                )));
            }
        }
        if may_call(token, function_id) {
            Ok(())
        } else {
            Err(forbidden(format!(
                "worker token '{}' may not call '{function_id}' (allowed: {})",
                token.name,
                token.call.join(", ")
            )))
        }
    }

    /// Refuses a namespace the token does not allow (`FORBIDDEN`).
    pub fn check_namespace(&self, namespace: &str) -> Result<(), ErrorBody> {
        match &self.token {
            Some(token) if !namespaces(token).contains(&namespace) => Err(forbidden(format!(
                "worker token '{}' may not use namespace '{namespace}' (permitted: {})",
                token.name,
                namespaces(token).join(", ")
            ))),
            _ => Ok(()),
        }
    }

    /// Splits registrations (made in the connection's `namespace`) into those the token
    /// allows and the refusals to send back, in order.
    pub fn screen(
        &self,
        namespace: &str,
        items: Vec<Registration>,
    ) -> (Vec<Registration>, Vec<Outgoing>) {
        if self.token.is_none() {
            return (items, Vec::new());
        }
        let mut allowed = Vec::with_capacity(items.len());
        let mut refused = Vec::new();
        for item in items {
            match self.refusal(namespace, &item) {
                Some(frame) => refused.push(frame),
                None => allowed.push(item),
            }
        }
        (allowed, refused)
    }

    fn refusal(&self, namespace: &str, item: &Registration) -> Option<Outgoing> {
        let token = self.token.as_ref()?;
        let no_register = || {
            format!(
                "worker token '{}' may not register functions or trigger types (made with --no-register)",
                token.name
            )
        };
        match item {
            Registration::Function { id, .. } => {
                let reason = if token.register {
                    self.check_namespace(namespace).err()?.message
                } else {
                    no_register()
                };
                Some(rejected(namespace, Some(id.clone()), reason))
            }
            Registration::TriggerType { namespace: ns, .. } => {
                let ns = ns.as_deref().unwrap_or(namespace);
                let reason = if token.register {
                    self.check_namespace(ns).err()?.message
                } else {
                    no_register()
                };
                Some(rejected(ns, None, reason))
            }
            Registration::Trigger {
                id,
                trigger_type,
                function_id,
                namespace: target,
                trigger_namespace,
                ..
            } => {
                let target = target.as_deref().unwrap_or(DEFAULT_NAMESPACE);
                let error = self
                    .check_namespace(namespace)
                    .and_then(|()| self.check_namespace(target))
                    .and_then(|()| match trigger_namespace {
                        Some(ns) => self.check_namespace(ns),
                        None => Ok(()),
                    })
                    .and_then(|()| self.check_call(target, function_id, None))
                    .err()?;
                Some(Outgoing::TriggerRegistrationResult {
                    id: id.clone(),
                    trigger_type: trigger_type.clone(),
                    function_id: function_id.clone(),
                    error: Some(error),
                })
            }
            _ => None,
        }
    }

    /// Narrows a built-in's answer to what the token's namespaces hold and the functions it
    /// may call: rows of other namespaces leave the lists, and an `info` about one is
    /// `FORBIDDEN`.
    pub fn filter_builtin(
        &self,
        function_id: &str,
        result: Result<Value, ErrorBody>,
    ) -> Result<Value, ErrorBody> {
        let Some(token) = &self.token else {
            return result;
        };
        let mut value = result?;
        if !function_id.starts_with("engine::") {
            return Ok(value);
        }
        if !self.visible(token, &value) {
            return Err(forbidden(format!(
                "'{function_id}' answered about something worker token '{}' may not see",
                token.name
            )));
        }
        if let Value::Object(fields) = &mut value {
            for field in fields.values_mut() {
                if let Value::Array(rows) = field {
                    rows.retain(|row| self.visible(token, row));
                }
            }
        }
        Ok(value)
    }

    /// [`Self::filter_builtin`] for an answer that may be rendered text: only a token's
    /// filter looks inside an answer, so without a token the text goes out as it is.
    pub fn filter_payload(
        &self,
        function_id: &str,
        result: Result<Payload, ErrorBody>,
    ) -> Result<Payload, ErrorBody> {
        if self.token.is_none() {
            return result;
        }
        self.filter_builtin(function_id, result.map(Payload::into_value))
            .map(Payload::Value)
    }

    /// Whether a built-in's row is in the token's namespaces and, for a function, callable.
    fn visible(&self, token: &WorkerToken, row: &Value) -> bool {
        let in_namespace = match row.get("namespace") {
            Some(Value::String(ns)) => namespaces(token).contains(&ns.as_str()),
            _ => true,
        };
        let callable = match row.get("function_id") {
            Some(Value::String(id)) => may_call(token, id),
            _ => true,
        };
        in_namespace && callable
    }
}

/// Whether the token's `call` globs let it call `function_id` (no globs: any id).
fn may_call(token: &WorkerToken, function_id: &str) -> bool {
    token.call.is_empty() || token.call.iter().any(|g| glob_matches(g, function_id))
}

fn forbidden(message: String) -> ErrorBody {
    EngineError::Forbidden(message).body()
}

/// A `registrationrejected` for a refused registration. The code is the one the SDKs treat as
/// "this one registration refused, keep serving the rest" (any other code stops them for good).
fn rejected(namespace: &str, function_id: Option<String>, message: String) -> Outgoing {
    Outgoing::RegistrationRejected {
        code: FUNCTION_NAMESPACE_CONFLICT.into(),
        namespace: namespace.to_string(),
        owner_worker_id: String::new(),
        function_id,
        worker_name: None,
        message: Some(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grant(namespaces: &[&str], register: bool, call: &[&str]) -> Arc<Grant> {
        Grant::of(WorkerToken {
            name: "ci".into(),
            sha256: "0".repeat(64),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            register,
            call: call.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn function(id: &str) -> Registration {
        Registration::Function {
            id: id.into(),
            description: None,
            request_format: None,
            response_format: None,
            metadata: None,
            invocation: None,
        }
    }

    #[test]
    fn calls_follow_the_globs_and_namespaces_and_name_the_token() {
        let g = grant(&["orders"], true, &["orders::*"]);
        assert!(g.check_call("orders", "orders::create", None).is_ok());
        let err = g.check_call("orders", "billing::charge", None).unwrap_err();
        assert_eq!(err.code, "FORBIDDEN");
        assert!(err.message.contains("'ci'") && err.message.contains("orders::*"));
        let err = g.check_call("default", "orders::create", None).unwrap_err();
        assert!(
            err.message.contains("namespace 'default'"),
            "{}",
            err.message
        );
        // Always allowed, whatever the globs and namespaces say.
        assert!(g
            .check_call("default", "engine::workers::register", None)
            .is_ok());
        assert!(g
            .check_call("default", "engine::channels::create", None)
            .is_ok());
        // Other built-ins follow the globs but need no namespace...
        assert!(g
            .check_call("default", "engine::functions::list", None)
            .is_err());
        let any = grant(&["orders"], true, &[]);
        assert!(any
            .check_call("default", "engine::functions::list", None)
            .is_ok());
        // ...except the ones that bind triggers in `default`.
        assert!(any
            .check_call("default", "engine::register_trigger", None)
            .is_err());
        assert!(Grant::unrestricted().check_call("x", "y", None).is_ok());
    }

    #[test]
    fn a_durable_binding_must_target_a_function_the_token_may_call() {
        let g = grant(&[], true, &["engine::register_trigger", "jobs::*"]);
        let bind = |target: &str| json!({"type": "cron", "function_id": target});
        let allowed = bind("jobs::nightly");
        assert!(g
            .check_call("default", "engine::register_trigger", Some(&allowed))
            .is_ok());
        let refused = bind("billing::charge");
        let err = g
            .check_call("default", "engine::register_trigger", Some(&refused))
            .unwrap_err();
        assert!(
            err.message.contains("bind a trigger to 'billing::charge'"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_managed_worker_may_announce_its_own_name_only() {
        let named = |name: Option<&str>| WorkerMeta {
            name: name.map(String::from),
            ..WorkerMeta::default()
        };
        let g = Grant::managed("resizer".into());
        assert_eq!(g.managed_name(), Some("resizer"));
        assert!(g
            .check_announcement("images", &named(Some("resizer")))
            .is_ok());
        for other in [Some("billing"), None] {
            let err = g.check_announcement("default", &named(other)).unwrap_err();
            assert_eq!(err.code, "FORBIDDEN");
            assert!(err.message.contains("'resizer'"), "{}", err.message);
        }
        // Otherwise every right, as with worker auth off.
        assert!(g.check_call("images", "billing::charge", None).is_ok());
        assert!(Grant::unrestricted()
            .check_announcement("x", &named(Some("y")))
            .is_ok());
        let err = grant(&[], true, &[])
            .check_announcement("orders", &named(Some("y")))
            .unwrap_err();
        assert!(
            err.message.contains("namespace 'orders'"),
            "{}",
            err.message
        );
    }

    #[test]
    fn no_namespaces_means_default_only() {
        let g = grant(&[], true, &[]);
        assert!(g.check_namespace("default").is_ok());
        assert!(g.check_namespace("orders").is_err());
    }

    #[test]
    fn registrations_need_the_register_right_and_an_allowed_namespace() {
        let g = grant(&["orders"], false, &[]);
        let (allowed, refused) = g.screen(
            "orders",
            vec![
                function("orders::create"),
                Registration::UnregisterFunction { id: "x".into() },
            ],
        );
        assert_eq!(
            allowed,
            vec![Registration::UnregisterFunction { id: "x".into() }]
        );
        let text = refused[0].to_text();
        assert!(text.contains("registrationrejected"), "{text}");
        assert!(
            text.contains("--no-register") && text.contains("'ci'"),
            "{text}"
        );
        let g = grant(&["orders"], true, &[]);
        let (allowed, refused) = g.screen("default", vec![function("f")]);
        assert!(allowed.is_empty());
        assert!(refused[0].to_text().contains("namespace 'default'"));
        let (allowed, refused) = g.screen("orders", vec![function("f")]);
        assert_eq!((allowed.len(), refused.len()), (1, 0));
    }

    #[test]
    fn a_trigger_on_a_function_it_may_not_call_is_forbidden() {
        let g = grant(&[], true, &["allowed::*"]);
        let trigger = |function_id: &str| Registration::Trigger {
            id: "t1".into(),
            trigger_type: "cron".into(),
            function_id: function_id.into(),
            config: Value::Null,
            metadata: None,
            namespace: None,
            trigger_namespace: None,
        };
        let (_, refused) = g.screen("default", vec![trigger("other::f")]);
        let text = refused[0].to_text();
        assert!(
            text.contains("triggerregistrationresult") && text.contains("FORBIDDEN"),
            "{text}"
        );
        let (allowed, refused) = g.screen("default", vec![trigger("allowed::f")]);
        assert_eq!((allowed.len(), refused.len()), (1, 0));
    }

    #[test]
    fn built_in_lists_keep_only_the_tokens_namespaces_and_callable_functions() {
        let g = grant(&["orders"], true, &["orders::*", "engine::*"]);
        let list = json!({"functions": [
            {"function_id": "orders::create", "namespace": "orders"},
            {"function_id": "orders::create", "namespace": "billing"},
            {"function_id": "secret::f", "namespace": "orders"},
        ]});
        let out = g
            .filter_builtin("engine::functions::list", Ok(list))
            .unwrap();
        assert_eq!(out["functions"].as_array().unwrap().len(), 1);
        let info = json!({"worker_id": "w", "namespace": "billing"});
        let err = g
            .filter_builtin("engine::workers::info", Ok(info))
            .unwrap_err();
        assert_eq!(err.code, "FORBIDDEN");
        let untouched = json!({"functions": [{"function_id": "x", "namespace": "billing"}]});
        assert_eq!(
            Grant::unrestricted()
                .filter_builtin("engine::functions::list", Ok(untouched.clone()))
                .unwrap(),
            untouched
        );
    }
}
