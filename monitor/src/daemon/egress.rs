//! The daemon's side of the egress proxy: it starts the proxy where the kernel can send tasks'
//! connects to it, and answers its questions from the loop, which owns the kernel maps (who made
//! a connection) and the engine (is this request a finding, and is it refused).

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::warn;

use super::{Daemon, DaemonError};
use crate::{
    clock,
    egress::{self, EgressConfig, Listening, Origin, Query, Running, Verdict},
    engine::{Input, Rule},
    event::{Event, EventKind},
    fingerprint::FingerprintKey,
    procfs,
    sensors::Sensors,
};

/// Requests waiting for the loop's answer; past this the proxy's handlers wait to ask.
const QUERY_QUEUE: usize = 1024;

/// The rules whose findings the proxy refuses a request for, when their actions enforce (deny,
/// kill_process, kill_task), as the kernel refuses an open or a connect.
const REFUSING: [Rule; 4] = [Rule::CrossTaskReuse, Rule::PostTaskReuse, Rule::DecoyTouched, Rule::UnexpectedDestination];

/// The proxy as started, or why it is not running.
pub(super) struct Egress {
    pub(super) running: Result<Listening, String>,
    pub(super) queries: mpsc::Receiver<Query>,
    /// The proxy's threads, for as long as the daemon runs.
    _threads: Option<Running>,
}

/// Starts the proxy when configured, before the sensors load: its setup (the CA, the host's
/// roots) takes time no kernel event should wait for. Its failure is a stated gap, not a failed
/// daemon: tasks then run direct.
pub(super) fn start(
    config: &EgressConfig,
    state_dir: &std::path::Path,
    key: &Arc<FingerprintKey>,
    registry: &prometheus::Registry,
) -> Egress {
    let (sender, queries) = mpsc::channel(QUERY_QUEUE);
    let started = match config.enabled {
        false => Err("disabled in the configuration ([egress] enabled = false)".to_owned()),
        true => egress::start(config.clone(), state_dir, Arc::clone(key), sender, registry)
            .map_err(|error| crate::error_chain::ErrorChain(&error).to_string()),
    };
    let (running, threads) = match started {
        Ok((listening, threads)) => (Ok(listening), Some(threads)),
        Err(reason) => (Err(reason), None),
    };
    Egress { running, queries, _threads: threads }
}

impl Egress {
    /// Points the kernel's socket hooks at the proxy; without them there is no redirect and no
    /// identity, so no proxy.
    pub(super) fn attach(&mut self, ports: &[u16], sensors: &mut Sensors) {
        if let Ok(listening) = &self.running {
            self.running = if !sensors.socket_hooks() {
                Err("the cgroup socket hooks are not attached (cgroup v2 not mounted, or refused)".to_owned())
            } else {
                let maps = sensors.maps_mut().egress();
                match maps.configure(listening.address, listening.address6, ports) {
                    Ok(()) => Ok(listening.clone()),
                    Err(error) => Err(format!("cannot point the kernel at the proxy: {error}")),
                }
            };
        }
        if let Err(reason) = &self.running {
            warn!(%reason, "no egress proxy: tasks' requests go direct");
        }
    }
}

impl Daemon {
    /// Answers one of the proxy's questions.
    pub(super) fn answer_egress(&mut self, query: Query) -> Result<(), DaemonError> {
        match query {
            Query::Identify { client, reply } => {
                let peer = self.sensors.maps_mut().egress().take_peer(client);
                let origin = peer.and_then(|peer| {
                    Some(Origin { process: procfs::exec_id(peer.tgid)?, task: peer.task, original: peer.original })
                });
                // The proxy may have dropped the connection meanwhile.
                let _ = reply.send(origin);
            }
            Query::Judge { origin, request, reply } => {
                // What the kernel reported before this request is judged first (a task's end, an
                // open of the secret).
                self.catch_up()?;
                let event = Event {
                    ktime_ns: clock::boottime_ns(),
                    process: origin.process,
                    thread: origin.process.tgid,
                    truncated: false,
                    read_failed: false,
                    kind: EventKind::TlsWrite(request),
                };
                let plan = self.plan.clone();
                let refusing = move |rule: Rule| REFUSING.contains(&rule) && plan.kills(rule);
                let decided = self.decide(Input::Event(event), Some(&refusing))?;
                let verdict = match decided.refused {
                    Some((rule, finding)) => Verdict::Refuse { rule: rule.name(), finding },
                    None => Verdict::Forward,
                };
                let _ = reply.send(verdict);
            }
        }
        Ok(())
    }
}
