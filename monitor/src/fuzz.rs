//! Property-based fuzzing of every parser that takes outside input: ring buffer records, the
//! config file, task API bodies and routes, recordings for `replay`, the catalogue's patterns.
//! Each target runs for a bounded time, `CREDWATCH_FUZZ_SECONDS` (2 by default in the test
//! suite; `cargo xtask fuzz --seconds N` sets it): no input may panic, errors must name what is
//! wrong, a secret in a token body is never quoted, and the engine is deterministic on any
//! stream. A crash found becomes a named regression test below.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};

use crate::{
    api::{
        json::{parse, Echo},
        routes::route,
    },
    catalogue::pattern::{ExcludePattern, NamePattern, PathPattern},
    daemon::control::{TaskRequest, TokenRequest},
    engine::{Engine, EngineConfig, Input},
    sensors::decode::decode,
};

const CASES_PER_BATCH: u32 = 256;

fn budget() -> Duration {
    let seconds = std::env::var("CREDWATCH_FUZZ_SECONDS").ok().and_then(|text| text.parse().ok()).unwrap_or(2.0);
    Duration::from_secs_f64(seconds)
}

/// Runs `property` on inputs from `strategy` until the budget is spent; a failing input is shrunk
/// and reported.
fn fuzz<S: Strategy>(target: &str, strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let deadline = Instant::now() + budget();
    let inputs = std::cell::Cell::new(0u64);
    let counted = |value| {
        inputs.set(inputs.get() + 1);
        property(value)
    };
    while Instant::now() < deadline {
        // A fresh runner, and so fresh random inputs, for every batch.
        let mut runner = TestRunner::new(Config { cases: CASES_PER_BATCH, failure_persistence: None, ..Config::default() });
        if let Err(failure) = runner.run(&strategy, counted) {
            panic!("fuzz {target}: {failure}");
        }
    }
    eprintln!("fuzz {target}: {} inputs in {:?}, none failed", inputs.get(), budget());
}

/// Bytes shaped like a ring buffer record: a header of a known or unknown kind, then anything.
fn record() -> impl Strategy<Value = Vec<u8>> {
    (0u32..10, any::<u32>(), prop::collection::vec(any::<u8>(), 0..1600)).prop_map(|(kind, flags, tail)| {
        let mut bytes = kind.to_ne_bytes().to_vec();
        bytes.extend(11u32.to_ne_bytes());
        bytes.extend(11u32.to_ne_bytes());
        bytes.extend(flags.to_ne_bytes());
        bytes.extend(1_000u64.to_ne_bytes());
        bytes.extend(5_000_000_000u64.to_ne_bytes());
        bytes.extend(tail);
        bytes
    })
}

#[test]
fn ring_buffer_records() {
    fuzz("ring buffer records", prop_oneof![record(), prop::collection::vec(any::<u8>(), 0..64)], |bytes| {
        // A layout mismatch is an error, never a panic or garbage accepted as a short record.
        if let Err(error) = decode(&bytes) {
            prop_assert!(!error.to_string().is_empty());
        }
        Ok(())
    });
}

/// Text made of TOML's syntax and the config's own keys, so that most inputs parse far enough to
/// reach the validation of values.
fn config_text() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("mode"), Just("state_dir"), Just("key_file"), Just("[catalogue]"), Just("files"), Just("homes"),
        Just("[actions]"), Just("cross_task_reuse"), Just("[maps]"), Just("task_of"), Just("[baseline]"),
        Just("learn_for"), Just("[decoys]"), Just("ignore"), Just("[metrics]"), Just("listen"), Just("[audit]"),
        Just("max_bytes"), Just("[alerts]"), Just("alertmanager_url"), Just("[revoke]"), Just("url"), Just("="),
        Just("\n"), Just("\""), Just("["), Just("]"), Just(","), Just("~/"), Just("/"), Just("*"), Just("0"),
        Just("4194305"), Just("\"kill_process\""), Just("\"1h\""), Just("\"http://127.0.0.1:9\""), Just("true"),
    ];
    (prop::collection::vec(word, 0..40), "[ -~\n]{0,20}")
        .prop_map(|(words, noise)| format!("{}{noise}", words.join(" ")))
}

#[test]
fn config_files() {
    fuzz("config files", config_text(), |text| {
        if let Err(error) = crate::config::Config::parse(&text, Path::new("credwatch.toml")) {
            let message = error.to_string();
            prop_assert!(message.starts_with("credwatch.toml"), "an error names the file: {message}");
        }
        Ok(())
    });
}

/// JSON-ish bytes, with a marker value planted where a token's value would be.
fn json_body() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("\"cwfuzz_0123456789\"".to_owned()),
        Just("[\"cwfuzz_0123456789\"]".to_owned()),
        Just("{\"cwfuzz_0123456789\": 1}".to_owned()),
        "[ -~]{0,12}".prop_map(|text| text),
    ];
    let key = prop_oneof![Just("id"), Just("task"), Just("label"), Just("value"), Just("decoy"), Just("root_pid"), Just("allow"), Just("ttl"), Just("cwfuzz_0123456789")];
    prop::collection::vec((key, value), 0..6).prop_map(|pairs| {
        let fields: Vec<String> = pairs.iter().map(|(key, value)| format!("\"{key}\": {value}")).collect();
        format!("{{{}}}", fields.join(", "))
    })
}

#[test]
fn task_api_bodies() {
    fuzz("task API bodies", prop_oneof![json_body(), "[ -~]{0,80}".prop_map(|text| text)], |body| {
        let _ = parse::<TaskRequest>(body.as_bytes(), Echo::Allowed);
        if let Err(rejection) = parse::<TokenRequest>(body.as_bytes(), Echo::Never) {
            let quoted = rejection.message.contains("cwfuzz") || rejection.field.as_deref().is_some_and(|field| field.contains("cwfuzz"));
            prop_assert!(!quoted, "a token body's error quotes its input: {}", rejection.message);
        }
        Ok(())
    });
}

#[test]
fn task_api_routes() {
    let method = prop_oneof![Just(hyper::Method::GET), Just(hyper::Method::POST), Just(hyper::Method::DELETE), Just(hyper::Method::PUT)];
    let path = "(/[a-z0-9%.]{0,10}){0,5}";
    let query = prop::option::of("[a-z=&0-9%]{0,20}");
    fuzz("task API routes", (method, path, query), |(method, path, query)| {
        let _ = route(&method, &path, query.as_deref());
        Ok(())
    });
}

#[test]
fn recordings() {
    let line = prop_oneof![
        "[ -~]{0,120}".prop_map(|text| text),
        Just(r#"{"input":"tick","at_ns":1}"#.to_owned()),
        (0u64..1_000, 1u32..50).prop_map(|(at, pid)| format!(
            r#"{{"input":"event","ktime_ns":{at},"process":{{"tgid":{pid},"start_time":{at}}},"thread":{pid},"truncated":false,"read_failed":false,"kind":"fork","child":{{"tgid":{},"start_time":{at}}}}}"#,
            pid + 1
        )),
        (0u64..1_000, 1u32..50).prop_map(|(at, pid)| format!(
            r#"{{"input":"task_started","at_ns":{at},"task":{{"id":"t{}","owner":"o","roots":[{pid}],"granted":[{{"type":"file","secret":1}}]}}}}"#,
            pid % 3
        )),
        (0u64..1_000, 1u32..50).prop_map(|(at, pid)| format!(
            r#"{{"input":"event","ktime_ns":{at},"process":{{"tgid":{pid},"start_time":0}},"thread":{pid},"truncated":false,"read_failed":false,"kind":"secret_open","secret":1,"inode":{{"dev":1,"ino":2}},"syscall":"openat","path":"p","fd":3}}"#
        )),
        (0u64..1_000, 0u32..3).prop_map(|(at, task)| format!(r#"{{"input":"task_ended","at_ns":{at},"id":"t{task}"}}"#)),
    ];
    fuzz("recordings", prop::collection::vec(line, 0..40), |lines| {
        let inputs: Vec<Input> = lines.iter().filter_map(|line| serde_json::from_str(line).ok()).collect();
        // The same stream twice gives the same findings and effects: replay is exact.
        let outcomes = |inputs: &[Input]| {
            let mut engine = Engine::new(EngineConfig::default());
            inputs.iter().map(|input| engine.apply(input)).collect::<Vec<_>>()
        };
        prop_assert_eq!(outcomes(&inputs), outcomes(&inputs));
        Ok(())
    });
}

#[test]
fn catalogue_patterns() {
    fuzz("catalogue patterns", "[~/a-z.*?\\[\\]!_-]{0,30}", |text| {
        if let Ok(pattern) = PathPattern::parse(&text) {
            prop_assert_eq!(pattern.to_string(), text.clone());
        }
        let _ = NamePattern::parse(&text);
        let _ = ExcludePattern::parse(&text);
        Ok(())
    });
}
