//! Ids the engine itself serves. Workers may not register these, so that a built-in is
//! never silently shadowed (the reference engine lets that happen; quorum refuses it).

/// Built-in functions, all in namespace `default`.
pub const BUILTIN_FUNCTIONS: &[&str] = &[
    "engine::workers::register",
    "engine::workers::list",
    "engine::workers::info",
    "engine::functions::list",
    "engine::functions::info",
    "engine::trigger-types::list",
    "engine::triggers::list",
    "engine::triggers::info",
    "engine::registered-triggers::list",
    "engine::registered-triggers::info",
    "engine::register_trigger",
    "engine::unregister_trigger",
    "engine::channels::create",
];

/// Built-in trigger type fired on worker connect, announce and disconnect.
pub const WORKERS_AVAILABLE: &str = "engine::workers-available";
/// Built-in trigger type fired when the set of function ids changes.
pub const FUNCTIONS_AVAILABLE: &str = "engine::functions-available";
/// Every built-in trigger type, all in namespace `default`.
pub const BUILTIN_TRIGGER_TYPES: &[(&str, &str)] = &[
    (
        WORKERS_AVAILABLE,
        "Fires when a worker connects, announces itself or disconnects",
    ),
    (
        FUNCTIONS_AVAILABLE,
        "Fires when the set of registered function ids changes",
    ),
];

/// Whether `id` in `default` is a function the engine serves itself.
pub fn is_builtin_function(id: &str) -> bool {
    BUILTIN_FUNCTIONS.contains(&id)
}

/// Whether the id belongs to the engine's reserved `engine::` family.
pub fn is_engine_id(id: &str) -> bool {
    id.starts_with("engine::")
}
