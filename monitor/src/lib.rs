//! credwatch: a runtime monitor that stops AI agents from reusing credentials.
//!
//! Data flows one way: [`sensors`] (kernel programs and their decoded events) feed the engine,
//! whose findings go to actions and exports. [`doctor`] probes what the running kernel allows.
//! The engine and the event model are the `monitor-engine` crate, re-exported here under their
//! module names: the compiler keeps them free of the layers above.

pub mod actions;
pub mod api;
pub mod catalogue;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod egress;
pub use monitor_engine as engine;
pub mod error_chain;
pub use monitor_engine::event;
pub mod export;
pub mod fingerprint;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod procfs;
pub mod secrets;
pub mod sensors;
