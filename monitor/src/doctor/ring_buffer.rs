//! The ring buffer map that carries every sensor event to userspace.

use aya::maps::MapType;
use serde::Serialize;

use super::error_detail::ErrorDetail;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RingBufferCheck {
    Supported,
    Unsupported,
    Failed { error: ErrorDetail },
}

/// Creates (and closes) a `BPF_MAP_TYPE_RINGBUF` map. Linux 5.8.
pub fn probe() -> RingBufferCheck {
    match aya::sys::is_map_supported(MapType::RingBuf) {
        Ok(true) => RingBufferCheck::Supported,
        Ok(false) => RingBufferCheck::Unsupported,
        Err(error) => RingBufferCheck::Failed {
            error: ErrorDetail::new(&error),
        },
    }
}
