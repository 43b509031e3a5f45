//! `credwatch bench-floor` (hidden from `--help`): holds empty eBPF programs on syscall hooks
//! until its stdin closes. `cargo xtask bench` runs it as "the floor": what the hooks alone cost,
//! against which the sensors' own work on the same hooks is judged.

use std::{io::Read as _, process::ExitCode};

use aya::programs::{ProgramError, RawTracePoint, TracePoint};

use super::CommandError;
use crate::doctor::hooks;

#[derive(Debug, clap::Args)]
pub struct BenchFloorArgs {
    /// Which hooks to hold.
    #[arg(long, value_enum)]
    pub hooks: FloorHooks,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FloorHooks {
    /// Raw tracepoints `sys_enter` and `sys_exit`: the sensors' syscall hooks.
    RawSyscalls,
    /// The per-syscall tracepoint `syscalls/sys_exit_openat`.
    OpenatTracepoint,
}

#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("program `{0}` is not in the probe object")]
    MissingProgram(&'static str),
    #[error("loading or attaching `{program}`")]
    Attach {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
}

pub fn main(args: BenchFloorArgs) -> Result<ExitCode, CommandError> {
    let BenchFloorArgs { hooks: floor } = args;
    let btf = aya::Btf::from_sys_fs().ok();
    // The floor programs do not read the target tgid.
    let mut ebpf = hooks::load_object(btf.as_ref(), 0)?;
    match floor {
        FloorHooks::RawSyscalls => {
            for (program, tracepoint) in [("floor_sys_enter", "sys_enter"), ("floor_sys_exit", "sys_exit")] {
                let raw: &mut RawTracePoint = program_of(&mut ebpf, program)?;
                raw.load().and_then(|()| raw.attach(tracepoint).map(drop)).map_err(attach_error(program))?;
            }
        }
        FloorHooks::OpenatTracepoint => {
            let program = "floor_sys_exit_openat";
            let tracepoint: &mut TracePoint = program_of(&mut ebpf, program)?;
            tracepoint
                .load()
                .and_then(|()| tracepoint.attach("syscalls", "sys_exit_openat").map(drop))
                .map_err(attach_error(program))?;
        }
    }
    println!("attached");
    // The caller closes our stdin (or dies) to end the run; dropping `ebpf` detaches.
    std::io::stdin().read_to_end(&mut Vec::new())?;
    Ok(ExitCode::SUCCESS)
}

fn program_of<'a, P>(ebpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut P, FloorError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(FloorError::MissingProgram(name))?;
    program.try_into().map_err(attach_error(name))
}

fn attach_error(program: &'static str) -> impl FnOnce(ProgramError) -> FloorError {
    move |source| FloorError::Attach { program, source }
}
