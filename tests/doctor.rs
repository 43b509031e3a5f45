//! `credwatch doctor` on the real kernel, as root: the table and the JSON say what this host
//! allows (tracepoints, tp_btf, uprobes and bpf_send_signal work; fentry and LSM programs are
//! refused with EPERM; kprobes are compiled out) and choose the tracepoint tier. Without
//! privileges the kernel refuses everything and doctor fails with the reason.

use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt as _,
    process::{Command, Output},
};

use serde_json::Value;

/// The user and group `nobody`.
const NOBODY: u32 = 65534;

const WORKING_HOOKS: [&str; 5] = [
    "tracepoint",
    "raw_tracepoint",
    "tp_btf",
    "uprobe",
    "send_signal",
];
const EPERM_HOOKS: [&str; 3] = ["fentry", "fmod_ret", "lsm"];

fn doctor(command: &mut Command, args: &[&str]) -> (Output, String, String) {
    let output = command
        .arg("doctor")
        .args(args)
        .output()
        .expect("running credwatch doctor");
    let stdout = String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8");
    let stderr = String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8");
    (output, stdout, stderr)
}

fn credwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_credwatch"))
}

struct Table {
    /// check → (status, detail)
    rows: BTreeMap<String, (String, String)>,
}

impl Table {
    /// Parses the table, checking that it has the header and that its columns line up.
    fn parse(stdout: &str) -> Self {
        let mut lines = stdout.lines();
        let header = lines.next().expect("a header line");
        assert_eq!(
            header.split_whitespace().collect::<Vec<_>>(),
            ["CHECK", "STATUS", "DETAIL"],
            "{stdout}"
        );
        let status_column = header.find("STATUS").unwrap();
        let detail_column = header.find("DETAIL").unwrap();
        let mut rows = BTreeMap::new();
        for line in lines {
            let (check, rest) = line.split_at(status_column);
            assert!(check.ends_with("  "), "CHECK column too narrow in {line:?}");
            let (status, detail) = rest.split_at(detail_column - status_column);
            assert!(
                !status.starts_with(' '),
                "STATUS column misaligned in {line:?}"
            );
            let previous = rows.insert(
                check.trim().to_owned(),
                (status.trim().to_owned(), detail.trim().to_owned()),
            );
            assert!(previous.is_none(), "duplicate row {line:?}");
        }
        Self { rows }
    }

    fn row(&self, check: &str) -> (&str, &str) {
        let (status, detail) = self
            .rows
            .get(check)
            .unwrap_or_else(|| panic!("no `{check}` row in {:?}", self.rows));
        (status, detail)
    }
}

#[test]
fn table_shows_what_this_kernel_allows() {
    let (output, stdout, stderr) = doctor(&mut credwatch(), &[]);
    assert!(
        output.status.success(),
        "exit {:?}; stdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let table = Table::parse(&stdout);

    for check in [
        "kernel",
        "btf",
        "tracefs",
        "bpffs",
        "securityfs",
        "lsm-list",
        "map:ringbuf",
    ] {
        assert_eq!(table.row(check).0, "ok", "{check}:\n{stdout}");
    }
    assert_eq!(table.row("btf").1, "/sys/kernel/btf/vmlinux");
    assert!(
        table.row("tracefs").1.starts_with("/sys/kernel/tracing"),
        "{stdout}"
    );
    assert!(
        table.row("lsm-list").1.ends_with("(bpf active)"),
        "{stdout}"
    );

    for hook in WORKING_HOOKS {
        let (status, detail) = table.row(&format!("hook:{hook}"));
        assert_eq!(status, "available", "hook:{hook}:\n{stdout}");
        assert!(detail.contains("(ran "), "hook:{hook} fired:\n{stdout}");
    }
    assert!(
        table
            .row("hook:send_signal")
            .1
            .contains("SIGKILL delivered, child killed"),
        "{stdout}"
    );
    for hook in EPERM_HOOKS {
        let (status, detail) = table.row(&format!("hook:{hook}"));
        assert_eq!(status, "refused", "hook:{hook}:\n{stdout}");
        assert!(
            detail.starts_with("EPERM: Operation not permitted (load): "),
            "hook:{hook}:\n{stdout}"
        );
        assert!(
            detail.contains("BPF_PROG_LOAD"),
            "aya's error chain for hook:{hook}:\n{stdout}"
        );
    }
    let (status, detail) = table.row("hook:kprobe");
    assert_eq!(status, "refused", "{stdout}");
    assert!(
        detail.contains("(attach)"),
        "kprobes are compiled out, so attaching fails:\n{stdout}"
    );

    let (status, detail) = table.row("tier");
    assert_eq!(status, "tracepoint", "{stdout}");
    assert!(detail.starts_with("lsm unavailable: "), "{stdout}");
    assert!(
        detail.contains("hook:lsm refused at load: EPERM"),
        "{stdout}"
    );
    assert!(detail.contains("; fmod_ret unavailable: fmod_ret_hook: hook:fmod_ret refused at load: EPERM"), "{stdout}");
}

#[test]
fn json_shows_what_this_kernel_allows() {
    let (output, stdout, stderr) = doctor(&mut credwatch(), &["--json"]);
    assert!(
        output.status.success(),
        "exit {:?}; stderr:\n{stderr}",
        output.status
    );
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}:\n{stdout}"));

    assert!(
        report["kernel"]
            .as_str()
            .is_some_and(|release| !release.is_empty()),
        "{report:#}"
    );
    let filesystems = report["filesystems"].as_array().expect("filesystems array");
    let names: Vec<_> = filesystems
        .iter()
        .map(|fs| fs["filesystem"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tracefs", "bpffs", "securityfs"]);
    for fs in filesystems {
        assert!(
            matches!(fs["state"].as_str(), Some("mounted" | "mounted_now")),
            "{fs:#}"
        );
    }
    assert_eq!(report["btf"]["status"], "parsed", "{report:#}");
    assert_eq!(report["lsm_list"]["status"], "read", "{report:#}");
    assert!(
        report["lsm_list"]["lsms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|lsm| lsm == "bpf"),
        "{report:#}"
    );
    assert_eq!(report["ring_buffer"]["status"], "supported", "{report:#}");

    let hooks = &report["hooks"];
    for hook in WORKING_HOOKS {
        assert_eq!(
            hooks[hook]["status"], "available",
            "{hook}: {:#}",
            hooks[hook]
        );
        assert!(
            hooks[hook]["hits"].as_u64().is_some_and(|hits| hits >= 1),
            "{hook}: {:#}",
            hooks[hook]
        );
    }
    for hook in EPERM_HOOKS {
        let check = &hooks[hook];
        assert_eq!(check["status"], "refused", "{hook}: {check:#}");
        assert_eq!(check["phase"], "load", "{hook}: {check:#}");
        assert_eq!(
            check["error"]["errno"]["name"], "EPERM",
            "{hook}: {check:#}"
        );
        assert_eq!(
            check["error"]["errno"]["description"], "Operation not permitted",
            "{hook}: {check:#}"
        );
    }
    assert_eq!(
        hooks["kprobe"]["status"], "refused",
        "{:#}",
        hooks["kprobe"]
    );
    assert_eq!(hooks["kprobe"]["phase"], "attach", "{:#}", hooks["kprobe"]);

    let tier = &report["tier"];
    assert_eq!(tier["selected"], "tracepoint", "{tier:#}");
    assert_eq!(
        tier["unmet"]["tracepoint"],
        Value::Array(Vec::new()),
        "{tier:#}"
    );
    let lsm_unmet: Vec<_> = tier["unmet"]["lsm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|unmet| &unmet["requirement"])
        .collect();
    assert_eq!(lsm_unmet, ["lsm_hook"], "{tier:#}");
    let fmod_ret_unmet: Vec<_> =
        tier["unmet"]["fmod_ret"].as_array().unwrap().iter().map(|unmet| &unmet["requirement"]).collect();
    assert_eq!(fmod_ret_unmet, ["fmod_ret_hook"], "{tier:#}");
    // The file guard and the socket hooks work here: what is left of this tier's gaps.
    let gaps: Vec<_> = tier["gaps"].as_array().unwrap().iter().map(|gap| &gap["capability"]).collect();
    assert_eq!(
        gaps,
        [
            "files:mmap_of_earlier_fd",
            "harvest:deny",
            "harvest:pidfd_getfd",
            "self_protection",
            "tls:http2",
            "tls:other_libraries",
            "tls:before_send"
        ],
        "{tier:#}"
    );
    let tls = report["base_sensors"].as_array().unwrap().iter().find(|check| check["sensor"] == "tls_uprobes").unwrap();
    assert_eq!(tls["available"], true, "this machine has Debian's libssl3 and libgnutls30: {tls:#}");
    assert!(tls["detail"].as_str().unwrap().contains("SSL_write, SSL_write_ex in /"), "{tls:#}");
}

/// The same binary run as `nobody` with no capabilities: a real unprivileged caller, so the
/// kernel refuses every BPF program and doctor must fail with the reason. The binary is copied
/// where `nobody` can reach it: the checkout may be in a home only root can traverse.
#[test]
fn without_privileges_no_tier_is_available() {
    use std::os::unix::fs::PermissionsExt as _;
    let reachable = tempfile::Builder::new().prefix("credwatch-nobody-").tempdir().unwrap();
    std::fs::set_permissions(reachable.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = reachable.path().join("credwatch");
    std::fs::copy(env!("CARGO_BIN_EXE_credwatch"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut as_nobody = Command::new(&binary);
    as_nobody.uid(NOBODY).gid(NOBODY).current_dir("/");
    let (output, stdout, stderr) = doctor(&mut as_nobody, &[]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("no sensor tier is available"), "{stderr}");
    assert!(stderr.contains("EPERM"), "{stderr}");

    let table = Table::parse(&stdout);
    for hook in ["raw_tracepoint", "tp_btf", "send_signal"] {
        let (status, detail) = table.row(&format!("hook:{hook}"));
        assert_eq!(status, "refused", "hook:{hook}:\n{stdout}");
        assert!(detail.starts_with("EPERM: "), "hook:{hook}:\n{stdout}");
    }
    assert_eq!(table.row("tier").0, "none", "{stdout}");
}
