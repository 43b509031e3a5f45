//! What each tier's sensors cannot see or cannot refuse, by design of its hooks: one table that
//! the loader (for `status` and the `credwatch_sensor_gaps` metric) and `doctor` both read.

use super::tier::Tier;

/// The sensors one host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sensors {
    pub tier: Tier,
    /// The fanotify file guard runs (tracepoint tier).
    pub file_guard: bool,
    /// The cgroup socket-address hooks are attached (beside the security hooks, the `sendmsg` pair).
    pub socket_hooks: bool,
    /// At least one TLS library's write functions carry the TLS uprobes.
    pub tls: bool,
}

/// A route the sensors miss or cannot refuse, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownGap {
    pub capability: &'static str,
    pub reason: &'static str,
}

/// Whether a gap applies to the sensors a host runs.
type Applies = fn(Sensors) -> bool;

/// Which gaps apply: (capability, reason, applies to).
const GAPS: &[(&str, &str, Applies)] = &[
    (
        "files:mmap_of_earlier_fd",
        "mmap of a secret through an fd opened before its binding: no hook sees a mapping on this tier",
        |sensors| sensors.tier == Tier::Tracepoint,
    ),
    (
        "files:earlier_fd",
        "reads through an fd opened before the watch (dup, inheritance, sendfile): only opens are seen",
        |sensors| sensors.tier == Tier::Tracepoint && !sensors.file_guard,
    ),
    (
        "files:io_uring_open",
        "io_uring IORING_OP_OPENAT opens no file through a syscall the tracepoints see",
        |sensors| sensors.tier == Tier::Tracepoint && !sensors.file_guard,
    ),
    (
        "files:deny",
        "deny kills instead: refusing an open needs the file guard or the LSM or fmod_ret tier",
        |sensors| sensors.tier == Tier::Tracepoint && !sensors.file_guard,
    ),
    (
        "network:deny",
        "a connect outside a task's allowlist is reported, not refused: needs cgroup v2 or the LSM or fmod_ret tier",
        |sensors| sensors.tier == Tier::Tracepoint && !sensors.socket_hooks,
    ),
    (
        "harvest:deny",
        "reaching into a holder is killed, not refused (needs the LSM or fmod_ret tier): a read of its memory (environ, mem, process_vm_readv, a ptrace peek) in the kernel before the copy where the memory hooks run, else by the daemon after it; a ptrace attach by the daemon once the holder stops for its tracer",
        |sensors| sensors.tier == Tier::Tracepoint,
    ),
    (
        "harvest:pidfd_getfd",
        "pidfd_getfd (taking a descriptor from another process) is not seen; a secret file's descriptor taken so is still judged at its first read where the file guard runs",
        |sensors| sensors.tier == Tier::Tracepoint,
    ),
    (
        "self_protection",
        "a task's process may signal or stop the daemon: needs the LSM or fmod_ret tier",
        |sensors| sensors.tier == Tier::Tracepoint,
    ),
    (
        "tls:http2",
        "HTTP/2 requests over TLS are not read: their headers are HPACK-compressed against the connection's state",
        |sensors| sensors.tls,
    ),
    (
        "tls:other_libraries",
        "only the host's OpenSSL 3 and GnuTLS are probed: Go's crypto/tls, rustls, NSS, BoringSSL and statically linked or container-private copies are not seen",
        |sensors| sensors.tls,
    ),
    (
        "tls:before_send",
        "a credential seen in a TLS request is judged by the daemon once the write has begun: the request is not refused, the kill comes after it",
        |sensors| sensors.tls,
    ),
    (
        "network:unconnected_datagram",
        "a datagram sent with an address on an unconnected socket is reported, not refused: needs cgroup v2 for the sendmsg hooks",
        |sensors| sensors.tier.has_security_hooks() && !sensors.socket_hooks,
    ),
];

/// The gaps of `sensors`.
pub fn of(sensors: Sensors) -> Vec<KnownGap> {
    GAPS.iter()
        .filter(|(_, _, applies)| applies(sensors))
        .map(|&(capability, reason, _)| KnownGap { capability, reason })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capabilities(sensors: Sensors) -> Vec<&'static str> {
        of(sensors).into_iter().map(|gap| gap.capability).collect()
    }

    #[test]
    fn the_guard_and_the_hooks_close_their_gaps_and_the_security_hooks_most() {
        let bare = Sensors { tier: Tier::Tracepoint, file_guard: false, socket_hooks: false, tls: false };
        let guarded = Sensors { file_guard: true, socket_hooks: true, ..bare };
        let lsm = Sensors { tier: Tier::Lsm, ..bare };
        let fmod_ret = Sensors { tier: Tier::FmodRet, ..bare };
        assert!(capabilities(bare).contains(&"files:io_uring_open"));
        assert!(capabilities(bare).contains(&"network:deny"));
        assert_eq!(
            capabilities(guarded),
            ["files:mmap_of_earlier_fd", "harvest:deny", "harvest:pidfd_getfd", "self_protection"],
            "what the file guard and the socket hooks leave"
        );
        assert_eq!(capabilities(lsm), ["network:unconnected_datagram"]);
        assert_eq!(capabilities(fmod_ret), capabilities(lsm), "the same hooks");
        assert_eq!(capabilities(Sensors { socket_hooks: true, ..lsm }), [] as [&str; 0], "the sendmsg hooks refuse datagrams");
    }

    #[test]
    fn the_tls_uprobes_state_what_they_do_not_read() {
        let bare = Sensors { tier: Tier::Lsm, file_guard: false, socket_hooks: true, tls: true };
        assert_eq!(capabilities(bare), ["tls:http2", "tls:other_libraries", "tls:before_send"]);
    }
}
