//! What the engine consumes, in order: kernel events and the daemon's announcements of tasks and
//! secrets. A recording (`run --record`, read by `replay`) holds one `Input` per JSON line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    baseline::Baseline,
    secrets::SecretSpec,
    tasks::{Grant, TaskId, TaskSpec, TaskState},
};
use crate::event::{Event, ExecId, InodeId, SecretId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// Something a process did; its time is the event's `ktime_ns`.
    Event(Event),
    TaskStarted {
        at_ns: u64,
        task: TaskSpec,
    },
    TaskEnded {
        at_ns: u64,
        id: TaskId,
    },
    /// A task from the registry of an earlier run, with the kernel handle it had and the state it
    /// was in; `task.roots` are its members still alive.
    TaskRestored {
        at_ns: u64,
        task: TaskSpec,
        handle: u32,
        state: TaskState,
    },
    /// Every kernel handle below `next_handle` was issued by an earlier run: none is reused.
    HandlesIssued {
        at_ns: u64,
        next_handle: u32,
    },
    /// A secret granted to an active task after it started (a broker-issued token).
    GrantAdded {
        at_ns: u64,
        task: TaskId,
        grant: Grant,
    },
    SecretWatched {
        at_ns: u64,
        secret: SecretSpec,
    },
    /// An inode of a watched secret file is no longer one (replaced, or its last link gone).
    InodeUnwatched {
        at_ns: u64,
        secret: SecretId,
        inode: InodeId,
    },
    /// Writes to kernel map `map` failed (`failures` since the sensors loaded, `process` the
    /// latest writer the kernel names): the map is full.
    MapWriteFailed {
        at_ns: u64,
        map: String,
        failures: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        process: Option<ExecId>,
    },
    /// Baselines an earlier run of the daemon learnt.
    BaselinesRestored {
        at_ns: u64,
        baselines: BTreeMap<String, Baseline>,
    },
    /// Forget one secret's baseline (`secret`, as `baseline show` names it), or all of them.
    BaselineReset {
        at_ns: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
    },
    /// Time passed: lets tasks expire when nothing else happens.
    Tick {
        at_ns: u64,
    },
}

impl Input {
    /// `CLOCK_BOOTTIME` nanoseconds.
    pub fn at_ns(&self) -> u64 {
        match self {
            Self::Event(event) => event.ktime_ns,
            Self::TaskStarted { at_ns, .. }
            | Self::TaskEnded { at_ns, .. }
            | Self::TaskRestored { at_ns, .. }
            | Self::HandlesIssued { at_ns, .. }
            | Self::GrantAdded { at_ns, .. }
            | Self::SecretWatched { at_ns, .. }
            | Self::InodeUnwatched { at_ns, .. }
            | Self::MapWriteFailed { at_ns, .. }
            | Self::BaselinesRestored { at_ns, .. }
            | Self::BaselineReset { at_ns, .. }
            | Self::Tick { at_ns } => *at_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EnvScan, EnvSecret, EventKind, Exec, ExecId, Fingerprint, Harvest, HarvestKind};

    #[test]
    fn inputs_round_trip_through_json_lines() {
        let exec = Input::Event(Event {
            ktime_ns: 7,
            process: ExecId { tgid: 100, start_time: 1 },
            thread: 100,
            truncated: false,
            read_failed: false,
            kind: EventKind::Exec(Exec {
                parent: ExecId { tgid: 1, start_time: 0 },
                uid: 1000,
                filename: "/usr/bin/git".to_owned(),
                argv0: "git".to_owned(),
                env: EnvScan::Scanned {
                    secrets: vec![EnvSecret { name: "GITHUB_TOKEN".to_owned(), fingerprint: Fingerprint([0x1f; 16]) }],
                },
                tokens: Vec::new(),
                captured: None,
            }),
        });
        let line = serde_json::to_string(&exec).unwrap();
        assert!(line.starts_with(r#"{"input":"event","ktime_ns":7,"#), "{line}");
        assert_eq!(serde_json::from_str::<Input>(&line).unwrap(), exec);
        assert_eq!(exec.at_ns(), 7);

        let harvest = Input::Event(Event {
            ktime_ns: 8,
            process: ExecId { tgid: 300, start_time: 2 },
            thread: 301,
            truncated: false,
            read_failed: false,
            kind: EventKind::Harvest(Harvest {
                kind: HarvestKind::Environ,
                target: 100,
                kernel_action: crate::event::KernelAction::None,
            }),
        });
        let line = serde_json::to_string(&harvest).unwrap();
        assert!(line.ends_with(r#""kind":"harvest","harvest":"environ","target":100,"kernel_action":"none"}"#), "{line}");
        assert_eq!(serde_json::from_str::<Input>(&line).unwrap(), harvest);

        let tick = r#"{"input":"tick","at_ns":9}"#;
        assert_eq!(serde_json::from_str::<Input>(tick).unwrap(), Input::Tick { at_ns: 9 });
        let ended = r#"{"input":"task_ended","at_ns":3,"id":"build"}"#;
        assert_eq!(
            serde_json::from_str::<Input>(ended).unwrap(),
            Input::TaskEnded { at_ns: 3, id: TaskId("build".to_owned()) }
        );
    }

    #[test]
    fn a_task_with_grants_and_destinations_reads_naturally() {
        let line = r#"{"input":"task_started","at_ns":5,"task":{"id":"build","owner":"ci","roots":[100],
            "granted":[{"type":"file","secret":1},{"type":"env","name":"GITHUB_TOKEN"}],
            "allowed":["140.82.112.0/20:443"],"ttl_ns":900000000000}}"#;
        let Input::TaskStarted { at_ns: 5, task } = serde_json::from_str::<Input>(line).unwrap() else {
            panic!("not a task start")
        };
        assert_eq!(task.roots, [100]);
        assert_eq!(task.granted.len(), 2);
        assert_eq!(task.allowed.unwrap()[0].to_string(), "140.82.112.0/20:443");
    }
}
