//! `credwatch task`: register, end and list tasks through the daemon's task API.

mod exec;
mod gate;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use serde_json::Value;

use super::{
    render,
    socket::{self, SocketArgs},
    CommandError,
};
use crate::daemon::control::{duration_text, EgressMode, TaskRequest};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  credwatch task exec --id review-42 --secret ~/.aws/credentials --ttl 15m -- ./agent.sh
  credwatch task start --id ci-1234 --pid 4242 --env GITHUB_TOKEN --allow api.github.com:443
  credwatch task list
  credwatch task end ci-1234")]
pub struct TaskArgs {
    #[command(subcommand)]
    pub command: TaskCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TaskCommand {
    /// Run a command as a task: registered before it starts, ended when it exits.
    Exec(exec::ExecArgs),
    /// Register a running process (and its future children), or a cgroup, as a task.
    Start(StartArgs),
    /// End a task: its secrets become unusable for anyone (post_task_reuse).
    End(EndArgs),
    /// List the daemon's tasks.
    List(ListArgs),
}

/// What a task is granted; shared by `exec` and `start`.
#[derive(Debug, clap::Args)]
pub struct GrantArgs {
    /// A secret file granted to the task (repeatable); relative paths are from the current
    /// directory.
    #[arg(long = "secret", value_name = "PATH")]
    pub secrets: Vec<PathBuf>,
    /// An environment variable granted to the task, by name (repeatable).
    #[arg(long = "env", value_name = "NAME")]
    pub env: Vec<String>,
    /// Where the task's secret holders may connect (repeatable): CIDR, IP, HOST:PORT, IP:PORT,
    /// CIDR:PORT or [IPv6]:PORT. Without --allow: anywhere.
    #[arg(long = "allow", value_name = "DEST")]
    pub allow: Vec<String>,
    /// The task's secret holders may connect nowhere.
    #[arg(long, conflicts_with = "allow")]
    pub no_destinations: bool,
    /// Time to live, e.g. 90s, 15m, 2h, 1d; after it, using the task's secrets is post-task reuse.
    #[arg(long, value_parser = duration_text::parse)]
    pub ttl: Option<Duration>,
    /// Who the task is for (an agent or user name); default: your uid.
    #[arg(long)]
    pub owner: Option<String>,
}

impl GrantArgs {
    /// The request for task `id`, without its root process or cgroup.
    pub fn request(self, id: String) -> Result<TaskRequest, CommandError> {
        let Self { secrets, env, allow, no_destinations, ttl, owner } = self;
        let secrets = secrets
            .into_iter()
            .map(|path| {
                // The daemon resolves paths from its own directory, not the caller's.
                let absolute = std::path::absolute(&path)?;
                absolute
                    .into_os_string()
                    .into_string()
                    .map_err(|_| format!("secret path {} is not UTF-8", path.display()).into())
            })
            .collect::<Result<Vec<String>, CommandError>>()?;
        let allow = if no_destinations { Some(Vec::new()) } else { Some(allow).filter(|allow| !allow.is_empty()) };
        Ok(TaskRequest { id, root_pid: None, cgroup: None, secrets, env, allow, ttl, owner, egress: EgressMode::Direct })
    }
}

#[derive(Debug, clap::Args)]
#[command(
    group = clap::ArgGroup::new("root").required(true).multiple(true).args(["pid", "cgroup"]),
    after_help = "\
Examples:
  credwatch task start --id ci-1234 --pid 4242 --secret /etc/ci/deploy-key --ttl 1h
  credwatch task start --id agent-7 --cgroup /sys/fs/cgroup/agents/7 --allow 10.0.0.0/8")]
pub struct StartArgs {
    /// The task's id: 1 to 128 of A-Z a-z 0-9 . _ : -
    #[arg(long)]
    pub id: String,
    /// The task's root process; its children from now on belong to the task.
    #[arg(long)]
    pub pid: Option<u32>,
    /// A cgroup v2 directory whose processes are the task.
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<String>,
    #[command(flatten)]
    pub grants: GrantArgs,
    #[command(flatten)]
    pub api: SocketArgs,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  credwatch task end ci-1234")]
pub struct EndArgs {
    /// The task's id.
    pub id: String,
    #[command(flatten)]
    pub api: SocketArgs,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  credwatch task list\n  credwatch task list --json | jq '.'")]
pub struct ListArgs {
    /// Print the daemon's reply as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: SocketArgs,
}

pub fn main(args: TaskArgs) -> Result<ExitCode, CommandError> {
    match args.command {
        TaskCommand::Exec(args) => exec::main(args),
        TaskCommand::Start(args) => socket::block_on(start(args))?,
        TaskCommand::End(args) => socket::block_on(end(args))?,
        TaskCommand::List(args) => socket::block_on(list(args))?,
    }
}

async fn start(args: StartArgs) -> Result<ExitCode, CommandError> {
    let StartArgs { id, pid, cgroup, grants, api } = args;
    let request = TaskRequest { root_pid: pid, cgroup, ..grants.request(id)? };
    let reply = api.client().start_task(&request).await?;
    render::print(&render::key_values(&render::flatten(&reply)))?;
    Ok(ExitCode::SUCCESS)
}

async fn end(args: EndArgs) -> Result<ExitCode, CommandError> {
    let EndArgs { id, api } = args;
    let reply = api.client().end_task(&id).await?;
    render::print(&render::key_values(&render::flatten(&reply)))?;
    Ok(ExitCode::SUCCESS)
}

async fn list(args: ListArgs) -> Result<ExitCode, CommandError> {
    let ListArgs { json, api } = args;
    let reply = api.client().list_tasks().await?;
    let text = if json { format!("{reply:#}\n") } else { tasks_table(&reply) };
    render::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// One row per task, one column per field any task has (in the order first seen). The reply is
/// a list of tasks, or an object holding one under `tasks`.
fn tasks_table(reply: &Value) -> String {
    let tasks = match reply {
        Value::Array(tasks) => tasks,
        Value::Object(fields) => match fields.get("tasks") {
            Some(Value::Array(tasks)) => tasks,
            _ => return render::key_values(&render::flatten(reply)),
        },
        other => return format!("{}\n", render::cell(other)),
    };
    if tasks.is_empty() {
        return "no tasks\n".to_owned();
    }
    let mut columns: Vec<&str> = Vec::new();
    for task in tasks {
        for name in task.as_object().into_iter().flat_map(|fields| fields.keys()) {
            if !columns.contains(&name.as_str()) {
                columns.push(name);
            }
        }
    }
    // `id` first: it is what a person looks for and passes to `task end`.
    if let Some(position) = columns.iter().position(|&name| name == "id") {
        columns[..=position].rotate_right(1);
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|task| columns.iter().map(|&name| render::cell(task.get(name).unwrap_or(&Value::Null))).collect())
        .collect();
    let header: Vec<String> = columns.iter().map(|name| name.to_uppercase()).collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    render::table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use serde_json::json;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> TaskCommand {
        match Cli::try_parse_from(std::iter::once("credwatch").chain(args.iter().copied())).unwrap().command {
            Command::Task(TaskArgs { command }) => command,
            other => panic!("not a task command: {other:?}"),
        }
    }

    #[test]
    fn exec_builds_the_request_with_absolute_secret_paths() {
        let TaskCommand::Exec(args) = parse(&[
            "task",
            "exec",
            "--id",
            "t1",
            "--secret",
            "creds.json",
            "--secret",
            "/etc/key",
            "--env",
            "GH_TOKEN",
            "--ttl",
            "15m",
            "--",
            "sh",
            "-c",
            "exit 3",
        ]) else {
            panic!("not exec");
        };
        assert_eq!(args.command, ["sh", "-c", "exit 3"]);
        let request = args.grants.request("t1".into()).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(request.secrets, [cwd.join("creds.json").to_str().unwrap(), "/etc/key"]);
        assert_eq!((request.ttl, request.allow), (Some(Duration::from_secs(900)), None));
        assert_eq!(request.env, ["GH_TOKEN"]);
    }

    #[test]
    fn allow_lists_absent_given_and_empty_differ() {
        let request = |extra: &[&str]| {
            let args = [&["task", "start", "--id", "t", "--pid", "1"], extra].concat();
            let TaskCommand::Start(StartArgs { grants, .. }) = parse(&args) else { panic!("not start") };
            grants.request("t".into()).unwrap().allow
        };
        assert_eq!(request(&[]), None);
        assert_eq!(
            request(&["--allow", "10.0.0.0/8", "--allow", "h:443"]),
            Some(vec!["10.0.0.0/8".into(), "h:443".into()])
        );
        assert_eq!(request(&["--no-destinations"]), Some(vec![]));
    }

    #[test]
    fn bad_options_are_refused_before_any_request() {
        let parse_error = |args: &[&str]| Cli::try_parse_from([&["credwatch"], args].concat()).unwrap_err().to_string();
        assert!(parse_error(&["task", "exec", "--id", "t", "--ttl", "15x", "--", "true"]).contains("unknown unit"));
        assert!(parse_error(&["task", "start", "--id", "t"]).contains("--pid"));
        assert!(parse_error(&["task", "exec", "--id", "t"]).contains("COMMAND"));
    }

    #[test]
    fn lists_tasks_as_a_table_with_the_id_first() {
        let reply = json!({"tasks": [
            {"state": "active", "id": "a", "secrets": ["/x", "/y"]},
            {"state": "ended", "id": "b", "ttl": "900s"},
        ]});
        assert_eq!(
            tasks_table(&reply),
            "ID  SECRETS  STATE   TTL\na   /x,/y    active  -\nb   -        ended   900s\n"
        );
        assert_eq!(tasks_table(&json!([])), "no tasks\n");
    }
}
