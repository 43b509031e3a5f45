//! Who may use the task API: the peer's credentials (`SO_PEERCRED`, taken at `connect`) checked
//! against the configured uids and gids.

use std::{io, os::fd::AsRawFd};

use hyper::StatusCode;
use tokio::net::UnixStream;

use super::error::Rejection;
use crate::daemon::control::Caller;

#[derive(Clone, Debug)]
pub struct Allowlist {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

/// A connected peer as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// `None` when the peer's pid is not visible from the daemon's pid namespace.
    pub pid: Option<u32>,
    /// Supplementary groups (`SO_PEERGROUPS`), read only when gids are allowlisted.
    pub groups: Vec<u32>,
}

impl Peer {
    pub fn of(stream: &UnixStream, allowlist: &Allowlist) -> io::Result<Self> {
        let credentials = stream.peer_cred()?;
        let groups = if allowlist.gids.is_empty() { Vec::new() } else { peer_groups(stream)? };
        Ok(Self {
            uid: credentials.uid(),
            gid: credentials.gid(),
            // A peer in a pid namespace the daemon cannot see has pid 0.
            pid: credentials.pid().and_then(|pid| u32::try_from(pid).ok()).filter(|&pid| pid != 0),
            groups,
        })
    }
}

impl Allowlist {
    /// The caller the daemon is told about, or 403.
    pub fn admit(&self, peer: &Peer) -> Result<Caller, Rejection> {
        let Peer { uid, gid, pid, groups } = peer;
        let allowed = self.uids.contains(uid) || std::iter::once(gid).chain(groups).any(|gid| self.gids.contains(gid));
        if !allowed {
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                format!("uid {uid} (gid {gid}) may not use the task API; the daemon's [api] allow_uids and allow_gids say who may"),
            ));
        }
        // The daemon refuses callers inside a task by pid; an unknown pid could not be checked.
        let Some(pid) = *pid else {
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "the caller's pid is not visible from the daemon's pid namespace",
            ));
        };
        Ok(Caller { pid, uid: *uid, gid: *gid })
    }
}

/// The peer's supplementary groups at `connect` time (Linux 4.13+).
fn peer_groups(stream: &UnixStream) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut length = libc::socklen_t::try_from(groups.len() * size_of::<libc::gid_t>())
            .map_err(|_| io::Error::other("too many supplementary groups"))?;
        // SAFETY: the buffer is valid for `length` bytes, and the kernel writes at most that many.
        let result = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut length,
            )
        };
        let count = length as usize / size_of::<libc::gid_t>();
        if result == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let error = io::Error::last_os_error();
        // ERANGE: the kernel wrote the size it needs into `length`.
        if error.raw_os_error() != Some(libc::ERANGE) || count <= groups.len() {
            return Err(error);
        }
        groups.resize(count, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, pid: Option<u32>, groups: &[u32]) -> Peer {
        Peer { uid, gid, pid, groups: groups.to_vec() }
    }

    #[test]
    fn admits_allowlisted_uids_and_gids_only() {
        let allowlist = Allowlist { uids: vec![0], gids: vec![990] };
        assert_eq!(allowlist.admit(&peer(0, 0, Some(42), &[])), Ok(Caller { pid: 42, uid: 0, gid: 0 }));
        assert_eq!(allowlist.admit(&peer(1000, 990, Some(7), &[])).map(|caller| caller.uid), Ok(1000));
        assert!(allowlist.admit(&peer(1000, 1000, Some(7), &[4, 990])).is_ok());

        let refused = allowlist.admit(&peer(65534, 65534, Some(7), &[])).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.message.contains("uid 65534"), "{}", refused.message);
    }

    #[test]
    fn refuses_a_peer_whose_pid_is_unknown() {
        let allowlist = Allowlist { uids: vec![0], gids: vec![] };
        let refused = allowlist.admit(&peer(0, 0, None, &[])).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.message.contains("pid namespace"));
    }

    #[tokio::test]
    async fn reads_our_own_credentials_from_a_socket_pair() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let allowlist = Allowlist { uids: vec![], gids: vec![u32::MAX] };
        let peer = Peer::of(&ours, &allowlist).unwrap();
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!((peer.uid, peer.gid, peer.pid), (uid, gid, Some(std::process::id())));
    }
}
