//! The daemon's modules depend downwards only: shared model ← engine ← kernel ← daemon ←
//! api/export ← cli. A `use crate::…` (or a `crate::…` path) from a module to one in a higher
//! layer fails this test, naming the file, and so does a `super::` chain that leaves the file's
//! module for one. Items marked `#[cfg(test)]` may reach anywhere. The engine and the event
//! model are a crate of their own (`monitor-engine`, re-exported as `crate::engine` and
//! `crate::event`): the compiler keeps them from reaching up, and this test keeps their
//! dependency tree free of crates that do I/O or talk to the kernel.

use std::{collections::BTreeSet, path::Path};

/// Top-level modules of `monitor/src` (and the engine crate's re-exports), lowest layer first.
/// Modules of one layer may use each other; the kernel layer is ordered within: `doctor` and
/// `actions` use `sensors`, never the other way round.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "shared model",
        &["event", "fingerprint", "procfs", "clock", "error_chain", "catalogue"],
    ),
    ("engine", &["engine"]),
    ("kernel", &["sensors", "secrets"]),
    ("kernel checks and actions", &["doctor", "actions", "egress"]),
    ("daemon", &["daemon"]),
    ("api and export", &["api", "export"]),
    ("cli", &["cli", "config", "fuzz"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// Code without comments and without the items marked `#[cfg(test)]` (test modules and helpers
/// may reach anywhere); what follows a test module is still code.
fn code(source: &str) -> String {
    let source: String = source
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = source.as_str();
    while let Some(start) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..start]);
        rest = skip_item(&rest[start + "#[cfg(test)]".len()..]);
    }
    out.push_str(rest);
    out
}

/// What follows the item at the start of `source`: up to its `;` or its matching `}`, braces in
/// string and character literals aside.
fn skip_item(source: &str) -> &str {
    let (mut depth, mut chars) = (0, source.char_indices());
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => {
                let mut escaped = false;
                for (_, c) in chars.by_ref() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
            }
            '\'' if source[at..].starts_with("'{'") || source[at..].starts_with("'}'") => {
                chars.nth(1);
            }
            ';' if depth == 0 => return &source[at + 1..],
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &source[at + 1..];
                }
            }
            _ => {}
        }
    }
    ""
}

/// The top-level modules a file names through `crate::`, including each item of a
/// `use crate::{a::…, b::{…}}` group, and through as many `super::` as lead out of the file's
/// own module (`depth`: 1 for `daemon/mod.rs`, 2 for `daemon/tasks.rs`), in groups too.
fn crate_references(code: &str, depth: usize) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (start, _) in code.match_indices("crate::") {
        resolve(&code[start + "crate::".len()..], 0, &mut found);
    }
    for (start, _) in code.match_indices("super::") {
        // Each chain once, from its first `super::`.
        let before = code[..start].trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
        if !before.ends_with("::") {
            resolve(&code[start..], depth, &mut found);
        }
    }
    found
}

/// Follows `path`, `above` modules below the crate root: each `super::` climbs one, a group is
/// followed item by item, and a name reached at the root is a top-level module.
fn resolve(path: &str, mut above: usize, found: &mut BTreeSet<String>) {
    let mut path = path.trim_start();
    while let Some(rest) = path.strip_prefix("super::") {
        path = rest.trim_start();
        above = above.saturating_sub(1);
    }
    if let Some(group) = path.strip_prefix('{') {
        for item in group_items(group) {
            resolve(item, above, found);
        }
    } else if above == 0 {
        found.extend(first_name(path));
    }
}

/// The top-level items of a `{…}` group, given what follows its `{`.
fn group_items(group: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0, 0, Vec::new());
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..at]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

fn first_name(path: &str) -> Option<String> {
    let name: String = path
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let module = relative
            .iter()
            .next()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs");
        if module == "main" || module == "lib" {
            continue;
        }
        let own = layer_of(module)
            .unwrap_or_else(|| panic!("{}: module {module} is in no layer", relative.display()));
        // `a.rs` and `a/mod.rs` are one module deep, `a/b.rs` two.
        let depth = relative.components().count() - usize::from(relative.ends_with("mod.rs"));
        for used in crate_references(&code(&std::fs::read_to_string(file).unwrap()), depth) {
            let layer = layer_of(&used)
                .unwrap_or_else(|| panic!("{}: crate::{used} is in no layer", relative.display()));
            if layer > own {
                violations.push(format!(
                    "{}: {module} ({}) uses crate::{used} ({})",
                    relative.display(),
                    LAYERS[own].0,
                    LAYERS[layer].0
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "modules reaching up a layer:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_groups_and_paths_and_skips_comments_and_tests() {
    let source = "use crate::{engine::Engine, daemon::{a, b}};\nfn f() { crate::cli::run(); }\n\
                  // crate::config is named in a comment\n#[cfg(test)]\nmod tests { use crate::api; }";
    let found: Vec<_> = crate_references(&code(source), 1).into_iter().collect();
    assert_eq!(found, ["cli", "daemon", "engine"]);
}

#[test]
fn the_checker_cannot_be_walked_around() {
    // Code after a test module is code.
    let after_tests = "#[cfg(test)]\nmod tests { use crate::api; }\nfn f() { crate::cli::run(); }\n\
                       #[cfg(test)]\nfn helper() { crate::export::x(); }\nuse crate::daemon;";
    let found: Vec<_> = crate_references(&code(after_tests), 1).into_iter().collect();
    assert_eq!(found, ["cli", "daemon"]);
    // Braces in a test item's literals do not end it early.
    let literals = "#[cfg(test)]\nfn t() { let _ = (\"}\", '}', \"\\\"}\"); crate::api::x(); }\nuse crate::cli;";
    let found: Vec<_> = crate_references(&code(literals), 1).into_iter().collect();
    assert_eq!(found, ["cli"]);
    // `super::` chains that leave the file's module reach the crate root; those that stay within
    // it do not.
    let supers = "use super::super::cli::run;\nuse super::{sibling, super::api::x};\nfn f() { super::local(); }";
    let found: Vec<_> = crate_references(&code(supers), 2).into_iter().collect();
    assert_eq!(found, ["api", "cli"], "from daemon/tasks.rs");
    let found: Vec<_> = crate_references(&code("fn f() { super::daemon::x(); }"), 1).into_iter().collect();
    assert_eq!(found, ["daemon"], "from a top-level module, super:: is the crate");
    // Within the kernel layer, sensors may not use doctor.
    assert!(layer_of("sensors") < layer_of("doctor"));
}

/// What the engine may depend on directly: the kernel's shared types (without their `user`
/// side, which brings aya) and plain data crates.
const ENGINE_DEPENDENCIES: &[&str] = &["monitor-common", "serde", "serde_json", "thiserror", "zeroize"];

/// Crates that do I/O, talk to the kernel or run tasks: none may be anywhere in the engine's
/// dependency tree.
const NOT_IN_THE_ENGINE: &[&str] =
    &["aya", "aya-obj", "libc", "tokio", "mio", "hyper", "nix", "rustix", "socket2", "inotify", "prometheus", "tracing"];

#[test]
fn the_engine_crate_depends_only_on_plain_data_crates() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitor-engine/Cargo.toml");
    let manifest: toml::Table = std::fs::read_to_string(&manifest).unwrap().parse().unwrap();
    assert!(manifest.get("target").is_none(), "no target-specific dependencies in monitor-engine");
    for section in ["dependencies", "build-dependencies"] {
        let Some(table) = manifest.get(section).and_then(toml::Value::as_table) else { continue };
        let foreign: Vec<_> = table.keys().filter(|name| !ENGINE_DEPENDENCIES.contains(&name.as_str())).collect();
        assert!(foreign.is_empty(), "monitor-engine's {section} name crates the engine may not use: {foreign:?}");
    }
    // The whole tree, features resolved for the engine alone, as cargo builds it.
    let tree = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", "monitor-engine", "-e", "normal", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree");
    assert!(tree.status.success(), "cargo tree: {}", String::from_utf8_lossy(&tree.stderr));
    let tree = String::from_utf8(tree.stdout).unwrap();
    let crates: BTreeSet<&str> = tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(crates.contains("monitor-common"), "the tree was read: {crates:?}");
    let foreign: Vec<_> = NOT_IN_THE_ENGINE.iter().filter(|name| crates.contains(*name)).collect();
    assert!(foreign.is_empty(), "the engine's dependency tree holds {foreign:?}");
}
