//! `Registry::apply`: the only way the registry changes.

use std::collections::BTreeMap;

use super::command::{
    Announcement, Command, Event, Notice, Outcome, Registration, Rejection, WorkerEventKind,
};
use super::model::{Function, Registry, Service, Trigger, TriggerType, Worker};
use super::reserved;
use crate::ids::{FunctionKey, TriggerTypeKey, WorkerId, DEFAULT_NAMESPACE};

/// Who serves a binding: parked, the engine itself, or a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Parked,
    Engine,
    Worker(WorkerId),
}

impl Registry {
    /// Applies one committed command. Deterministic: the same log gives the same state
    /// and the same outcomes on every node.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let mut out = Outcome::default();
        match command {
            Command::WorkerConnected {
                worker,
                node,
                token_hash,
                at_ms,
                ip_address,
            } => {
                if self.workers.contains_key(worker) {
                    // Ids are fresh UUIDs; a repeat is a replayed duplicate, not a new socket.
                    return out;
                }
                self.workers.insert(
                    *worker,
                    Worker {
                        id: *worker,
                        node: *node,
                        token_hash: token_hash.clone(),
                        connected_at_ms: *at_ms,
                        ip_address: ip_address.clone(),
                        namespace: None,
                        meta: None,
                    },
                );
                out.events.push(Event::WorkerLifecycle {
                    worker: *worker,
                    kind: WorkerEventKind::Connected,
                });
            }
            Command::WorkerDisconnected { worker } => self.remove_worker(*worker, &mut out),
            Command::Registrations { worker, items } => {
                self.apply_registrations(*worker, items, &mut out)
            }
            Command::TriggerRefused {
                provider,
                trigger_id,
                error_code,
                error_message,
            } => self.refuse_trigger(*provider, trigger_id, error_code, error_message, &mut out),
            Command::DurableTriggerRegistered {
                id,
                trigger_type,
                function_id,
                config,
                metadata,
                trigger_namespace,
            } => {
                if let Some(problem) = super::name_rule::durable_trigger_problem(trigger_namespace)
                {
                    out.refusal = Some(problem);
                    return out;
                }
                let trigger = Trigger {
                    id: id.clone(),
                    trigger_type: trigger_type.clone(),
                    function_id: function_id.clone(),
                    config: config.clone(),
                    metadata: metadata.clone(),
                    target_namespace: DEFAULT_NAMESPACE.to_string(),
                    home_namespace: DEFAULT_NAMESPACE.to_string(),
                    trigger_namespace: trigger_namespace.clone(),
                    owner: None,
                    provider: None,
                };
                if let Server::Worker(provider) = self.bind_trigger(trigger, &mut out) {
                    out.awaiting_provider = Some(provider);
                }
            }
            Command::TriggerRemoved { id } => {
                out.removed = self.remove_trigger(id, &mut out);
            }
            Command::TriggerAccepted {
                provider,
                trigger_id,
            } => {
                let durable = self
                    .triggers
                    .get(trigger_id)
                    .is_some_and(|t| t.owner.is_none());
                let served_by = self
                    .triggers
                    .get(trigger_id)
                    .map(|t| self.server_of(t.provider.as_ref()));
                if durable && served_by == Some(Server::Worker(*provider)) {
                    out.events.push(Event::TriggerVerdict {
                        trigger_id: trigger_id.clone(),
                        error: None,
                    });
                }
            }
            Command::TokenCreated(token) => out.refusal = self.create_token(token),
            Command::TokenRevoked { name } => {
                self.revoke_token(name);
                out.events.push(Event::TokenRevoked { name: name.clone() });
            }
            Command::ManagedWorkerPut {
                spec,
                at_ms,
                origin,
            } => self.put_managed(spec, *at_ms, *origin, &mut out),
            Command::ManagedConfigRetained { names } => self.retain_config_managed(names),
            Command::ManagedWorkerRemoved { name } => self.remove_managed(name, &mut out),
            Command::ManagedWorkerRestart { name, from } => {
                self.restart_managed(name, *from, &mut out)
            }
            Command::ManagedWorkerPlaced {
                name,
                node,
                expected,
            } => self.place_managed(name, *node, *expected, &mut out),
            Command::ManagedWorkerUnplaceable {
                name,
                reason,
                expected,
            } => self.unplaceable_managed(name, reason, *expected, &mut out),
            Command::ManagedWorkerStatus { name, node, status } => {
                self.report_managed(name, *node, status)
            }
            Command::NodeLabels { node, labels } => {
                self.node_labels.insert(*node, labels.clone());
            }
            Command::NodeDraining { node, cause } => self.mark_draining(*node, *cause),
            Command::NodeUndrained { node, removal } => self.undrain(*node, *removal, &mut out),
            Command::ReattachClaim {
                previous,
                token_hash,
                successor,
                node,
            } => out.events.push(Event::Reattached {
                previous: *previous,
                token_hash: token_hash.clone(),
                successor: *successor,
                node: *node,
            }),
            Command::NodeRestarted { node } | Command::NodePurged { node } => {
                if matches!(command, Command::NodePurged { .. }) {
                    self.unplace_node(*node);
                } else {
                    // A new process commits its labels again once its supervisor runs.
                    self.node_labels.remove(node);
                }
                self.forget_drain(*node);
                let stale: Vec<WorkerId> = self
                    .workers
                    .values()
                    .filter(|w| w.node == *node)
                    .map(|w| w.id)
                    .collect();
                for worker in stale {
                    self.remove_worker(worker, &mut out);
                }
            }
        }
        out
    }

    fn apply_registrations(&mut self, worker: WorkerId, items: &[Registration], out: &mut Outcome) {
        if !self.workers.contains_key(&worker) {
            // The connection is already gone: its late registrations must not resurrect it.
            return;
        }
        let refused = super::name_rule::refusals(items);
        if !refused.is_empty() {
            out.rejections = refused;
            return;
        }
        let mut announced = false;
        for item in items {
            match item {
                Registration::Announce(announcement) => {
                    if !self.announce(worker, announcement, out) {
                        out.name_rejected = true;
                        return;
                    }
                    announced = true;
                }
                Registration::FixNamespace { namespace } => {
                    self.fix_namespace(worker, namespace);
                }
                Registration::Function {
                    id,
                    description,
                    request_format,
                    response_format,
                    metadata,
                    invocation,
                } => {
                    let function = Function {
                        owner: worker,
                        description: description.clone(),
                        request_format: request_format.clone(),
                        response_format: response_format.clone(),
                        metadata: metadata.clone(),
                        invocation: invocation.clone(),
                    };
                    self.register_function(worker, id, function, out);
                }
                Registration::UnregisterFunction { id } => {
                    let key = FunctionKey::new(self.namespace_of(worker), id.as_str());
                    if self.functions.get(&key).is_some_and(|f| f.owner == worker) {
                        self.functions.remove(&key);
                        push_functions_changed(out);
                    }
                }
                Registration::TriggerType {
                    namespace,
                    id,
                    description,
                    trigger_request_format,
                    call_request_format,
                } => {
                    let ns = namespace
                        .clone()
                        .unwrap_or_else(|| self.namespace_of(worker));
                    let key = TriggerTypeKey::new(ns, id.as_str());
                    if self
                        .trigger_types
                        .get(&key)
                        .is_some_and(|t| t.owner.is_none())
                    {
                        // Built-in providers cannot be replaced by a worker.
                        continue;
                    }
                    let provider = TriggerType {
                        owner: Some(worker),
                        description: description.clone(),
                        trigger_request_format: trigger_request_format.clone(),
                        call_request_format: call_request_format.clone(),
                    };
                    self.change_provider(&key, Some(provider), out);
                }
                Registration::UnregisterTriggerType { namespace, id } => {
                    let ns = namespace
                        .clone()
                        .unwrap_or_else(|| self.namespace_of(worker));
                    let key = TriggerTypeKey::new(ns, id.as_str());
                    if self
                        .trigger_types
                        .get(&key)
                        .is_some_and(|t| t.owner == Some(worker))
                    {
                        self.change_provider(&key, None, out);
                    }
                }
                Registration::Trigger {
                    id,
                    trigger_type,
                    function_id,
                    config,
                    metadata,
                    namespace,
                    trigger_namespace,
                } => {
                    let trigger = Trigger {
                        id: id.clone(),
                        trigger_type: trigger_type.clone(),
                        function_id: function_id.clone(),
                        config: config.clone(),
                        metadata: metadata.clone(),
                        target_namespace: namespace
                            .clone()
                            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
                        home_namespace: self.namespace_of(worker),
                        trigger_namespace: trigger_namespace.clone(),
                        owner: Some(worker),
                        provider: None,
                    };
                    self.bind_trigger(trigger, out);
                }
                Registration::UnregisterTrigger { id } => {
                    self.remove_trigger(id, out);
                }
                Registration::Service {
                    id,
                    name,
                    description,
                    parent_service_id,
                } => {
                    let name = name
                        .clone()
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| id.clone());
                    self.services.insert(
                        id.clone(),
                        Service {
                            owner: worker,
                            name,
                            description: description.clone(),
                            parent_service_id: parent_service_id.clone(),
                        },
                    );
                }
            }
        }
        if announced {
            out.events.push(Event::WorkerLifecycle {
                worker,
                kind: WorkerEventKind::MetadataUpdated,
            });
        }
    }

    /// Takes the name lease and stores the metadata. False when another live worker
    /// holds the name: nothing is stored then.
    fn announce(
        &mut self,
        worker: WorkerId,
        announcement: &Announcement,
        out: &mut Outcome,
    ) -> bool {
        self.fix_namespace(worker, &announcement.namespace);
        let namespace = self.namespace_of(worker);
        if let Some(name) = &announcement.meta.name {
            let lease = (namespace.clone(), name.clone());
            match self.names.get(&lease) {
                Some(holder)
                    if *holder != worker
                        && self.workers.contains_key(holder)
                        && !self.yields_to_newcomer(*holder) =>
                {
                    out.rejections.push(Rejection::WorkerName {
                        namespace,
                        name: name.clone(),
                        owner: *holder,
                    });
                    return false;
                }
                _ => {}
            }
            self.names.retain(|_, holder| *holder != worker);
            self.names.insert(lease, worker);
        }
        if let Some(entry) = self.workers.get_mut(&worker) {
            entry.meta = Some(announcement.meta.clone());
        }
        true
    }

    fn fix_namespace(&mut self, worker: WorkerId, namespace: &str) {
        if let Some(entry) = self.workers.get_mut(&worker) {
            entry.namespace.get_or_insert_with(|| namespace.to_string());
        }
    }

    fn register_function(
        &mut self,
        worker: WorkerId,
        id: &str,
        function: Function,
        out: &mut Outcome,
    ) {
        let namespace = self.namespace_of(worker);
        let reserved_here = if namespace == DEFAULT_NAMESPACE {
            reserved::is_builtin_function(id)
        } else {
            reserved::is_engine_id(id)
        };
        if reserved_here {
            out.rejections.push(Rejection::Function {
                namespace,
                function_id: id.to_string(),
                owner: None,
            });
            return;
        }
        let key = FunctionKey::new(namespace.clone(), id);
        match self.functions.get(&key) {
            Some(existing)
                if existing.owner != worker
                    && self.workers.contains_key(&existing.owner)
                    && !self.yields_to_newcomer(existing.owner) =>
            {
                out.rejections.push(Rejection::Function {
                    namespace,
                    function_id: id.to_string(),
                    owner: Some(existing.owner),
                });
            }
            previous => {
                let is_new = previous.is_none();
                self.moving.remove(&key);
                self.functions.insert(key, function);
                if is_new {
                    push_functions_changed(out);
                }
            }
        }
    }

    /// Stores a binding and tells its provider. Returns who serves it.
    fn bind_trigger(&mut self, mut trigger: Trigger, out: &mut Outcome) -> Server {
        trigger.provider = self.resolve(&trigger);
        let server = self.server_of(trigger.provider.as_ref());
        if let Server::Worker(provider) = server {
            out.events.push(Event::Notify {
                worker: provider,
                notice: Notice::RegisterTrigger(Box::new(trigger.clone())),
            });
        }
        self.triggers.insert(trigger.id.clone(), trigger);
        server
    }

    /// Removes a binding, telling its provider. True when it existed.
    fn remove_trigger(&mut self, id: &str, out: &mut Outcome) -> bool {
        let Some(trigger) = self.triggers.remove(id) else {
            return false;
        };
        if let Server::Worker(provider) = self.server_of(trigger.provider.as_ref()) {
            out.events.push(Event::Notify {
                worker: provider,
                notice: Notice::UnregisterTrigger {
                    id: trigger.id,
                    trigger_type: trigger.trigger_type,
                },
            });
        }
        true
    }

    fn refuse_trigger(
        &mut self,
        provider: WorkerId,
        trigger_id: &str,
        error_code: &str,
        error_message: &str,
        out: &mut Outcome,
    ) {
        let Some(trigger) = self.triggers.get(trigger_id) else {
            return;
        };
        if self.server_of(trigger.provider.as_ref()) != Server::Worker(provider) {
            // Only the binding's current provider may refuse it.
            return;
        }
        let owner = trigger.owner;
        let notice = Notice::TriggerRefused {
            id: trigger.id.clone(),
            trigger_type: trigger.trigger_type.clone(),
            function_id: trigger.function_id.clone(),
            error_code: error_code.to_string(),
            error_message: error_message.to_string(),
        };
        if let Some(trigger) = self.triggers.get_mut(trigger_id) {
            trigger.provider = None;
        }
        if owner.is_none() {
            out.events.push(Event::TriggerVerdict {
                trigger_id: trigger_id.to_string(),
                error: Some((error_code.to_string(), error_message.to_string())),
            });
        }
        if let Some(owner) = owner {
            out.events.push(Event::Notify {
                worker: owner,
                notice,
            });
        }
    }

    /// Replaces (or removes) the provider under `key` and moves every binding of that
    /// type id to wherever it now resolves, telling old and new providers.
    fn change_provider(
        &mut self,
        key: &TriggerTypeKey,
        provider: Option<TriggerType>,
        out: &mut Outcome,
    ) {
        let before: BTreeMap<String, Server> = self
            .triggers
            .values()
            .filter(|t| t.trigger_type == key.id)
            .map(|t| (t.id.clone(), self.server_of(t.provider.as_ref())))
            .collect();
        match provider {
            Some(provider) => {
                self.trigger_types.insert(key.clone(), provider);
            }
            None => {
                self.trigger_types.remove(key);
            }
        }
        for (id, old_server) in before {
            let Some(trigger) = self.triggers.get(&id) else {
                continue;
            };
            let new_key = self.resolve(trigger);
            let new_server = self.server_of(new_key.as_ref());
            let resend = new_key.as_ref() == Some(key);
            if old_server == new_server && !resend {
                continue;
            }
            if let Server::Worker(old) = old_server {
                if old_server != new_server && self.workers.contains_key(&old) {
                    out.events.push(Event::Notify {
                        worker: old,
                        notice: Notice::UnregisterTrigger {
                            id: trigger.id.clone(),
                            trigger_type: trigger.trigger_type.clone(),
                        },
                    });
                }
            }
            let mut updated = trigger.clone();
            updated.provider = new_key;
            if let Server::Worker(new) = new_server {
                out.events.push(Event::Notify {
                    worker: new,
                    notice: Notice::RegisterTrigger(Box::new(updated.clone())),
                });
            }
            self.triggers.insert(id, updated);
        }
    }

    /// Disconnect cleanup: functions, owned bindings, provided types, lease, the worker.
    fn remove_worker(&mut self, worker: WorkerId, out: &mut Outcome) {
        if !self.workers.contains_key(&worker) {
            return;
        }
        let before = self.functions.len();
        let draining = self
            .workers
            .get(&worker)
            .is_some_and(|w| self.draining_nodes.contains(&w.node));
        if draining {
            let moving = self
                .functions
                .iter()
                .filter(|(_, f)| f.owner == worker)
                .map(|(k, _)| (k.clone(), worker));
            self.moving.extend(moving);
        }
        self.functions.retain(|_, f| f.owner != worker);
        if self.functions.len() != before {
            push_functions_changed(out);
        }
        let owned: Vec<String> = self
            .triggers
            .values()
            .filter(|t| t.owner == Some(worker))
            .map(|t| t.id.clone())
            .collect();
        // The worker is dropped first so no notice is addressed to it.
        let entry = self.workers.remove(&worker);
        for id in owned {
            self.remove_trigger(&id, out);
        }
        out.events
            .retain(|e| !matches!(e, Event::Notify { worker: w, .. } if *w == worker));
        let provided: Vec<TriggerTypeKey> = self
            .trigger_types
            .iter()
            .filter(|(_, t)| t.owner == Some(worker))
            .map(|(k, _)| k.clone())
            .collect();
        for key in provided {
            self.change_provider(&key, None, out);
        }
        self.names.retain(|_, holder| *holder != worker);
        self.services.retain(|_, s| s.owner != worker);
        if entry.is_some() {
            out.events.push(Event::WorkerLifecycle {
                worker,
                kind: WorkerEventKind::Disconnected,
            });
        }
    }

    /// The namespace a worker's registrations go to (`default` until fixed).
    pub(super) fn namespace_of(&self, worker: WorkerId) -> String {
        self.workers
            .get(&worker)
            .and_then(|w| w.namespace.clone())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
    }

    /// Provider resolution: an explicit `trigger_namespace` only; otherwise the home
    /// namespace, then `default`.
    fn resolve(&self, trigger: &Trigger) -> Option<TriggerTypeKey> {
        let candidates: Vec<&str> = match &trigger.trigger_namespace {
            Some(ns) => vec![ns.as_str()],
            None => vec![trigger.home_namespace.as_str(), DEFAULT_NAMESPACE],
        };
        candidates
            .into_iter()
            .map(|ns| TriggerTypeKey::new(ns, trigger.trigger_type.as_str()))
            .find(|key| self.trigger_types.contains_key(key))
    }

    fn server_of(&self, key: Option<&TriggerTypeKey>) -> Server {
        match key.and_then(|k| self.trigger_types.get(k)) {
            None => Server::Parked,
            Some(TriggerType { owner: None, .. }) => Server::Engine,
            Some(TriggerType {
                owner: Some(worker),
                ..
            }) => Server::Worker(*worker),
        }
    }
}

fn push_functions_changed(out: &mut Outcome) {
    if !out.events.contains(&Event::FunctionsChanged) {
        out.events.push(Event::FunctionsChanged);
    }
}
