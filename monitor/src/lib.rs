//! credwatch: a runtime monitor that stops AI agents from reusing credentials.
//!
//! Data flows one way: [`sensors`] (kernel programs and their decoded events) feed the engine,
//! whose findings go to actions and exports. [`doctor`] probes what the running kernel allows.

pub mod actions;
pub mod api;
pub mod catalogue;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod engine;
pub mod error_chain;
pub mod event;
pub mod export;
pub mod fingerprint;
#[cfg(test)]
mod fuzz;
pub mod procfs;
pub mod secrets;
pub mod sensors;
