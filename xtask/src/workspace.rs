//! Where the workspace is and which cargo drives it.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ sits in the workspace root")
}

/// The cargo that runs xtask (`cargo run` sets CARGO), so nested builds use the same toolchain.
pub fn cargo_program() -> PathBuf {
    env::var_os("CARGO").map_or_else(|| PathBuf::from(env!("CARGO")), PathBuf::from)
}

/// `cargo` run from the workspace root, whatever directory xtask was started from.
pub fn cargo() -> Command {
    let mut cargo = Command::new(cargo_program());
    cargo.current_dir(root());
    cargo
}

/// Where cargo puts build outputs: `CARGO_TARGET_DIR` (relative to where cargo was started, i.e.
/// the current directory) or `target/` in the workspace root.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => env::current_dir().unwrap_or_default().join(dir),
        None => root().join("target"),
    }
}
