use std::process::ExitCode;

use clap::Parser as _;
use monitor::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    monitor::cli::init_tracing(cli.log.as_deref(), cli.log_format);
    let result = match cli.command {
        Command::Run(args) => monitor::cli::run::main(args),
        Command::Demo(args) => monitor::cli::demo::main(args),
        Command::Doctor(args) => monitor::cli::doctor::main(args),
        Command::Task(args) => monitor::cli::task::main(args),
        Command::Findings(args) => monitor::cli::findings::main(args),
        Command::Status(args) => monitor::cli::status::main(args),
        Command::Replay(args) => monitor::cli::replay::main(args),
        Command::Baseline(args) => monitor::cli::baseline::main(args),
        Command::Completions(args) => monitor::cli::completions::main(args),
        Command::Manpages(args) => monitor::cli::manpages::main(args),
        Command::BenchFloor(args) => monitor::cli::bench_floor::main(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("credwatch: {err}");
            let mut source = std::error::Error::source(&*err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
