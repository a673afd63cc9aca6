//! The compose file, run.
