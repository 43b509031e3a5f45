//! The doctor report as an aligned table (one row per check) or as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::sensors::known_gaps::{self, KnownGap};

use super::{
    BtfCheck, FilesystemCheck, HookCheck, HookKind, HookOutcome, KernelReport, LsmListCheck,
    MountState, RingBufferCheck, Tier, TierError, Unmet,
};

pub const HEADER: [&str; 3] = ["CHECK", "STATUS", "DETAIL"];
/// Spaces between columns.
const GAP: usize = 2;

/// One line of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub check: String,
    pub status: &'static str,
    pub detail: String,
}

impl Row {
    pub fn new(check: impl Into<String>, status: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            status,
            detail: detail.into(),
        }
    }
}

/// The rows of `report`, in the order the checks ran, then the tier.
pub fn rows(report: &KernelReport, tier: &Result<Tier, TierError>) -> Vec<Row> {
    let KernelReport {
        kernel,
        filesystems,
        btf,
        lsm_list,
        ring_buffer,
        hooks,
        base_sensors,
        maps,
    } = report;
    let mut rows = vec![Row::new("kernel", "ok", kernel.as_str())];
    rows.extend(filesystems.iter().map(filesystem_row));
    rows.push(btf_row(btf));
    rows.push(lsm_list_row(lsm_list));
    rows.push(ring_buffer_row(ring_buffer));
    rows.extend(hooks.iter().map(hook_row));
    rows.extend(base_sensors.iter().map(|check| {
        let status = if check.available { "available" } else { "unavailable" };
        Row::new(format!("sensor:{}", check.sensor), status, check.detail.as_str())
    }));
    let sizes: Vec<String> = maps.iter().map(|size| format!("{} {}", size.map, size.entries)).collect();
    rows.push(Row::new("maps", "ok", sizes.join(", ")));
    rows.push(tier_row(report, tier));
    if let Ok(tier) = tier {
        rows.extend(gaps(report, *tier).into_iter().map(|gap| Row::new(format!("gap:{}", gap.capability), "gap", gap.reason)));
    }
    rows
}

/// Columns padded to their widest cell; the last one is not padded.
pub fn table(rows: &[Row]) -> String {
    let check_width = rows
        .iter()
        .map(|row| row.check.len())
        .chain([HEADER[0].len()])
        .max()
        .unwrap_or(0);
    let status_width = rows
        .iter()
        .map(|row| row.status.len())
        .chain([HEADER[1].len()])
        .max()
        .unwrap_or(0);
    let line = |check: &str, status: &str, detail: &str| {
        let line = format!(
            "{check:<check_pad$}{status:<status_pad$}{detail}",
            check_pad = check_width + GAP,
            status_pad = status_width + GAP,
        );
        format!("{}\n", line.trim_end())
    };
    let [check, status, detail] = HEADER;
    let mut table = line(check, status, detail);
    for Row {
        check,
        status,
        detail,
    } in rows
    {
        table.push_str(&line(check, status, detail));
    }
    table
}

/// The JSON document: the report's fields, plus the tier chosen and what each tier lacks.
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    #[serde(flatten)]
    pub report: &'a KernelReport,
    pub tier: TierSummary,
}

#[derive(Debug, Serialize)]
pub struct TierSummary {
    /// `None` when not even the tracepoint tier is available.
    pub selected: Option<Tier>,
    /// Per tier name, the requirements this kernel does not meet.
    pub unmet: BTreeMap<&'static str, Vec<Unmet>>,
    /// What the selected tier's sensors, as `run` would start them here, miss or cannot refuse.
    pub gaps: Vec<TierGap>,
}

#[derive(Debug, Serialize)]
pub struct TierGap {
    pub capability: &'static str,
    pub reason: &'static str,
}

/// The known gaps of `tier` with the base sensors doctor found.
fn gaps(report: &KernelReport, tier: Tier) -> Vec<KnownGap> {
    let available = |sensor| report.base_sensors.iter().any(|check| check.sensor == sensor && check.available);
    known_gaps::of(known_gaps::Sensors {
        tier,
        file_guard: available("file_guard"),
        socket_hooks: available("socket_hooks"),
        tls: available("tls_uprobes") && report.hooks.uprobe.outcome.is_available(),
    })
}

impl<'a> Document<'a> {
    pub fn new(report: &'a KernelReport, tier: &Result<Tier, TierError>) -> Self {
        let unmet = Tier::PREFERENCE
            .into_iter()
            .map(|tier| (tier.name(), report.unmet(tier)))
            .collect();
        Self {
            report,
            tier: TierSummary {
                selected: tier.as_ref().ok().copied(),
                unmet,
                gaps: tier
                    .as_ref()
                    .map(|&tier| gaps(report, tier))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|KnownGap { capability, reason }| TierGap { capability, reason })
                    .collect(),
            },
        }
    }
}

fn filesystem_row(check: &FilesystemCheck) -> Row {
    let FilesystemCheck {
        filesystem,
        path,
        state,
    } = check;
    match state {
        MountState::Mounted => Row::new(filesystem.name(), "ok", *path),
        MountState::MountedNow => {
            Row::new(filesystem.name(), "ok", format!("{path} (mounted now)"))
        }
        MountState::Failed { error } => {
            Row::new(filesystem.name(), "failed", format!("{path}: {error}"))
        }
    }
}

fn btf_row(check: &BtfCheck) -> Row {
    match check {
        BtfCheck::Parsed { path } => Row::new("btf", "ok", *path),
        BtfCheck::Failed { path, error } => Row::new("btf", "failed", format!("{path}: {error}")),
    }
}

fn lsm_list_row(check: &LsmListCheck) -> Row {
    match check {
        LsmListCheck::Read { lsms } if check.bpf_active() => {
            Row::new("lsm-list", "ok", format!("{} (bpf active)", lsms.join(",")))
        }
        LsmListCheck::Read { lsms } => Row::new(
            "lsm-list",
            "missing",
            format!("{} (bpf not active)", lsms.join(",")),
        ),
        LsmListCheck::Failed { error } => Row::new("lsm-list", "failed", error.to_string()),
    }
}

fn ring_buffer_row(check: &RingBufferCheck) -> Row {
    match check {
        RingBufferCheck::Supported => Row::new("map:ringbuf", "ok", "BPF_MAP_TYPE_RINGBUF created"),
        RingBufferCheck::Unsupported => Row::new(
            "map:ringbuf",
            "missing",
            "the kernel does not know BPF_MAP_TYPE_RINGBUF",
        ),
        RingBufferCheck::Failed { error } => Row::new("map:ringbuf", "failed", error.to_string()),
    }
}

fn hook_row(check: &HookCheck) -> Row {
    let HookCheck {
        hook,
        target,
        outcome,
    } = check;
    let name = format!("hook:{}", hook.name());
    match outcome {
        HookOutcome::Available { hits } => {
            let detail = match hook {
                HookKind::SendSignal => format!(
                    "{target}: SIGKILL delivered, child killed ({})",
                    times(*hits)
                ),
                HookKind::Tracepoint
                | HookKind::RawTracepoint
                | HookKind::TpBtf
                | HookKind::Fentry
                | HookKind::FmodRet
                | HookKind::Lsm
                | HookKind::Uprobe
                | HookKind::Kprobe => format!("{target}: fired ({})", times(*hits)),
            };
            Row::new(name, "available", detail)
        }
        HookOutcome::Silent => Row::new(
            name,
            "silent",
            format!("{target}: attached but did not run"),
        ),
        HookOutcome::Refused { phase, error } => {
            let errno = error
                .errno
                .as_ref()
                .map(|errno| format!("{errno} "))
                .unwrap_or_default();
            Row::new(
                name,
                "refused",
                format!("{errno}({}): {}", phase.name(), error.message),
            )
        }
        HookOutcome::Failed { phase, error } => Row::new(
            name,
            "failed",
            format!("({}): {}", phase.name(), error.message),
        ),
    }
}

fn tier_row(report: &KernelReport, tier: &Result<Tier, TierError>) -> Row {
    let Ok(tier) = tier else {
        return Row::new("tier", "none", tier.as_ref().err().map(ToString::to_string).unwrap_or_default());
    };
    // Why each better tier was passed over.
    let passed_over: Vec<String> = Tier::PREFERENCE
        .iter()
        .take_while(|&&better| better != *tier)
        .map(|&better| format!("{better} unavailable: {}", crate::sensors::tier::join(&report.unmet(better))))
        .collect();
    let detail = if passed_over.is_empty() { "every requirement met".to_owned() } else { passed_over.join("; ") };
    Row::new("tier", tier.name(), detail)
}

fn times(hits: u64) -> String {
    match hits {
        1 => "ran 1 time".to_owned(),
        _ => format!("ran {hits} times"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let rows = [
            Row::new("btf", "ok", "/sys/kernel/btf/vmlinux"),
            Row::new("hook:raw_tracepoint", "available", ""),
        ];
        let table = table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "CHECK                STATUS     DETAIL");
        assert_eq!(
            lines[1],
            "btf                  ok         /sys/kernel/btf/vmlinux"
        );
        assert_eq!(lines[2], "hook:raw_tracepoint  available");
    }
}
