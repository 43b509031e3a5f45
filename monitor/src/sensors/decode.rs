//! Turns ring buffer records into [`Event`]s.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use monitor_common::{
    event::{
        c_bytes, connect::ConnectBody,
        exec::{ExecBody, ExecCapture},
        exit::ExitBody, flags, fork::ForkBody,
        harvest::{kind as harvest_kind, HarvestBody},
        kernel_action,
        secret_open::SecretOpenBody,
        tls::TlsBody,
        Event as Record, EventHeader, EventKind as RecordKind,
    },
    syscalls,
};

use zeroize::Zeroizing;

use crate::procfs::start_time_ns;
use crate::event::{
    Captured, Connect, ConnectSyscall, EnvScan, Event, EventKind, Exec, ExecId, Exit, ExitStatus, Fork, Harvest,
    HarvestKind, InodeId, KernelAction, OpenSyscall, SecretId, SecretOpen, TlsWrite,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {len} bytes is shorter than an event header")]
    NoHeader { len: usize },
    #[error("ring buffer record has unknown event kind {kind}")]
    UnknownKind { kind: u32 },
    #[error("{kind} record of {len} bytes is shorter than its {expected}-byte layout")]
    Short { kind: &'static str, len: usize, expected: usize },
    #[error("{kind} record has unexpected {field} {value}")]
    Field { kind: &'static str, field: &'static str, value: u64 },
}

/// Decodes one record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header = EventHeader::from_bytes(bytes).ok_or(DecodeError::NoHeader { len: bytes.len() })?;
    let record_kind =
        RecordKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind { kind: header.kind })?;
    let kind = match record_kind {
        RecordKind::Exec => {
            let ExecBody { parent_tgid, uid, parent_start_time, filename, argv0 } =
                body::<ExecBody>(record_kind, bytes)?;
            EventKind::Exec(Exec {
                parent: ExecId { tgid: parent_tgid, start_time: start_time_ns(parent_start_time) },
                uid,
                filename: lossy(&filename),
                argv0: lossy(&argv0),
                env: EnvScan::NotScanned,
                tokens: Vec::new(),
                captured: Some(captured(bytes)?),
            })
        }
        RecordKind::Fork => {
            let ForkBody { child_tgid, _pad, child_start_time } = body::<ForkBody>(record_kind, bytes)?;
            EventKind::Fork(Fork { child: ExecId { tgid: child_tgid, start_time: start_time_ns(child_start_time) } })
        }
        RecordKind::Exit => {
            let ExitBody { exit_code, _pad } = body::<ExitBody>(record_kind, bytes)?;
            EventKind::Exit(Exit { status: ExitStatus::from_wait_status(exit_code) })
        }
        RecordKind::SecretOpen => EventKind::SecretOpen(secret_open(body(record_kind, bytes)?)?),
        RecordKind::Harvest => {
            let HarvestBody { kind, target, action, _pad } = body(record_kind, bytes)?;
            let kind = match kind {
                harvest_kind::ENVIRON => HarvestKind::Environ,
                harvest_kind::MEM => HarvestKind::Mem,
                harvest_kind::PTRACE => HarvestKind::Ptrace,
                harvest_kind::VM_READV => HarvestKind::VmReadv,
                other => return Err(field_error(record_kind, "kind", other.into())),
            };
            EventKind::Harvest(Harvest { kind, target, kernel_action: kernel_action(record_kind, action)? })
        }
        RecordKind::Connect => EventKind::Connect(connect(body(record_kind, bytes)?)?),
        RecordKind::TlsWrite => EventKind::TlsWrite(tls_write(bytes)?),
    };
    let EventHeader { kind: _, pid, tgid, flags: header_flags, ktime_ns, start_time } = header;
    Ok(Event {
        ktime_ns,
        process: ExecId { tgid, start_time: start_time_ns(start_time) },
        thread: pid,
        truncated: header_flags & flags::TRUNCATED != 0,
        read_failed: header_flags & flags::READ_FAILED != 0,
        kind,
    })
}

fn kernel_action(kind: RecordKind, action: u32) -> Result<KernelAction, DecodeError> {
    match action {
        kernel_action::NONE => Ok(KernelAction::None),
        kernel_action::KILLED => Ok(KernelAction::Killed),
        kernel_action::DENIED => Ok(KernelAction::Denied),
        other => Err(field_error(kind, "action", other.into())),
    }
}

fn field_error(kind: RecordKind, field: &'static str, value: u64) -> DecodeError {
    DecodeError::Field { kind: kind.name(), field, value }
}

fn secret_open(body: SecretOpenBody) -> Result<SecretOpen, DecodeError> {
    let SecretOpenBody { secret, syscall, fd, dev, ino, caller_task, binding: _, action, _pad, path } =
        body;
    let syscall = open_syscall(syscall);
    let kernel_action = kernel_action(RecordKind::SecretOpen, action)?;
    Ok(SecretOpen {
        secret: SecretId(secret),
        inode: InodeId { dev: user_dev(dev), ino },
        syscall,
        path: lossy(&path),
        resolved_path: String::new(),
        fd,
        kernel_action,
        caller_task,
    })
}

/// The route to a secret of syscall `nr` (x86_64 numbering).
pub fn open_syscall(nr: u32) -> OpenSyscall {
    match nr {
        syscalls::OPEN => OpenSyscall::Open,
        syscalls::CREAT => OpenSyscall::Creat,
        syscalls::OPENAT => OpenSyscall::Openat,
        syscalls::OPENAT2 => OpenSyscall::Openat2,
        syscalls::OPEN_BY_HANDLE_AT => OpenSyscall::OpenByHandleAt,
        syscalls::IO_URING_ENTER => OpenSyscall::IoUring,
        syscalls::READ | syscalls::PREAD64 | syscalls::READV | syscalls::PREADV | syscalls::PREADV2 => {
            OpenSyscall::Read
        }
        syscalls::SENDFILE => OpenSyscall::Sendfile,
        syscalls::SPLICE | syscalls::COPY_FILE_RANGE => OpenSyscall::Splice,
        syscalls::MMAP => OpenSyscall::Mmap,
        syscalls::EXECVE | syscalls::EXECVEAT => OpenSyscall::Exec,
        _ => OpenSyscall::Other,
    }
}

/// The kernel's internal `dev_t` (`major << 20 | minor`) as `stat(2)` reports it.
pub fn user_dev(kernel_dev: u32) -> u64 {
    libc::makedev(kernel_dev >> 20, kernel_dev & 0xf_ffff)
}

/// `stat(2)`'s `st_dev` in the kernel's internal encoding, as `super_block::s_dev` holds it.
pub fn kernel_dev(user_dev: u64) -> u32 {
    (libc::major(user_dev) << 20) | (libc::minor(user_dev) & 0xf_ffff)
}

const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;

fn connect(body: ConnectBody) -> Result<Connect, DecodeError> {
    let ConnectBody { syscall, addr_len: _, addr, action } = body;
    let syscall = match syscall {
        syscalls::CONNECT => ConnectSyscall::Connect,
        syscalls::SENDTO => ConnectSyscall::Sendto,
        syscalls::SENDMSG => ConnectSyscall::Sendmsg,
        other => return Err(field_error(RecordKind::Connect, "syscall", other.into())),
    };
    let family = u16::from_ne_bytes([addr[0], addr[1]]);
    let port = u16::from_be_bytes([addr[2], addr[3]]);
    let destination = match family {
        AF_INET => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]), port)),
        AF_INET6 => {
            let mut ip = [0; 16];
            ip.copy_from_slice(&addr[8..24]);
            let scope = u32::from_ne_bytes([addr[24], addr[25], addr[26], addr[27]]);
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, scope))
        }
        other => return Err(field_error(RecordKind::Connect, "family", other.into())),
    };
    Ok(Connect { syscall, destination, kernel_action: kernel_action(RecordKind::Connect, action)? })
}

fn body<T: Copy>(kind: RecordKind, bytes: &[u8]) -> Result<T, DecodeError> {
    Record::<T>::from_bytes(bytes).map(|record| record.body).ok_or(DecodeError::Short {
        kind: kind.name(),
        len: bytes.len(),
        expected: std::mem::size_of::<Record<T>>(),
    })
}

/// The blocks that follow an exec record's body.
fn captured(bytes: &[u8]) -> Result<Captured, DecodeError> {
    let head = std::mem::size_of::<Record<ExecBody>>();
    let short = |expected| DecodeError::Short { kind: RecordKind::Exec.name(), len: bytes.len(), expected };
    let sizes = bytes.get(head..head + CAPTURE_LEN).ok_or_else(|| short(head + CAPTURE_LEN))?;
    // SAFETY: `ExecCapture` is a repr(C) struct of u32s, valid for any bits; the length is checked.
    let ExecCapture { argv_len, env_len, argv_size, env_size } = unsafe { std::ptr::read_unaligned(sizes.as_ptr().cast()) };
    let start = head + CAPTURE_LEN;
    let (argv_end, env_end) = (start + argv_len as usize, start + argv_len as usize + env_len as usize);
    let blocks = bytes.get(start..env_end).ok_or_else(|| short(env_end))?;
    let (argv, env) = blocks.split_at(argv_end - start);
    Ok(Captured {
        argv: Zeroizing::new(argv.to_vec()),
        env: Zeroizing::new(env.to_vec()),
        argv_cut: argv_size > argv_len,
        env_cut: env_size > env_len,
    })
}

/// The plaintext that follows a TLS write record's body.
fn tls_write(bytes: &[u8]) -> Result<TlsWrite, DecodeError> {
    let TlsBody { len, caller_task } = body::<TlsBody>(RecordKind::TlsWrite, bytes)?;
    let head = std::mem::size_of::<Record<TlsBody>>();
    let end = head + len as usize;
    let data = bytes.get(head..end).ok_or(DecodeError::Short { kind: RecordKind::TlsWrite.name(), len: bytes.len(), expected: end })?;
    Ok(TlsWrite { caller_task, captured: Some(Zeroizing::new(data.to_vec())), ..TlsWrite::default() })
}

const CAPTURE_LEN: usize = std::mem::size_of::<ExecCapture>();

fn lossy(field: &[u8]) -> String {
    String::from_utf8_lossy(c_bytes(field)).into_owned()
}

#[cfg(test)]
mod tests {
    use monitor_common::event::{
        connect::SOCKADDR_LEN,
        exec::{ARGV0_LEN, FILENAME_LEN},
        secret_open::PATH_LEN,
    };

    use super::*;

    /// One clock tick in ns (USER_HZ = 100 on every Linux architecture).
    const TICK: u64 = 10_000_000;

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain repr(C) value of integers and arrays.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
            .to_vec()
    }

    fn header(kind: RecordKind, flags: u32) -> EventHeader {
        EventHeader { kind: kind as u32, pid: 12, tgid: 11, flags, ktime_ns: 1000, start_time: 77 * TICK }
    }

    #[test]
    fn exec_record_decodes_strings_and_parent() {
        let mut filename = [0; FILENAME_LEN];
        filename[..7].copy_from_slice(b"/bin/sh");
        let mut argv0 = [0; ARGV0_LEN];
        argv0[..2].copy_from_slice(b"sh");
        let record = Record {
            header: header(RecordKind::Exec, flags::TRUNCATED),
            body: ExecBody { parent_tgid: 1, uid: 1000, parent_start_time: 5 * TICK + 3, filename, argv0 },
        };
        let (argv, env) = (b"sh\0-c\0".as_slice(), b"A=1\0".as_slice());
        let sizes = ExecCapture { argv_len: 6, env_len: 4, argv_size: 6, env_size: 9 };
        let mut bytes = bytes_of(&record);
        bytes.extend(bytes_of(&sizes));
        assert!(decode(&bytes).is_err(), "the blocks announced are missing");
        bytes.extend_from_slice(argv);
        bytes.extend_from_slice(env);
        let event = decode(&bytes).unwrap();
        assert_eq!(event.process, ExecId { tgid: 11, start_time: 77 * TICK });
        assert_eq!(event.thread, 12);
        assert!(event.truncated);
        assert!(!event.read_failed);
        assert_eq!(
            event.kind,
            EventKind::Exec(Exec {
                parent: ExecId { tgid: 1, start_time: 5 * TICK },
                uid: 1000,
                filename: "/bin/sh".into(),
                argv0: "sh".into(),
                env: EnvScan::NotScanned,
                tokens: Vec::new(),
                captured: Some(Captured {
                    argv: Zeroizing::new(argv.to_vec()),
                    env: Zeroizing::new(env.to_vec()),
                    argv_cut: false,
                    env_cut: true,
                }),
            })
        );
    }

    #[test]
    fn a_tls_write_record_carries_its_captured_plaintext() {
        let record = Record { header: header(RecordKind::TlsWrite, 0), body: TlsBody { len: 5, caller_task: 3 } };
        let mut bytes = bytes_of(&record);
        bytes.extend_from_slice(b"GET /");
        assert!(decode(&bytes[..bytes.len() - 1]).is_err(), "the plaintext announced is missing");
        let EventKind::TlsWrite(write) = decode(&bytes).unwrap().kind else { panic!("not a TLS write") };
        assert_eq!(write.captured.as_deref().map(Vec::as_slice), Some(&b"GET /"[..]));
        assert!(write.server.is_none() && write.credentials.is_empty(), "filled in by the daemon's scan");
        assert_eq!(write.caller_task, 3);
    }

    #[test]
    fn exit_and_fork_records_decode() {
        let exit = Record { header: header(RecordKind::Exit, 0), body: ExitBody { exit_code: 7 << 8, _pad: 0 } };
        assert_eq!(decode(&bytes_of(&exit)).unwrap().kind, EventKind::Exit(Exit { status: ExitStatus::Exited(7) }));
        let fork = Record {
            header: header(RecordKind::Fork, 0),
            body: ForkBody { child_tgid: 13, _pad: 0, child_start_time: 78 * TICK },
        };
        assert_eq!(
            decode(&bytes_of(&fork)).unwrap().kind,
            EventKind::Fork(Fork { child: ExecId { tgid: 13, start_time: 78 * TICK } })
        );
    }

    #[test]
    fn malformed_records_are_errors() {
        assert_eq!(decode(&[0; 3]), Err(DecodeError::NoHeader { len: 3 }));
        let mut unknown = bytes_of(&header(RecordKind::Exit, 0));
        unknown[0] = 200;
        assert_eq!(decode(&unknown), Err(DecodeError::UnknownKind { kind: 200 }));
        let short = bytes_of(&header(RecordKind::Exec, 0));
        assert!(matches!(decode(&short), Err(DecodeError::Short { kind: "exec", .. })));
    }

    #[test]
    fn secret_open_record_decodes_inode_path_and_action() {
        let mut path = [0; PATH_LEN];
        path[..9].copy_from_slice(b"../.aws/c");
        let record = Record {
            header: header(RecordKind::SecretOpen, 0),
            body: SecretOpenBody {
                secret: 4,
                syscall: syscalls::OPENAT2,
                fd: 3,
                dev: (8 << 20) | 1,
                ino: 1234,
                caller_task: 2,
                binding: 1,
                action: kernel_action::KILLED,
                _pad: 0,
                path,
            },
        };
        assert_eq!(
            decode(&bytes_of(&record)).unwrap().kind,
            EventKind::SecretOpen(SecretOpen {
                secret: SecretId(4),
                inode: InodeId { dev: libc::makedev(8, 1), ino: 1234 },
                syscall: OpenSyscall::Openat2,
                path: "../.aws/c".into(),
                resolved_path: String::new(),
                fd: 3,
                kernel_action: KernelAction::Killed,
                caller_task: 2,
            })
        );
    }

    #[test]
    fn lsm_routes_decode_to_their_syscall_kind() {
        let body = |syscall, action| SecretOpenBody {
            secret: 1,
            syscall,
            fd: -1,
            dev: 1,
            ino: 2,
            caller_task: 2,
            binding: 1,
            action,
            _pad: 0,
            path: [0; PATH_LEN],
        };
        for (syscall, expected) in [
            (syscalls::IO_URING_ENTER, OpenSyscall::IoUring),
            (syscalls::SENDFILE, OpenSyscall::Sendfile),
            (syscalls::PREAD64, OpenSyscall::Read),
            (syscalls::MMAP, OpenSyscall::Mmap),
            (syscalls::EXECVE, OpenSyscall::Exec),
            (u32::MAX, OpenSyscall::Other),
        ] {
            let record = Record { header: header(RecordKind::SecretOpen, 0), body: body(syscall, kernel_action::DENIED) };
            let event = decode(&bytes_of(&record)).unwrap();
            let EventKind::SecretOpen(open) = event.kind else { panic!("{event:?}") };
            assert_eq!((open.syscall, open.fd, open.kernel_action), (expected, -1, KernelAction::Denied));
        }
        let harvest = Record {
            header: header(RecordKind::Harvest, 0),
            body: HarvestBody { kind: harvest_kind::MEM, target: 9, action: kernel_action::DENIED, _pad: 0 },
        };
        assert_eq!(
            decode(&bytes_of(&harvest)).unwrap().kind,
            EventKind::Harvest(Harvest { kind: HarvestKind::Mem, target: 9, kernel_action: KernelAction::Denied })
        );
    }

    #[test]
    fn device_numbers_convert_both_ways() {
        for (major, minor) in [(0, 0), (8, 1), (259, 3), (0, 0x4_0001)] {
            let user = libc::makedev(major, minor);
            assert_eq!(user_dev(kernel_dev(user)), user, "{major}:{minor}");
        }
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
    }

    fn sockaddr(bytes: &[u8]) -> [u8; SOCKADDR_LEN] {
        let mut addr = [0; SOCKADDR_LEN];
        addr[..bytes.len()].copy_from_slice(bytes);
        addr
    }

    #[test]
    fn connect_records_decode_ipv4_and_ipv6() {
        let v4 = sockaddr(&[2, 0, 0x01, 0xbb, 127, 0, 0, 1]);
        let record = Record {
            header: header(RecordKind::Connect, 0),
            body: ConnectBody { syscall: syscalls::CONNECT, addr_len: 16, addr: v4, action: kernel_action::DENIED },
        };
        assert_eq!(
            decode(&bytes_of(&record)).unwrap().kind,
            EventKind::Connect(Connect {
                syscall: ConnectSyscall::Connect,
                destination: "127.0.0.1:443".parse().unwrap(),
                kernel_action: KernelAction::Denied,
            }),
            "refused by socket_connect on the LSM or fmod_ret tier"
        );
        let mut v6 = vec![10, 0, 0, 53, 0, 0, 0, 0];
        v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        let record = Record {
            header: header(RecordKind::Connect, 0),
            body: ConnectBody { syscall: syscalls::SENDTO, addr_len: 28, addr: sockaddr(&v6), action: 0 },
        };
        assert_eq!(
            decode(&bytes_of(&record)).unwrap().kind,
            EventKind::Connect(Connect {
                syscall: ConnectSyscall::Sendto,
                destination: "[::1]:53".parse().unwrap(),
                kernel_action: KernelAction::None,
            })
        );
        let unix = Record {
            header: header(RecordKind::Connect, 0),
            body: ConnectBody { syscall: syscalls::CONNECT, addr_len: 2, addr: sockaddr(&[1, 0]), action: 0 },
        };
        assert_eq!(
            decode(&bytes_of(&unix)),
            Err(DecodeError::Field { kind: "connect", field: "family", value: 1 })
        );
    }
}
