//! The list of active Linux security modules, which must name `bpf` for LSM programs to run.

use std::{fs, io};

use serde::Serialize;

use super::error_detail::ErrorDetail;

/// Comma-separated active LSMs; needs securityfs.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

#[derive(Debug, thiserror::Error)]
#[error("reading {LSM_LIST}")]
pub struct LsmListError(#[source] io::Error);

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LsmListCheck {
    Read { lsms: Vec<String> },
    Failed { error: ErrorDetail },
}

impl LsmListCheck {
    /// Whether BPF LSM programs are called: `CONFIG_BPF_LSM=y` and `bpf` in the `lsm=` list.
    pub fn bpf_active(&self) -> bool {
        match self {
            Self::Read { lsms } => lsms.iter().any(|lsm| lsm == "bpf"),
            Self::Failed { error: _ } => false,
        }
    }
}

pub fn read() -> LsmListCheck {
    match fs::read_to_string(LSM_LIST).map_err(LsmListError) {
        Ok(list) => LsmListCheck::Read { lsms: parse(&list) },
        Err(error) => LsmListCheck::Failed {
            error: ErrorDetail::new(&error),
        },
    }
}

fn parse(list: &str) -> Vec<String> {
    list.trim()
        .split(',')
        .filter(|lsm| !lsm.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_is_found_in_the_list() {
        let check = LsmListCheck::Read {
            lsms: parse("lockdown,capability,landlock,yama,bpf\n"),
        };
        assert!(check.bpf_active());
        assert!(!LsmListCheck::Read {
            lsms: parse("capability,selinux")
        }
        .bpf_active());
    }
}
