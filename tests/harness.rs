//! The test harness's own checks (tests/common): the leak scan's forms, the panic check, the
//! metrics reader and the daemon guard. Here once, not in every test binary that uses the harness.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use base64::{
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
    Engine as _,
};
use common::daemon::{leaks_in, panic_line, series_value, Process};

/// Shaped like an AWS secret key: `+` and `/` in it, and in its base64.
const VALUE: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLE?>~";

#[test]
fn a_value_is_found_in_every_form_and_only_the_form_is_named() {
    assert_eq!(leaks_in("", VALUE), None);
    assert_eq!(leaks_in(&format!("token={VALUE}\n"), VALUE), Some("plain"));
    let hex: String = VALUE.bytes().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(leaks_in(&format!("bytes {hex}."), VALUE), Some("hex"));
    assert_eq!(leaks_in(&format!("BYTES {}.", hex.to_uppercase()), VALUE), Some("hex"));
    let url = "wJalrXUtnFEMI%2FK7MDENG%2BbPxRfiCYEXAMPLE%3F%3E~";
    assert_eq!(leaks_in(&format!("GET /?key={url}&x=1"), VALUE), Some("URL-encoded"));
    let lowercase = "wJalrXUtnFEMI%2fK7MDENG%2bbPxRfiCYEXAMPLE%3f%3e~";
    assert_eq!(leaks_in(&format!("GET /?key={lowercase}"), VALUE), Some("URL-encoded"));
    assert_eq!(leaks_in(&format!("cut: ..{}..", &VALUE[9..21]), VALUE), Some("a 12-character slice"));
    assert_eq!(leaks_in(&format!("cut: ..{}..", &VALUE[9..20]), VALUE), None, "11 characters");
    assert_eq!(leaks_in(&common::planted_value(), VALUE), None);
}

#[test]
fn base64_is_found_in_both_alphabets_padded_or_not_at_every_offset() {
    for (engine, form) in [
        (STANDARD, "base64"),
        (STANDARD_NO_PAD, "base64"),
        (URL_SAFE, "URL-safe base64"),
        (URL_SAFE_NO_PAD, "URL-safe base64"),
    ] {
        for before in ["", "u", "us", "user:", "user:pw"] {
            for after in ["", "!", "!!", "\n!!!"] {
                let encoded = engine.encode(format!("{before}{VALUE}{after}"));
                let text = format!("Authorization: Basic {encoded}\n");
                assert_eq!(leaks_in(&text, VALUE), Some(form), "{before:?} before, {after:?} after: {text}");
            }
        }
    }
    let other = STANDARD.encode(common::planted_value());
    assert_eq!(leaks_in(&other, VALUE), None);
}

#[test]
fn a_panic_anywhere_in_the_daemon_is_found() {
    let log = |lines: &[&str]| lines.iter().map(|&line| line.to_owned()).collect::<Vec<_>>();
    let quiet = log(&["2026-01-01T00:00:00Z  WARN monitor::daemon::registry: the registry writer panicked"]);
    assert_eq!(panic_line(&quiet), None);
    // As Rust 1.95 prints them (with the thread's id), and as earlier ones did (without).
    let panicked = log(&[
        "2026-01-01T00:00:00Z  INFO monitor::api: task API listening",
        "thread 'tokio-runtime-worker' (4242) panicked at monitor/src/api/server.rs:10:5:",
        "index out of bounds",
    ]);
    assert_eq!(panic_line(&panicked), Some(panicked[1].as_str()));
    let earlier = log(&["thread '<unnamed>' panicked at monitor/src/export/sink.rs:1:1:", "boom"]);
    assert_eq!(panic_line(&earlier), Some(earlier[0].as_str()));
}

const METRICS: &str = "# HELP credwatch_sensor_info Programs attached.\n\
    # TYPE credwatch_sensor_info gauge\n\
    credwatch_sensor_info{hook=\"tp_btf/sched_switch\",tier=\"tracepoint\"} 0\n\
    credwatch_sensor_info{hook=\"raw_tracepoint/sys_exit\",tier=\"tracepoint\"} 1\n\
    credwatch_sink_dropped_total{sink=\"audit\"} 0\n";

#[test]
fn a_series_is_read_and_zero_only_when_it_says_zero() {
    assert_eq!(series_value(METRICS, "credwatch_sensor_info{hook=\"tp_btf/sched_switch\","), 0);
    assert_eq!(series_value(METRICS, "credwatch_sensor_info{hook=\"raw_tracepoint/sys_exit\","), 1);
    assert_eq!(series_value(METRICS, "credwatch_sink_dropped_total{sink=\"audit\"}"), 0);
}

#[test]
#[should_panic(expected = "tp_btf/mmap_lock_start_locking\\\",\" in /metrics; there are:\n\
                           credwatch_sensor_info{hook=\"tp_btf/sched_switch\",tier=\"tracepoint\"}\n\
                           credwatch_sensor_info{hook=\"raw_tracepoint/sys_exit\",tier=\"tracepoint\"}")]
fn a_missing_series_names_those_of_its_metric() {
    series_value(METRICS, "credwatch_sensor_info{hook=\"tp_btf/mmap_lock_start_locking\",");
}

#[test]
#[should_panic(expected = "there are:\ncredwatch_sensor_info\ncredwatch_sink_dropped_total")]
fn a_missing_metric_names_every_metric() {
    series_value(METRICS, "credwatch_sink_sent_total");
}

#[test]
fn a_process_dropped_while_it_runs_is_killed_and_reaped() {
    let mut child = Command::new("sleep").arg("60").stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as i32;
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || BufReader::new(stderr).lines().for_each(drop));
    drop(Process { child, stderr });
    // SAFETY: signal 0 only checks that the process exists; a zombie would still exist.
    assert_eq!(unsafe { libc::kill(pid, 0) }, -1, "process {pid} outlived its guard");
}
