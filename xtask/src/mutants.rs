//! `cargo xtask mutants`: breaks the product on purpose, one way at a time, and checks that the
//! suite notices. Each mutation replaces one piece of the source (text found exactly once), runs
//! the tests named to catch it, and restores the source; at least one of them must fail. A
//! mutation the suite survives is a hole in the suite. The kernel paths cannot be mutated by a
//! tool that knows nothing of eBPF, fanotify or cgroups, so the breaks are chosen by hand: those a
//! careless change could make without a compiler error.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

use crate::{cmd, error::Error, setup, workspace};

struct Mutation {
    /// What the break does, in the product's words.
    name: &'static str,
    file: &'static str,
    /// Text found exactly once in `file`, and what replaces it.
    from: &'static str,
    to: &'static str,
    /// Tests of which at least one must fail, each with a text its failure must print: a test
    /// failing for another reason (a flake, a missing tool, a verifier rejection) catches
    /// nothing.
    catchers: &'static [Catcher],
}

/// A test (`--test` target, exact name) and a text its failure prints.
struct Catcher(&'static str, &'static str, &'static str);

const MUTATIONS: &[Mutation] = &[
    Mutation {
        name: "the file guard skips the kill",
        file: "monitor/src/sensors/file_guard.rs",
        from: "        if killed {\n",
        to: "        if false && killed {\n",
        catchers: &[
            Catcher("ownership", "two_tasks_granted_one_file_share_it_and_a_third_is_killed", "the third task is killed at the open"),
            Catcher("exhaustion", "a_full_watch_map_keeps_the_secrets_already_watched", "the reader was killed at the open"),
        ],
    },
    Mutation {
        name: "the file guard allows every open",
        file: "monitor/src/sensors/file_guard.rs",
        from: "        self.answer(&request, !refused);\n",
        to: "        self.answer(&request, true);\n",
        catchers: &[Catcher("refusals", "a_bound_secret_opened_by_another_task_is_refused_on_every_path_route", "each route's cat exited 1")],
    },
    Mutation {
        name: "the TLS sensor matches no credential",
        file: "monitor/src/secrets/http.rs",
        from: "        if value.is_empty() {\n            return;\n",
        to: "        if true {\n            return;\n",
        catchers: &[Catcher("tls", "a_token_sent_over_tls_by_another_task_is_reuse_and_by_its_owner_silent", "no such finding")],
    },
    Mutation {
        name: "the memory hooks stay attached with no holder",
        file: "monitor/src/sensors/syscall_hooks.rs",
        from: "        if memory_idle {\n",
        to: "        if false && memory_idle {\n",
        catchers: &[Catcher(
            "syscall_hooks",
            "a_holder_needs_no_syscall_program_and_its_harvest_is_seen_off_the_syscall_path",
            "never detached",
        )],
    },
    Mutation {
        name: "the syscall programs stay attached once attached",
        file: "monitor/src/sensors/syscall_hooks.rs",
        from: "        if syscall_idle {\n",
        to: "        if false && syscall_idle {\n",
        catchers: &[Catcher(
            "syscall_hooks",
            "a_kill_verdict_puts_sys_enter_on_the_syscall_path_until_its_process_is_gone",
            "detached once the verdict was served",
        )],
    },
    Mutation {
        name: "a full membership map fails open",
        file: "monitor-ebpf/src/process.rs",
        from: "            fail_closed(flag::MEMBERSHIP);\n",
        to: "",
        catchers: &[Catcher("exhaustion", "a_full_membership_map_fails_closed", "fail_closed")],
    },
    Mutation {
        name: "a full holders map fails open",
        file: "monitor-ebpf/src/maps.rs",
        from: "    HOLDERS.get_ptr(tgid).is_some() || (failed_closed(fail_closed::HOLDINGS) && TASK_OF.get_ptr(tgid).is_some())\n",
        to: "    HOLDERS.get_ptr(tgid).is_some()\n",
        catchers: &[Catcher("exhaustion", "a_full_holders_map_reports_every_members_connects", "no such finding")],
    },
    Mutation {
        name: "a full allowlist map keeps the partial list",
        file: "monitor/src/sensors/maps.rs",
        from: "                self.forget_destinations(task)?;\n                return Err(error);\n",
        to: "                return Err(error);\n",
        catchers: &[Catcher("exhaustion", "a_full_allowlist_map_drops_the_partial_list", "signalled")],
    },
    Mutation {
        name: "kill_task never writes cgroup.kill",
        file: "monitor/src/actions/kill.rs",
        from: "        if let Err(source) = std::fs::write(&path, \"1\") {\n",
        to: "        if let Err(source) = Ok::<(), std::io::Error>(()) {\n",
        catchers: &[Catcher("deploy", "the_daemon_works_with_only_the_units_capabilities", "cgroup.kill was not written")],
    },
];

/// Restores a mutated file when dropped, whatever happened meanwhile.
struct Restore<'a> {
    path: &'a Path,
    original: String,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Err(error) = fs::write(self.path, &self.original) {
            eprintln!("mutants: could not restore {}: {error}; `git checkout` it", self.path.display());
        }
    }
}

pub fn main(args: &[std::ffi::OsString]) -> Result<ExitCode, Error> {
    let only = match args {
        [] => None,
        [name] => Some(name.to_string_lossy().into_owned()),
        _ => return Err(Error::Usage("`mutants` takes at most one mutation name".to_owned())),
    };
    if !cmd::is_root() {
        return Err(Error::NotRoot {
            what: "`cargo xtask mutants`".to_owned(),
            hint: "the tests that catch the mutations load eBPF programs and run the daemon".to_owned(),
        });
    }
    setup::ensure(setup::Needs::Test)?;
    let logs = workspace::target_dir().join("mutants");
    fs::create_dir_all(&logs).map_err(|source| Error::File { path: logs.clone(), source })?;
    let chosen: Vec<&Mutation> =
        MUTATIONS.iter().filter(|mutation| only.as_deref().is_none_or(|name| mutation.name.contains(name))).collect();
    // A catcher that fails on the real source would catch every mutation.
    for mutation in &chosen {
        for catcher in mutation.catchers {
            if let Failed::Yes(_) = run_test(catcher, &logs.join(format!("baseline-{}.log", catcher.1)))? {
                return Err(Error::Mutant(format!("{}::{} fails on the unmutated source", catcher.0, catcher.1)));
            }
        }
    }
    let mut survived = 0;
    for mutation in chosen {
        match run(mutation, &logs)? {
            Some(test) => eprintln!("mutants: {:50} caught by {test}", mutation.name),
            None => {
                survived += 1;
                eprintln!("mutants: {:50} SURVIVED: no test failed as it should", mutation.name);
            }
        }
    }
    eprintln!("mutants: {survived} mutation(s) survived; test logs in {}", logs.display());
    Ok(if survived == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Applies `mutation`, runs its catchers until one fails as expected, restores the source;
/// returns the test that caught it.
fn run(mutation: &Mutation, logs: &Path) -> Result<Option<String>, Error> {
    let path: PathBuf = workspace::root().join(mutation.file);
    // The restore writes the committed text back: a file with changes of its own is left alone.
    let clean = Command::new("git").args(["diff", "--quiet", "HEAD", "--"]).arg(&path).current_dir(workspace::root()).status();
    if !clean.is_ok_and(|status| status.success()) {
        return Err(Error::Mutant(format!("{} has uncommitted changes (or is not in git): commit them first", mutation.file)));
    }
    let original = fs::read_to_string(&path).map_err(|source| Error::File { path: path.clone(), source })?;
    if original.matches(mutation.from).count() != 1 {
        return Err(Error::Mutant(format!(
            "{:?}: its text is not found exactly once in {} (the source changed: update xtask/src/mutants.rs)",
            mutation.name, mutation.file
        )));
    }
    let _restore = Restore { path: &path, original: original.clone() };
    fs::write(&path, original.replacen(mutation.from, mutation.to, 1)).map_err(|source| Error::File { path: path.clone(), source })?;
    for catcher in mutation.catchers {
        let log = logs.join(format!("{}-{}.log", mutation.name.replace(' ', "-"), catcher.1));
        if let Failed::Yes(text) = run_test(catcher, &log)? {
            if text.contains("error[E") || text.contains("could not compile") {
                return Err(Error::Mutant(format!("{:?} does not compile; see {}", mutation.name, log.display())));
            }
            if text.contains(catcher.2) {
                return Ok(Some(format!("{}::{}", catcher.0, catcher.1)));
            }
            eprintln!("mutants: {}::{} failed without {:?}; see {}", catcher.0, catcher.1, catcher.2, log.display());
        }
    }
    Ok(None)
}

enum Failed {
    No,
    /// With everything it printed.
    Yes(String),
}

/// Runs one test, 15 minutes at most, its output to `log` (the suite's leak scan does not read
/// it: a failing test prints what it saw).
fn run_test(Catcher(target, test, _): &Catcher, log: &Path) -> Result<Failed, Error> {
    let mut cargo = Command::new("timeout");
    cargo
        .arg("900")
        .arg(workspace::cargo_program())
        .args(["test", "-p", "monitor", "--test", target, "--", "--exact", test])
        .current_dir(workspace::root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cmdline = cmd::cmdline(&cargo);
    let child = cargo.spawn().map_err(|source| Error::Io { cmdline: cmdline.clone(), source })?;
    // Ctrl-C reaches the test, which stops; the restore still runs.
    let _outlive_ctrl_c = cmd::IgnoreInterrupt::install();
    let output = child.wait_with_output().map_err(|source| Error::Io { cmdline, source })?;
    let text = String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned();
    fs::write(log, &text).map_err(|source| Error::File { path: log.to_owned(), source })?;
    Ok(if output.status.success() { Failed::No } else { Failed::Yes(text) })
}
