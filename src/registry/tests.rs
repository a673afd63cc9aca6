//! Unit and property tests of the pure registry.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::ids::{FunctionKey, WorkerId};

fn wid(n: u8) -> WorkerId {
    WorkerId(uuid::Uuid::from_bytes([n; 16]))
}

fn connect(reg: &mut Registry, n: u8) -> WorkerId {
    let worker = wid(n);
    reg.apply(&Command::WorkerConnected {
        worker,
        node: 1,
        token_hash: format!("h{n}"),
        at_ms: 1,
        ip_address: None,
    });
    worker
}

fn announce(namespace: &str, name: &str) -> Registration {
    Registration::Announce(Announcement {
        namespace: namespace.into(),
        meta: WorkerMeta {
            name: Some(name.into()),
            ..Default::default()
        },
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

fn trigger_type(id: &str) -> Registration {
    Registration::TriggerType {
        namespace: None,
        id: id.into(),
        description: "d".into(),
        trigger_request_format: None,
        call_request_format: None,
    }
}

fn trigger(id: &str, trigger_type: &str) -> Registration {
    Registration::Trigger {
        id: id.into(),
        trigger_type: trigger_type.into(),
        function_id: "f".into(),
        config: json!({}),
        metadata: None,
        namespace: None,
        trigger_namespace: None,
    }
}

fn register(reg: &mut Registry, worker: WorkerId, items: Vec<Registration>) -> Outcome {
    reg.apply(&Command::Registrations { worker, items })
}

#[test]
fn a_second_live_owner_is_refused_and_the_first_keeps_the_function() {
    let mut reg = Registry::default();
    let a = connect(&mut reg, 1);
    let b = connect(&mut reg, 2);
    register(&mut reg, a, vec![announce("default", "a"), function("f")]);
    let out = register(&mut reg, b, vec![announce("default", "b"), function("f")]);
    assert_eq!(
        out.rejections,
        vec![Rejection::Function {
            namespace: "default".into(),
            function_id: "f".into(),
            owner: Some(a)
        }]
    );
    assert_eq!(
        reg.resolve_function("default", "f"),
        Resolution::Worker { owner: a, node: 1 }
    );
}

#[test]
fn functions_leaving_a_draining_node_are_moving_until_registered_again() {
    let mut reg = Registry::default();
    let a = connect(&mut reg, 1);
    register(&mut reg, a, vec![function("f")]);
    assert!(!reg.is_draining(1));
    reg.apply(&Command::NodeDraining {
        node: 1,
        cause: None,
    });
    assert!(reg.is_draining(1));
    reg.apply(&Command::WorkerDisconnected { worker: a });
    assert_eq!(reg.moving_from("default", "f"), Some(a));
    let b = connect(&mut reg, 2);
    register(&mut reg, b, vec![function("f")]);
    assert_eq!(reg.moving_from("default", "f"), None);
    reg.apply(&Command::NodeRestarted { node: 1 });
    assert!(!reg.is_draining(1), "a restarted node drains no more");
}

#[test]
fn a_worker_leaving_a_node_that_is_not_draining_is_not_moving() {
    let mut reg = Registry::default();
    let a = connect(&mut reg, 1);
    register(&mut reg, a, vec![function("f")]);
    reg.apply(&Command::WorkerDisconnected { worker: a });
    assert_eq!(reg.moving_from("default", "f"), None);
}

#[test]
fn a_providers_verdict_on_a_durable_binding_is_an_event_for_the_waiting_node() {
    let mut reg = Registry::default();
    let provider = connect(&mut reg, 1);
    register(&mut reg, provider, vec![trigger_type("picky")]);
    let durable = |id: &str| Command::DurableTriggerRegistered {
        id: id.into(),
        trigger_type: "picky".into(),
        function_id: "f".into(),
        config: json!({}),
        metadata: None,
        trigger_namespace: None,
    };
    reg.apply(&durable("t1"));
    let accepted = reg.apply(&Command::TriggerAccepted {
        provider,
        trigger_id: "t1".into(),
    });
    assert!(accepted.events.contains(&Event::TriggerVerdict {
        trigger_id: "t1".into(),
        error: None
    }));
    let stranger = connect(&mut reg, 2);
    let ignored = reg.apply(&Command::TriggerAccepted {
        provider: stranger,
        trigger_id: "t1".into(),
    });
    assert!(ignored.events.is_empty(), "only the provider's word counts");
    reg.apply(&durable("t2"));
    let refused = reg.apply(&Command::TriggerRefused {
        provider,
        trigger_id: "t2".into(),
        error_code: "nope".into(),
        error_message: "not today".into(),
    });
    assert!(refused.events.contains(&Event::TriggerVerdict {
        trigger_id: "t2".into(),
        error: Some(("nope".into(), "not today".into()))
    }));
}

#[test]
fn a_reattach_claim_is_an_event_for_the_node_that_closed_the_worker() {
    let mut reg = Registry::default();
    let (old, new) = (wid(1), wid(2));
    let out = reg.apply(&Command::ReattachClaim {
        previous: old,
        token_hash: "h".into(),
        successor: new,
        node: 3,
    });
    assert_eq!(
        out.events,
        vec![Event::Reattached {
            previous: old,
            token_hash: "h".into(),
            successor: new,
            node: 3
        }]
    );
}

#[test]
fn a_dead_owner_is_taken_over_silently() {
    let mut reg = Registry::default();
    let a = connect(&mut reg, 1);
    register(&mut reg, a, vec![function("f")]);
    reg.apply(&Command::WorkerDisconnected { worker: a });
    let b = connect(&mut reg, 2);
    let out = register(&mut reg, b, vec![function("f")]);
    assert!(out.rejections.is_empty());
}

#[test]
fn reserved_ids_are_refused_with_an_empty_owner() {
    let mut reg = Registry::default();
    let a = connect(&mut reg, 1);
    let out = register(
        &mut reg,
        a,
        vec![announce("orders", "a"), function("engine::anything")],
    );
    assert_eq!(
        out.rejections,
        vec![Rejection::Function {
            namespace: "orders".into(),
            function_id: "engine::anything".into(),
            owner: None
        }]
    );
    let b = connect(&mut reg, 2);
    let out = register(&mut reg, b, vec![function("engine::functions::list")]);
    assert_eq!(out.rejections.len(), 1);
    let out = register(&mut reg, b, vec![function("engine::queue::push")]);
    assert!(
        out.rejections.is_empty(),
        "engine::queue::* stays registrable in default"
    );
}

#[test]
fn a_held_name_rejects_the_announcement_and_nothing_behind_it_applies() {
    let mut reg = Registry::default();
    let a = connect(&mut reg, 1);
    let b = connect(&mut reg, 2);
    register(&mut reg, a, vec![announce("default", "svc")]);
    let out = register(&mut reg, b, vec![announce("default", "svc"), function("g")]);
    assert!(out.name_rejected);
    assert!(matches!(
        reg.resolve_function("default", "g"),
        Resolution::NotFound { .. }
    ));
    reg.check_invariants().unwrap();
}

#[test]
fn function_not_found_lists_other_namespaces() {
    let mut reg = Registry::default();
    let a = connect(&mut reg, 1);
    register(&mut reg, a, vec![announce("b-ns", "a"), function("f")]);
    let c = connect(&mut reg, 3);
    register(&mut reg, c, vec![announce("a-ns", "c"), function("f")]);
    assert_eq!(
        reg.resolve_function("default", "f"),
        Resolution::NotFound {
            elsewhere: vec!["a-ns".into(), "b-ns".into()]
        }
    );
}

#[test]
fn bindings_park_without_provider_and_activate_when_it_registers() {
    let mut reg = Registry::default();
    let consumer = connect(&mut reg, 1);
    let out = register(&mut reg, consumer, vec![trigger("t1", "cron")]);
    assert!(out
        .events
        .iter()
        .all(|e| !matches!(e, Event::Notify { .. })));
    let provider = connect(&mut reg, 2);
    let out = register(&mut reg, provider, vec![trigger_type("cron")]);
    assert!(out.events.iter().any(|e| matches!(e,
        Event::Notify { worker, notice: Notice::RegisterTrigger(t) } if *worker == provider && t.id == "t1")));
}

#[test]
fn consumer_disconnect_unregisters_at_the_provider() {
    let mut reg = Registry::default();
    let provider = connect(&mut reg, 2);
    register(&mut reg, provider, vec![trigger_type("cron")]);
    let consumer = connect(&mut reg, 1);
    register(&mut reg, consumer, vec![trigger("t1", "cron")]);
    let out = reg.apply(&Command::WorkerDisconnected { worker: consumer });
    let unregisters: Vec<_> = out
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Notify {
                    notice: Notice::UnregisterTrigger { .. },
                    ..
                }
            )
        })
        .collect();
    assert_eq!(unregisters.len(), 1);
    assert!(reg.trigger("t1").is_none());
}

#[test]
fn provider_reconnect_rebinds_parked_triggers_with_their_original_ids() {
    let mut reg = Registry::default();
    let consumer = connect(&mut reg, 1);
    let old = connect(&mut reg, 2);
    register(&mut reg, old, vec![trigger_type("cron")]);
    register(&mut reg, consumer, vec![trigger("t1", "cron")]);
    reg.apply(&Command::WorkerDisconnected { worker: old });
    assert!(reg.trigger("t1").is_some_and(|t| t.provider.is_none()));
    let new = connect(&mut reg, 3);
    let out = register(&mut reg, new, vec![trigger_type("cron")]);
    assert!(out.events.iter().any(|e| matches!(e,
        Event::Notify { worker, notice: Notice::RegisterTrigger(t) } if *worker == new && t.id == "t1")));
}

#[test]
fn a_namespaced_provider_takes_over_bindings_from_its_home_namespace() {
    let mut reg = Registry::default();
    let default_provider = connect(&mut reg, 1);
    register(&mut reg, default_provider, vec![trigger_type("hook")]);
    let consumer = connect(&mut reg, 2);
    register(
        &mut reg,
        consumer,
        vec![announce("orders", "c"), trigger("t1", "hook")],
    );
    let local = connect(&mut reg, 3);
    let out = register(
        &mut reg,
        local,
        vec![announce("orders", "p"), trigger_type("hook")],
    );
    assert!(out.events.iter().any(|e| matches!(e,
        Event::Notify { worker, notice: Notice::UnregisterTrigger { .. } } if *worker == default_provider)));
    assert!(out.events.iter().any(|e| matches!(e,
        Event::Notify { worker, notice: Notice::RegisterTrigger(_) } if *worker == local)));
}

#[test]
fn refusal_parks_the_binding_and_tells_the_registrant() {
    let mut reg = Registry::default();
    let provider = connect(&mut reg, 2);
    register(&mut reg, provider, vec![trigger_type("cron")]);
    let consumer = connect(&mut reg, 1);
    register(&mut reg, consumer, vec![trigger("t1", "cron")]);
    let out = reg.apply(&Command::TriggerRefused {
        provider,
        trigger_id: "t1".into(),
        error_code: "bad".into(),
        error_message: "no".into(),
    });
    assert!(out.events.iter().any(|e| matches!(e,
        Event::Notify { worker, notice: Notice::TriggerRefused { .. } } if *worker == consumer)));
    assert!(reg.trigger("t1").is_some_and(|t| t.provider.is_none()));
    let stranger = connect(&mut reg, 9);
    let out = reg.apply(&Command::TriggerRefused {
        provider: stranger,
        trigger_id: "t1".into(),
        error_code: "bad".into(),
        error_message: "no".into(),
    });
    assert!(out.events.is_empty(), "only the provider may refuse");
}

#[test]
fn a_legacy_service_is_recorded_under_its_id_and_leaves_with_its_worker() {
    let mut reg = Registry::default();
    let a = connect(&mut reg, 1);
    let service = |id: &str, name: Option<&str>| Registration::Service {
        id: id.into(),
        name: name.map(str::to_string),
        description: None,
        parent_service_id: Some("parent".into()),
    };
    let out = register(
        &mut reg,
        a,
        vec![
            service("billing", Some("")),
            service("audit", Some("Audit")),
        ],
    );
    assert!(out.rejections.is_empty());
    assert_eq!(
        reg.services["billing"].name, "billing",
        "empty name means the id"
    );
    assert_eq!(reg.services["audit"].name, "Audit");
    assert_eq!(
        reg.services["audit"].parent_service_id.as_deref(),
        Some("parent")
    );
    reg.apply(&Command::WorkerDisconnected { worker: a });
    assert!(reg.services.is_empty());
}

#[test]
fn node_restart_removes_its_workers() {
    let mut reg = Registry::default();
    let a = connect(&mut reg, 1);
    register(&mut reg, a, vec![function("f")]);
    reg.apply(&Command::NodeRestarted { node: 1 });
    assert_eq!(reg.workers().count(), 0);
    assert!(reg.function(&FunctionKey::new("default", "f")).is_none());
}

#[test]
fn builtin_discovery_bindings_are_live_at_once() {
    let mut reg = Registry::default();
    let a = connect(&mut reg, 1);
    register(
        &mut reg,
        a,
        vec![trigger("t1", reserved::WORKERS_AVAILABLE)],
    );
    assert_eq!(reg.builtin_bindings(reserved::WORKERS_AVAILABLE).count(), 1);
}

/// Names a gateway refuses: a bidi override, a NUL, a line break, too long, blank.
const BROKEN_NAMES: [&str; 5] = ["\u{202E}../../etc", "a\0b", "two\nlines", "", " "];

#[test]
fn a_name_breaking_the_rule_is_refused_in_apply_and_changes_nothing() {
    let long = "n".repeat(crate::protocol::names::MAX_NAME_CHARS + 1);
    let mut reg = Registry::default();
    let a = connect(&mut reg, 1);
    for broken in BROKEN_NAMES.iter().copied().chain([long.as_str()]) {
        let batches = vec![
            vec![announce(broken, "fine"), function("f")],
            vec![announce("default", broken), function("f")],
            vec![Registration::FixNamespace {
                namespace: broken.into(),
            }],
            vec![function("f"), {
                let mut t = trigger("t1", "cron");
                if let Registration::Trigger { namespace, .. } = &mut t {
                    *namespace = Some(broken.into());
                }
                t
            }],
        ];
        for items in batches {
            let before = reg.clone();
            let out = register(&mut reg, a, items.clone());
            assert_eq!(reg, before, "{items:?} changed the registry");
            assert_eq!(out.rejections.len(), 1, "{items:?}");
            assert!(
                matches!(&out.rejections[0], Rejection::InvalidName { message, .. }
                    if !message.contains('\u{202E}') && !message.contains('\0')),
                "{:?}",
                out.rejections
            );
        }
    }
    // The same batches with good names apply.
    let out = register(&mut reg, a, vec![announce("orders", "fine"), function("f")]);
    assert!(out.rejections.is_empty());
    assert!(reg.function(&FunctionKey::new("orders", "f")).is_some());
}

#[test]
fn a_durable_binding_whose_trigger_namespace_breaks_the_rule_is_refused_and_changes_nothing() {
    let long = "n".repeat(crate::protocol::names::MAX_NAME_CHARS + 1);
    let durable = |trigger_namespace: &str| Command::DurableTriggerRegistered {
        id: "t1".into(),
        trigger_type: "cron".into(),
        function_id: "f".into(),
        config: json!(null),
        metadata: None,
        trigger_namespace: Some(trigger_namespace.into()),
    };
    let mut reg = Registry::default();
    for broken in BROKEN_NAMES.iter().copied().chain([long.as_str()]) {
        let before = reg.clone();
        let out = reg.apply(&durable(broken));
        assert_eq!(
            reg, before,
            "trigger_namespace {broken:?} changed the registry"
        );
        let refusal = out.refusal.expect("a refusal");
        assert!(refusal.contains("trigger_namespace"), "{refusal}");
        assert!(
            !refusal.contains('\u{202E}') && !refusal.contains('\0'),
            "{refusal:?}"
        );
    }
    // A good one is stored.
    let out = reg.apply(&durable("orders"));
    assert_eq!(out.refusal, None);
    assert_eq!(reg.triggers().count(), 1);
}

/// Whether every namespace and worker name the registry stores keeps the name rule.
fn stored_names_keep_the_rule(reg: &Registry) -> Result<(), String> {
    let ok =
        |name: &str| !name.trim().is_empty() && crate::protocol::names::check_name(name).is_ok();
    for w in reg.workers() {
        let name = w.meta.as_ref().and_then(|m| m.name.as_deref());
        for stored in w.namespace.as_deref().into_iter().chain(name) {
            if !ok(stored) {
                return Err(format!("worker {} stores {stored:?}", w.id));
            }
        }
    }
    for t in reg.triggers() {
        for stored in [Some(&t.target_namespace), t.trigger_namespace.as_ref()]
            .into_iter()
            .flatten()
        {
            if !ok(stored) {
                return Err(format!("trigger {} stores {stored:?}", t.id));
            }
        }
    }
    Ok(())
}

fn arb_command() -> impl Strategy<Value = Command> {
    let worker = (0u8..5).prop_map(wid);
    let name = prop_oneof![4 => prop_oneof![Just("a"), Just("b")], 1 => prop::sample::select(&BROKEN_NAMES[..])];
    let ns = prop_oneof![
        4 => prop_oneof![Just("default"), Just("orders")],
        1 => prop::sample::select(&BROKEN_NAMES[..])
    ];
    let id = prop_oneof![Just("f"), Just("g"), Just("engine::x")];
    let ttype = prop_oneof![
        Just("cron"),
        Just("hook"),
        Just(reserved::WORKERS_AVAILABLE)
    ];
    let tid = prop_oneof![Just("t1"), Just("t2"), Just("t3")];
    let registration = prop_oneof![
        (ns.clone(), name).prop_map(|(ns, name)| announce(ns, name)),
        ns.clone().prop_map(|ns| Registration::FixNamespace {
            namespace: ns.into()
        }),
        id.clone().prop_map(function),
        id.prop_map(|id| Registration::UnregisterFunction { id: id.into() }),
        ttype.clone().prop_map(trigger_type),
        ttype
            .clone()
            .prop_map(|t| Registration::UnregisterTriggerType {
                namespace: None,
                id: t.into()
            }),
        (tid.clone(), ttype.clone()).prop_map(|(i, t)| trigger(i, t)),
        (tid.clone(), ttype.clone(), ns.clone()).prop_map(|(i, t, ns)| {
            let mut t = trigger(i, t);
            if let Registration::Trigger { namespace, .. } = &mut t {
                *namespace = Some(ns.into());
            }
            t
        }),
        tid.clone()
            .prop_map(|i| Registration::UnregisterTrigger { id: i.into() }),
    ];
    prop_oneof![
        worker.clone().prop_map(|w| Command::WorkerConnected {
            worker: w,
            node: 1,
            token_hash: String::new(),
            at_ms: 0,
            ip_address: None
        }),
        worker
            .clone()
            .prop_map(|w| Command::WorkerDisconnected { worker: w }),
        (worker.clone(), prop::collection::vec(registration, 1..4))
            .prop_map(|(w, items)| Command::Registrations { worker: w, items }),
        (worker.clone(), tid.clone()).prop_map(|(w, t)| Command::TriggerRefused {
            provider: w,
            trigger_id: t.into(),
            error_code: "e".into(),
            error_message: "m".into()
        }),
        (tid.clone(), ttype, prop::option::of(ns)).prop_map(|(i, t, ns)| {
            Command::DurableTriggerRegistered {
                id: i.into(),
                trigger_type: t.into(),
                function_id: "f".into(),
                config: json!(null),
                metadata: None,
                trigger_namespace: ns.map(String::from),
            }
        }),
        tid.clone()
            .prop_map(|i| Command::TriggerRemoved { id: i.into() }),
        Just(Command::NodeRestarted { node: 1 }),
        Just(Command::NodeDraining {
            node: 1,
            cause: None
        }),
        (0u64..3).prop_map(|id| Command::NodeDraining {
            node: 1,
            cause: Some(crate::registry::DrainCause::Removal { id })
        }),
        prop::option::of(0u64..3).prop_map(|removal| Command::NodeUndrained { node: 1, removal }),
        (worker.clone(), tid).prop_map(|(w, t)| Command::TriggerAccepted {
            provider: w,
            trigger_id: t.into()
        }),
    ]
}

proptest! {
    #[test]
    fn any_command_sequence_keeps_every_index_consistent(commands in prop::collection::vec(arb_command(), 0..60)) {
        let mut reg = Registry::default();
        for command in &commands {
            reg.apply(command);
            prop_assert_eq!(reg.check_invariants(), Ok(()));
        }
    }

    #[test]
    fn no_command_sequence_stores_a_name_that_breaks_the_rule(commands in prop::collection::vec(arb_command(), 0..60)) {
        let mut reg = Registry::default();
        for command in &commands {
            reg.apply(command);
            prop_assert_eq!(stored_names_keep_the_rule(&reg), Ok(()));
        }
    }

    #[test]
    fn replaying_the_same_log_gives_the_same_state_and_outcomes(commands in prop::collection::vec(arb_command(), 0..60)) {
        let mut first = Registry::default();
        let mut second = Registry::default();
        for command in &commands {
            prop_assert_eq!(first.apply(command), second.apply(command));
        }
        prop_assert_eq!(first, second);
    }

    #[test]
    fn snapshot_then_restore_is_identity(commands in prop::collection::vec(arb_command(), 0..60)) {
        let mut reg = Registry::default();
        for command in &commands {
            reg.apply(command);
        }
        let bytes = serde_json::to_vec(&reg).unwrap();
        let restored: Registry = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(reg, restored);
    }

    #[test]
    fn no_notice_is_addressed_to_a_dead_worker(commands in prop::collection::vec(arb_command(), 0..60)) {
        let mut reg = Registry::default();
        for command in &commands {
            let out = reg.apply(command);
            for event in &out.events {
                if let Event::Notify { worker, .. } = event {
                    prop_assert!(reg.worker(*worker).is_some(), "notice to dead worker {}", worker);
                }
            }
        }
    }
}
