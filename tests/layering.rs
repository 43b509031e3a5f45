//! The daemon's modules depend downwards only: shared model ← engine ← kernel ← daemon ←
//! api/export ← cli. A `use crate::…` (or a `crate::…` path) from a module to one in a higher
//! layer fails this test, naming the file. Test modules (`#[cfg(test)]` onwards) may reach
//! anywhere. The engine and the event model are a crate of their own (`monitor-engine`,
//! re-exported as `crate::engine` and `crate::event`): the compiler keeps them from reaching up,
//! and this test keeps their dependencies to plain data crates.

use std::{collections::BTreeSet, path::Path};

/// Top-level modules of `monitor/src` (and the engine crate's re-exports), lowest layer first. Modules of one layer may use each
/// other.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "shared model",
        &["event", "fingerprint", "procfs", "clock", "error_chain", "catalogue"],
    ),
    ("engine", &["engine"]),
    ("kernel", &["sensors", "doctor", "secrets", "actions"]),
    ("daemon", &["daemon"]),
    ("api and export", &["api", "export"]),
    ("cli", &["cli", "config", "fuzz"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// Code without comments, up to the first test module.
fn code(source: &str) -> String {
    let source = source.split("#[cfg(test)]").next().unwrap_or_default();
    source
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file names through `crate::`, including each item of a
/// `use crate::{a::…, b::{…}}` group.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (start, _) in code.match_indices("crate::") {
        let rest = &code[start + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.extend(first_name(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.extend(first_name(&item));
        } else {
            found.extend(first_name(rest));
        }
    }
    found
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
        for used in crate_references(&code(&std::fs::read_to_string(file).unwrap())) {
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
    let found: Vec<_> = crate_references(&code(source)).into_iter().collect();
    assert_eq!(found, ["cli", "daemon", "engine"]);
}

/// What the engine may depend on: the kernel's shared types and plain data crates, nothing that
/// does I/O, talks to the kernel or runs tasks.
const ENGINE_DEPENDENCIES: &[&str] = &["monitor-common", "serde", "serde_json", "thiserror", "zeroize"];

#[test]
fn the_engine_crate_depends_only_on_plain_data_crates() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitor-engine/Cargo.toml");
    let manifest: toml::Table = std::fs::read_to_string(&manifest).unwrap().parse().unwrap();
    for section in ["dependencies", "build-dependencies"] {
        let names: Vec<&String> = manifest.get(section).and_then(toml::Value::as_table).map(|table| table.keys().collect()).unwrap_or_default();
        let foreign: Vec<_> = names.iter().filter(|name| !ENGINE_DEPENDENCIES.contains(&name.as_str())).collect();
        assert!(foreign.is_empty(), "monitor-engine's {section} name crates the engine may not use: {foreign:?}");
    }
}
