//! `credwatch task exec`: runs a command as a task. The command's process is registered as the
//! task's root before it starts, and the task ends when it exits, however it exits.

use std::{
    ffi::OsString,
    io,
    os::unix::process::ExitStatusExt as _,
    process::{Child, Command, ExitCode, ExitStatus},
};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::debug;

use super::{gate::HeldChild, GrantArgs};
use crate::{
    api::client::{ApiClient, ClientError},
    daemon::control::{EgressMode, TokenRequest},
    secrets::decoys,
    cli::{
        socket::{self, SocketArgs},
        CommandError,
    },
    error_chain::ErrorChain,
};

/// Exit status when the task could not be registered (the command did not run).
const REGISTRATION_FAILED: u8 = 2;
/// Exit statuses when the command could not be started, as shells use them.
const NOT_EXECUTABLE: u8 = 126;
const NOT_FOUND: u8 = 127;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  credwatch task exec --id review-42 --secret ~/.config/gh/hosts.yml --allow api.github.com:443 \\
      --ttl 30m -- claude -p 'review PR 42'
  credwatch task exec --id deploy --env AWS_SECRET_ACCESS_KEY --allow 10.0.0.0/8 -- ./deploy.sh

The command runs with credwatch's environment, so --env names variables set for credwatch.
Exit status: the command's (128+N if it was killed by signal N), 2 if the task could not be
registered, 126 or 127 if the command could not be started.")]
pub struct ExecArgs {
    /// The task's id: 1 to 128 of A-Z a-z 0-9 . _ : -
    #[arg(long)]
    pub id: String,
    #[command(flatten)]
    pub grants: GrantArgs,
    /// A decoy variable for the command (repeatable): a fake value shaped like the real thing,
    /// set in its environment. The task may carry it; any other process using it is
    /// decoy_touched.
    #[arg(long = "decoy-env", value_name = "NAME")]
    pub decoy_env: Vec<String>,
    /// Where the command's HTTP(S) requests go: through credwatch's egress proxy, which reads
    /// and judges each before it leaves (the command is told to trust the proxy's CA), or
    /// straight out.
    #[arg(long, value_enum, default_value_t = EgressMode::Proxy)]
    pub egress: EgressMode,
    #[command(flatten)]
    pub api: SocketArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("holding {program:?} for registration")]
    Spawn { program: OsString, source: io::Error },
    #[error("making up a decoy value")]
    Decoy(#[source] io::Error),
    #[error("installing signal handlers")]
    Signals(#[source] io::Error),
    #[error("waiting for the command")]
    Wait(#[source] io::Error),
}

pub fn main(args: ExecArgs) -> Result<ExitCode, CommandError> {
    socket::block_on(run(args))?
}

async fn run(args: ExecArgs) -> Result<ExitCode, CommandError> {
    let ExecArgs { id, grants, decoy_env, egress, api, command } = args;
    let client = api.client();
    // Before the child exists, so that a Ctrl-C from now on ends the task rather than credwatch.
    let mut signals = Forwarded::install().map_err(ExecError::Signals)?;
    let (program, arguments) = command.split_first().ok_or("no command given")?;
    let mut request = grants.request(id.clone())?;

    let decoys = decoy_env
        .iter()
        .map(|name| Ok((name.clone(), decoys::fake_value(name)?)))
        .collect::<io::Result<Vec<_>>>()
        .map_err(ExecError::Decoy)?;
    let mut command = Command::new(program);
    command.args(arguments);
    if egress == EgressMode::Proxy {
        let proxy = match client.status().await {
            Ok(status) => through_proxy(&mut command, &status["egress"]),
            Err(error) => Err(format!("asking where the egress proxy is: {}", ErrorChain(&error))),
        };
        if let Err(error) = proxy {
            eprintln!("credwatch: registering task {id}: {error}");
            return Ok(ExitCode::from(REGISTRATION_FAILED));
        }
    }
    request.egress = egress;
    for (name, value) in &decoys {
        command.env(name, value.as_str());
    }
    let held = HeldChild::spawn(command).map_err(|source| ExecError::Spawn { program: program.clone(), source })?;
    request.root_pid = Some(held.pid());
    let mut started = false;
    let registered = async {
        let reply = client.start_task(&request).await?;
        debug!(%reply, "task registered");
        started = true;
        for (name, value) in &decoys {
            let label = format!("decoy {name}");
            let token = TokenRequest { task: id.clone(), label, value: Some(value.to_string()), decoy: true };
            client.register_token(&token).await?;
        }
        Ok::<_, ClientError>(())
    };
    if let Err(error) = registered.await {
        held.abandon();
        if started {
            end_task(&client, &id).await;
        }
        eprintln!("credwatch: registering task {id}: {}", ErrorChain(&error));
        return Ok(ExitCode::from(REGISTRATION_FAILED));
    }

    let child = match held.release() {
        Ok(child) => child,
        Err(error) => {
            end_task(&client, &id).await;
            eprintln!("credwatch: starting {program:?}: {error}");
            let code = if error.kind() == io::ErrorKind::NotFound { NOT_FOUND } else { NOT_EXECUTABLE };
            return Ok(ExitCode::from(code));
        }
    };
    let status = wait_forwarding(child, &mut signals).await;
    end_task(&client, &id).await;
    // The daemon applies what the kernel decided before it ends the task: every refusal is known.
    for line in acted_on(&client, &id).await {
        eprintln!("{line}");
    }
    Ok(exit_code(status.map_err(ExecError::Wait)?))
}

/// Points the command's clients at the egress proxy (`egress`: the daemon's status of it): the
/// proxy variables, and the CA in the variables the common runtimes read. `SSL_CERT_FILE` and its
/// kind replace the host's roots, so they name a bundle of the host's roots and the CA;
/// `NODE_EXTRA_CA_CERTS` adds to Node's own. `NO_PROXY` is dropped: the kernel would send those
/// connects to the proxy anyway.
fn through_proxy(command: &mut Command, egress: &serde_json::Value) -> Result<(), String> {
    if egress["running"] != true {
        let reason = egress["reason"].as_str().unwrap_or("the daemon does not say why");
        return Err(format!("the daemon's egress proxy is not running ({reason}); use --egress direct to run without it"));
    }
    let text = |value: &serde_json::Value| value.as_str().map(str::to_owned).ok_or("the daemon's status names no egress proxy".to_owned());
    let proxy = format!("http://{}", text(&egress["address"])?);
    let (certificate, bundle) = (text(&egress["ca"]["certificate"])?, text(&egress["ca"]["bundle"])?);
    for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        command.env(name, &proxy);
    }
    for name in ["NO_PROXY", "no_proxy"] {
        command.env_remove(name);
    }
    for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"] {
        command.env(name, &bundle);
    }
    command.env("NODE_EXTRA_CA_CERTS", &certificate);
    Ok(())
}

/// What credwatch killed or refused in task `id`, a line each: rule, process, what it touched,
/// what was done and the finding's id (the same in the audit log and the alert). Nothing when the daemon cannot be asked (the command's status stands).
async fn acted_on(client: &ApiClient, id: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(mut findings) = client.findings(false).await else { return lines };
    while let Ok(Some(line)) = findings.next_line().await {
        let Ok(finding) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if finding["task"] != id {
            continue;
        }
        let acted: Vec<String> = finding["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|action| ACTED.contains(&action["result"].as_str().unwrap_or_default()))
            .map(|action| format!("{} ({})", action["action"].as_str().unwrap_or("?"), action["result"].as_str().unwrap_or("?")))
            .collect();
        if acted.is_empty() {
            continue;
        }
        let touched = finding["destination"]
            .as_str()
            .or_else(|| finding["secret"]["name"].as_str())
            .unwrap_or("a secret");
        lines.push(format!(
            "credwatch: task {id}: {} by pid {} on {touched}: {} (finding {})",
            finding["rule"].as_str().unwrap_or("?"),
            finding["process"]["pid"],
            acted.join(", "),
            finding["id"].as_str().unwrap_or("?"),
        ));
    }
    lines
}

/// Action results that mean credwatch stopped or refused something.
const ACTED: [&str; 5] = ["killed_in_kernel", "denied_in_kernel", "refused_by_proxy", "signalled", "killed"];

/// Ends the task; a failure is reported but does not change the command's exit status.
async fn end_task(client: &ApiClient, id: &str) {
    match client.end_task(id).await {
        Ok(reply) => debug!(%reply, "task ended"),
        Err(error) => eprintln!("credwatch: ending task {id}: {}", ErrorChain(&error)),
    }
}

/// Waits for the child, passing on the signals that would otherwise stop credwatch first.
async fn wait_forwarding(mut child: Child, signals: &mut Forwarded) -> io::Result<ExitStatus> {
    let pid = child.id();
    let mut exited = tokio::task::spawn_blocking(move || super::gate::wait_for_exit(pid));
    loop {
        tokio::select! {
            result = &mut exited => {
                result.map_err(io::Error::other)??;
                break;
            }
            number = signals.next() => {
                debug!(signal = number, pid, "forwarding signal to the command");
                // SAFETY: the child is not reaped yet (see `wait_for_exit`), so the pid is still its.
                unsafe { libc::kill(pid as libc::pid_t, number) };
            }
        }
    }
    child.wait()
}

/// The signals that stop a foreground program: interrupt, terminate, hangup and quit.
struct Forwarded {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    quit: Signal,
}

impl Forwarded {
    fn install() -> io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    async fn next(&mut self) -> libc::c_int {
        tokio::select! {
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
            _ = self.hangup.recv() => libc::SIGHUP,
            _ = self.quit.recv() => libc::SIGQUIT,
        }
    }
}

/// The command's exit code, or 128 + the signal that killed it, as shells report it.
fn exit_code(status: ExitStatus) -> ExitCode {
    let code = status.code().or_else(|| status.signal().map(|signal| 128 + signal)).unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), ExitCode::from(3));
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), ExitCode::from(137));
    }
}
