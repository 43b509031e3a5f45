//! Secrets as the daemon finds them on the host: files resolved to inodes and kept current
//! ([`files`]), and secret-looking variables in a process's environment ([`environ`]).

pub mod decoys;
pub mod environ;
pub mod files;
pub mod http;
pub mod tokens;
mod walk;
