//! Programs attached as `fmod_ret` (`BPF_MODIFY_RETURN`) to a kernel function: the fmod_ret tier's
//! hooks, and doctor's probe of them.
//!
//! aya 0.14 loads no such program, so their instructions are taken from the object here, linked
//! and relocated against the maps aya already created for it (so both sides share every map), and
//! loaded and attached with the `bpf` syscall. Needs Linux 5.7+ with BTF and BPF trampolines; the
//! kernel allows fmod_ret only on `security_*` functions and error-injection points.

use std::{
    collections::HashSet,
    ffi::CString,
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use aya::{
    maps::{Map, MapData},
    Btf, Ebpf,
};
use super::phase::Phase;
use aya_obj::{
    btf::BtfKind,
    generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_type},
    Object,
};

/// Verifier log size when a load is retried to explain a refusal.
const LOG_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FmodRetError {
    #[error("parsing the eBPF object")]
    Parse(#[source] aya_obj::ParseError),
    #[error("map {0} of the object was not created by the loader, or is of a kind not relocated here")]
    Map(String),
    #[error("relocating the eBPF object")]
    Relocate(#[source] aya_obj::relocation::EbpfRelocationError),
    #[error("eBPF object has no program {0}")]
    MissingProgram(String),
    #[error("kernel function {function} is not in the kernel's BTF")]
    Function {
        function: String,
        #[source]
        source: aya_obj::btf::BtfError,
    },
    #[error("loading {program} as fmod_ret on {function} (BPF_PROG_LOAD){log}")]
    Load {
        program: String,
        function: String,
        log: String,
        #[source]
        source: io::Error,
    },
    #[error("attaching {program} to {function} (BPF_RAW_TRACEPOINT_OPEN)")]
    Attach {
        program: String,
        function: String,
        #[source]
        source: io::Error,
    },
}

impl FmodRetError {
    /// The step that failed, for doctor.
    pub const fn phase(&self) -> Phase {
        match self {
            Self::Parse(_) | Self::Map(_) | Self::Relocate(_) | Self::MissingProgram(_) => Phase::Object,
            Self::Function { .. } | Self::Load { .. } => Phase::Load,
            Self::Attach { .. } => Phase::Attach,
        }
    }
}

/// An object's programs, linked and relocated against the maps of an [`Ebpf`] loaded from it.
pub struct Linked {
    object: Object,
}

/// A program attached to its function; dropping it detaches and unloads the program.
pub struct Attached {
    _link: OwnedFd,
    _program: OwnedFd,
}

impl Linked {
    /// `bytes` must be the object `ebpf` was loaded from, before any of its maps were taken.
    pub fn new(bytes: &[u8], ebpf: &Ebpf) -> Result<Self, FmodRetError> {
        let mut object = Object::parse(bytes).map_err(FmodRetError::Parse)?;
        let maps = object.maps.clone();
        let mut fds = Vec::with_capacity(maps.len());
        for name in maps.keys() {
            let fd = ebpf.map(name).and_then(map_fd).ok_or_else(|| FmodRetError::Map(name.clone()))?;
            fds.push((name.as_str(), fd, &maps[name]));
        }
        let text_sections: HashSet<usize> = object.functions.keys().map(|&(section, _)| section).collect();
        object.relocate_maps(fds.into_iter(), &text_sections).map_err(FmodRetError::Relocate)?;
        object.relocate_calls(&text_sections).map_err(FmodRetError::Relocate)?;
        Ok(Self { object })
    }

    /// Loads `program` as fmod_ret on kernel function `function` and attaches it.
    pub fn attach(&self, program: &str, function: &str, btf: &Btf) -> Result<Attached, FmodRetError> {
        let found = self.object.programs.get(program).ok_or_else(|| FmodRetError::MissingProgram(program.to_owned()))?;
        let code = &self.object.functions[&(found.section_index, found.address)].instructions;
        let btf_id = btf
            .id_by_type_name_kind(function, BtfKind::Func)
            .map_err(|source| FmodRetError::Function { function: function.to_owned(), source })?;
        let program_fd = load(program, code, &self.object.license, btf_id).map_err(|(source, log)| FmodRetError::Load {
            program: program.to_owned(),
            function: function.to_owned(),
            log,
            source,
        })?;
        let link = attach(&program_fd)
            .map_err(|source| FmodRetError::Attach { program: program.to_owned(), function: function.to_owned(), source })?;
        Ok(Attached { _link: link, _program: program_fd })
    }
}

/// The fd of a map of a kind the sensors' and probes' objects hold.
fn map_fd(map: &Map) -> Option<RawFd> {
    let data: &MapData = match map {
        Map::Array(data)
        | Map::HashMap(data)
        | Map::LruHashMap(data)
        | Map::LpmTrie(data)
        | Map::PerCpuArray(data)
        | Map::PerCpuHashMap(data)
        | Map::RingBuf(data) => data,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}

/// `BPF_PROG_LOAD` of a tracing program with the `BPF_MODIFY_RETURN` attach type; on refusal, the
/// load is retried with the verifier's log, which is returned beside the error.
fn load(name: &str, code: &[bpf_insn], license: &CString, btf_id: u32) -> Result<OwnedFd, (io::Error, String)> {
    let attempt = |log: &mut [u8]| {
        // SAFETY: an all-zero `bpf_attr` is the kernel's "unset" for every field.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the `BPF_PROG_LOAD` member of the zeroed union.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.prog_type = bpf_prog_type::BPF_PROG_TYPE_TRACING as u32;
        load.expected_attach_type = bpf_attach_type::BPF_MODIFY_RETURN as u32;
        load.attach_btf_id = btf_id;
        load.insns = code.as_ptr() as u64;
        load.insn_cnt = code.len() as u32;
        load.license = license.as_ptr() as u64;
        for (slot, byte) in load.prog_name.iter_mut().zip(name.bytes().take(15)) {
            *slot = byte as std::ffi::c_char;
        }
        if !log.is_empty() {
            load.log_level = 1;
            load.log_buf = log.as_mut_ptr() as u64;
            load.log_size = log.len() as u32;
        }
        bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
    };
    attempt(&mut []).or_else(|error| {
        let mut log = vec![0u8; LOG_BYTES];
        let retried = attempt(&mut log);
        let end = log.iter().position(|&byte| byte == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]);
        // The verifier's verdict is at the end of its log.
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        let tail = tail.into_iter().rev().collect::<Vec<_>>().join(" / ");
        match retried {
            Ok(fd) => Ok(fd),
            Err(_) if tail.is_empty() => Err((error, String::new())),
            Err(_) => Err((error, format!("; the verifier's log ends: {tail}"))),
        }
    })
}

/// Attaches a loaded tracing program to the function it was loaded for (Linux 5.5+).
fn attach(program: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero `bpf_attr` is the kernel's "unset" for every field.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // A tracing program takes no tracepoint name.
    attr.raw_tracepoint.prog_fd = program.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr)
}

fn bpf(command: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid `bpf_attr` for `command`, and outlives the call.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, command as libc::c_long, attr as *mut bpf_attr, std::mem::size_of::<bpf_attr>())
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
