//! Engine throughput: inputs per second on one core, replaying a generated stream (see
//! `stream.rs`), and the findings it yields per second. Run by `cargo xtask bench`, or alone:
//!
//! ```sh
//! cargo bench -p monitor --bench engine -- [--events N] [--runs N]
//! ```
//!
//! Prints one `run events=… findings=… seconds=…` line per run (a fresh engine each time), which
//! the xtask reads. Only `Engine::apply` is timed; the stream is generated between chunks.

mod stream;

use std::{hint::black_box, time::Instant};

use monitor::engine::{Engine, EngineConfig, Input};
use stream::Stream;

const PROCESSES: usize = 10_000;
const TASKS: usize = 100;
/// Inputs generated (untimed) then applied (timed) at a time, to bound memory.
const CHUNK: usize = 100_000;

fn main() {
    let mut events = 1_000_000;
    let mut runs = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().and_then(|text| text.parse().ok()).expect("a count after the option");
        match arg.as_str() {
            "--events" => events = value(),
            "--runs" => runs = value(),
            // `cargo bench` passes it to every bench target.
            "--bench" => {}
            other => panic!("unknown argument {other:?}; expected --events N, --runs N"),
        }
    }
    pin_to_one_cpu();
    println!("stream processes={PROCESSES} tasks={TASKS} events={events}");
    for run in 0..runs {
        let (engine, events, seconds) = replay(events, 1 + run as u64);
        let by_rule = &engine.stats().findings;
        let findings: u64 = by_rule.values().sum();
        let tracked = engine.processes_tracked();
        println!("run events={events} findings={findings} seconds={seconds:.6} processes_tracked={tracked}");
        let rules: Vec<String> = by_rule.iter().map(|(rule, count)| format!("{}={count}", rule.name())).collect();
        println!("rules {}", rules.join(" "));
    }
}

/// Applies the setup inputs, then times `events` inputs; returns the engine, the inputs that
/// were events and the seconds spent in `apply` on them.
fn replay(events: usize, seed: u64) -> (Engine, u64, f64) {
    let mut engine = Engine::new(EngineConfig::default());
    let (mut stream, setup) = Stream::new(PROCESSES, TASKS, seed);
    for input in &setup {
        black_box(engine.apply(input));
    }
    assert!(stream.live_processes() >= PROCESSES);
    let (mut applied, mut event_count, mut seconds) = (0, 0, 0.0);
    while applied < events {
        let chunk = stream.chunk(CHUNK.min(events - applied));
        applied += chunk.len();
        event_count += chunk.iter().filter(|input| matches!(input, Input::Event(_))).count() as u64;
        let started = Instant::now();
        for input in &chunk {
            black_box(engine.apply(input));
        }
        seconds += started.elapsed().as_secs_f64();
    }
    (engine, event_count, seconds)
}

/// One core: no migration between CPUs in the middle of a run.
fn pin_to_one_cpu() {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let cpu = libc::sched_getcpu().max(0) as usize;
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("engine bench: cannot pin to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
}
