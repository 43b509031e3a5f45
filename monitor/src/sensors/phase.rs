//! The steps of bringing a program to life, named in errors and in doctor's report: which one
//! failed says what to look at (the object, the verifier, the hook, ...).

use serde::Serialize;

/// The step of a probe that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Parsing the object and creating its maps.
    Object,
    /// `BPF_PROG_LOAD`: the verifier and the program-type checks.
    Load,
    /// Creating the link or perf event that connects the program to its hook.
    Attach,
    /// Making the hook run.
    Trigger,
    /// Reading what the program recorded.
    Readback,
}

impl Phase {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Object => "object",
            Self::Load => "load",
            Self::Attach => "attach",
            Self::Trigger => "trigger",
            Self::Readback => "readback",
        }
    }
}
