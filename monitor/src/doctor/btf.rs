//! The kernel's own BTF, which `tp_btf`, fentry and LSM programs are loaded against.

use aya::Btf;
use serde::Serialize;

use super::error_detail::ErrorDetail;

/// Where `CONFIG_DEBUG_INFO_BTF=y` kernels (5.4+) publish their type information.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BtfCheck {
    Parsed {
        path: &'static str,
    },
    Failed {
        path: &'static str,
        error: ErrorDetail,
    },
}

/// Parses [`VMLINUX`]; the probes get the parsed BTF when it succeeds.
pub fn load() -> (BtfCheck, Option<Btf>) {
    match Btf::from_sys_fs() {
        Ok(btf) => (BtfCheck::Parsed { path: VMLINUX }, Some(btf)),
        Err(error) => (
            BtfCheck::Failed {
                path: VMLINUX,
                error: ErrorDetail::new(&error),
            },
            None,
        ),
    }
}
