//! `credwatch demo`: a newcomer's tour in under a minute. It runs the real daemon (real kernel
//! sensors) on a throwaway HOME with a fake token, and shows an agent using its token, a second
//! agent reusing it and being killed, and a third process harvesting an agent's environment.

use std::{
    os::unix::process::ExitStatusExt as _,
    path::Path,
    process::{ExitCode, ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use serde_json::Value;
use tokio::{io::AsyncWriteExt as _, process::Command, sync::mpsc, sync::oneshot};

use super::CommandError;
use crate::{
    api::ApiConfig,
    catalogue::CatalogueConfig,
    config::Config,
    daemon::{
        control::{Caller, ControlMessage, ControlRequest, ResolvedHosts, TaskRequest},
        metrics::Metrics,
        outputs, Daemon, DaemonOptions,
    },
};

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  sudo credwatch demo")]
pub struct DemoArgs {}

pub fn main(args: DemoArgs) -> Result<ExitCode, CommandError> {
    let DemoArgs {} = args;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(demo())
}

/// A random value shaped like a GitHub token. It is planted, never printed.
fn fake_token() -> Result<String, std::io::Error> {
    let mut bytes = [0u8; 18];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(format!("ghp_demo{}", bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>()))
}

async fn demo() -> Result<ExitCode, CommandError> {
    let scratch = std::env::temp_dir().join(format!("credwatch-demo-{}", std::process::id()));
    let result = tour(&scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn tour(scratch: &Path) -> Result<ExitCode, CommandError> {
    let home = scratch.join("home");
    std::fs::create_dir_all(home.join(".config/gh"))?;
    let token_file = home.join(".config/gh/hosts.yml");
    let token = fake_token()?;
    std::fs::write(&token_file, format!("github.com:\n    oauth_token: {token}\n"))?;
    println!("1. Planted a fake GitHub token in {} (a throwaway HOME).", token_file.display());

    let config = Config {
        state_dir: scratch.join("state"),
        api: ApiConfig { socket: scratch.join("api.sock"), ..ApiConfig::default() },
        catalogue: CatalogueConfig { homes: Some(vec![home.clone()]), ..CatalogueConfig::default() },
        ..Config::default()
    };
    let (exports, _records) = outputs::channel();
    let daemon = Daemon::start(DaemonOptions {
        config: config.daemon(),
        ring_buffer_bytes: 4 << 20,
        record: None,
        metrics: Arc::new(Metrics::default()),
        exports,
    })?;
    let mut findings = daemon.feed().subscribe();
    println!("2. Started the daemon: kernel sensors attached, {} watched.", token_file.display());

    let (control, requests) = mpsc::channel(8);
    let (stop, stopped) = oneshot::channel::<()>();
    let daemon_run = daemon.run(requests, async {
        let _ = stopped.await;
        "end of demo"
    });
    let steps = async {
        let result = steps(&control, &home, &token_file, &token).await;
        let _ = stop.send(());
        result
    };
    let (daemon_result, steps_result) = tokio::join!(daemon_run, steps);
    daemon_result?;
    steps_result?;

    println!("\nFindings:");
    let mut count = 0;
    while let Ok(line) = findings.try_recv() {
        let finding: Value = serde_json::from_str(&line)?;
        count += 1;
        let actions: Vec<String> = finding["actions"]
            .as_array()
            .map(|actions| actions.iter().map(|a| format!("{}={}", a["action"].as_str().unwrap_or("?"), a["result"].as_str().unwrap_or("?"))).collect())
            .unwrap_or_default();
        println!(
            "  {:<18} {:<9} pid {:<7} task {:<8} secret {} [{}] {}",
            finding["rule"].as_str().unwrap_or("?"),
            finding["severity"].as_str().unwrap_or("?"),
            finding["process"]["pid"],
            finding["task"].as_str().unwrap_or("-"),
            finding["secret"]["name"].as_str().unwrap_or("?"),
            finding["secret"]["fingerprint_prefix"].as_str().unwrap_or("-"),
            actions.join(" "),
        );
    }
    println!("\n{count} findings. No secret value was logged, recorded or printed: findings carry names and fingerprint prefixes.");
    Ok(ExitCode::SUCCESS)
}

/// Asks the daemon something, as the API would on behalf of root outside any task.
async fn ask(control: &mpsc::Sender<ControlMessage>, request: ControlRequest) -> Result<Value, CommandError> {
    let (reply, answer) = oneshot::channel();
    control.send(ControlMessage { request, reply }).await.map_err(|_| "the daemon stopped")?;
    Ok(answer.await.map_err(|_| "the daemon stopped")??)
}

fn me() -> Caller {
    Caller { pid: std::process::id(), uid: 0, gid: 0 }
}

/// A shell held at a gate (a `read`) until it has been registered as a task's root.
struct Gated(tokio::process::Child);

impl Gated {
    fn spawn(script: &str, home: &Path, env: &[(&str, &str)]) -> Result<Self, CommandError> {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("read _; {script}"))
            .current_dir(home)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self(child))
    }

    fn pid(&self) -> u32 {
        self.0.id().unwrap_or(0)
    }

    async fn release(mut self) -> Result<ExitStatus, CommandError> {
        if let Some(mut stdin) = self.0.stdin.take() {
            // A process killed before it read the gate makes this write fail: that is fine.
            let _ = stdin.write_all(b"go\n").await;
        }
        Ok(self.0.wait().await?)
    }
}

async fn start_task(
    control: &mpsc::Sender<ControlMessage>,
    id: &str,
    root: u32,
    secrets: Vec<String>,
    env: Vec<String>,
) -> Result<(), CommandError> {
    let request = TaskRequest { secrets, env, owner: Some("demo".to_owned()), ..TaskRequest::new(id, root) };
    ask(control, ControlRequest::StartTask { request, caller: me(), hosts: ResolvedHosts::default() }).await?;
    Ok(())
}

async fn steps(control: &mpsc::Sender<ControlMessage>, home: &Path, token_file: &Path, token: &str) -> Result<(), CommandError> {
    let secret = token_file.display().to_string();
    let agent = Gated::spawn("exec cat .config/gh/hosts.yml", home, &[])?;
    start_task(control, "agent-a", agent.pid(), vec![secret.clone()], Vec::new()).await?;
    let status = agent.release().await?;
    println!("3. Task agent-a was granted the token and read it: {}.", describe(status));

    let rogue = Gated::spawn("exec cat .config/gh/hosts.yml", home, &[])?;
    start_task(control, "agent-b", rogue.pid(), Vec::new(), Vec::new()).await?;
    let status = rogue.release().await?;
    println!(
        "4. Task agent-b tried to reuse agent-a's token: {} — killed in the kernel at the open, before it read a byte.",
        describe(status)
    );

    // The token reaches the holder under a name that is not a secret's, and becomes
    // GITHUB_TOKEN only once the holder belongs to agent-c: the shell waiting at the gate is in
    // no task yet, and would otherwise be an (honest) untasked use of the token.
    let holder = Gated::spawn(
        "export GITHUB_TOKEN=\"$DEMO_VALUE\"; unset DEMO_VALUE; exec sleep 20",
        home,
        &[("DEMO_VALUE", token)],
    )?;
    let holder_pid = holder.pid();
    start_task(control, "agent-c", holder_pid, Vec::new(), vec!["GITHUB_TOKEN".to_owned()]).await?;
    let holder = tokio::spawn(holder.release());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let harvester = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec cat /proc/{holder_pid}/environ"))
        .stdout(Stdio::null())
        .status()
        .await?;
    println!(
        "5. A process outside any task read agent-c's /proc/{holder_pid}/environ (GITHUB_TOKEN inside): {}; reported as a harvest (the LSM tier can refuse it).",
        describe(harvester)
    );
    holder.abort();
    // SAFETY: ending the demo's own child.
    unsafe { libc::kill(holder_pid as i32, libc::SIGKILL) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    ask(control, ControlRequest::Status).await?;
    Ok(())
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(0), _) => "it ran".to_owned(),
        (Some(code), _) => format!("exited {code}"),
        (None, Some(9)) => "SIGKILL".to_owned(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "ended".to_owned(),
    }
}
