//! Kernel function addresses from /proc/kallsyms (root sees real addresses).

use std::{
    fs::File,
    io::BufReader,
};

use monitor_common::{
    event::harvest::kind,
    offsets::{CodeRange, KernelSymbols, REACH_CODE_RANGES},
};

const KALLSYMS: &str = "/proc/kallsyms";

/// The functions that copy another process's memory for each harvest route, as the memory hooks
/// find them on the kernel stack. Several per route where the compiler may inline one into the
/// next (`mem_rw` into `mem_read`, `ptrace_access_vm` into the peeks); a name matches with or
/// without a `.constprop.0`-like suffix.
const REACH_FUNCTIONS: [(&str, u32); 11] = [
    ("environ_read", kind::ENVIRON),
    ("mem_rw", kind::MEM),
    ("mem_read", kind::MEM),
    ("mem_write", kind::MEM),
    ("process_vm_rw_core", kind::VM_READV),
    ("process_vm_rw", kind::VM_READV),
    ("ptrace_access_vm", kind::PTRACE),
    ("generic_ptrace_peekdata", kind::PTRACE),
    ("generic_ptrace_pokedata", kind::PTRACE),
    ("ptrace_readdata", kind::PTRACE),
    ("ptrace_writedata", kind::PTRACE),
];

/// The routes the memory hooks must tell apart, each by at least one function.
const ROUTES: [(u32, &str); 4] = [
    (kind::ENVIRON, "environ_read"),
    (kind::MEM, "mem_rw"),
    (kind::VM_READV, "process_vm_rw"),
    (kind::PTRACE, "ptrace_access_vm"),
];

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("cannot read {KALLSYMS}")]
    Read(#[source] std::io::Error),
    #[error("{KALLSYMS}:{line}: malformed address {address:?}")]
    Address { line: usize, address: String },
    #[error("{KALLSYMS} has no {0} (or hides addresses: kernel.kptr_restrict, not root)")]
    Missing(&'static str),
    #[error("{KALLSYMS} has {0} functions that copy another process's memory; the sensors keep {REACH_CODE_RANGES}")]
    TooMany(usize),
}

/// What was found: the open functions, which the `/proc` open checks need, and the memory copying
/// functions, which only the memory hooks need (`reach` says whether every route has one).
pub struct Resolved {
    pub symbols: KernelSymbols,
    pub reach: Result<(), KallsymsError>,
}

/// The addresses the harvest sensors compare `f_op->open` and kernel stacks with.
pub fn resolve() -> Result<Resolved, KallsymsError> {
    let file = File::open(KALLSYMS).map_err(KallsymsError::Read)?;
    parse(BufReader::new(file))
}

fn parse(reader: impl std::io::BufRead) -> Result<Resolved, KallsymsError> {
    let mut symbols = KernelSymbols::default();
    // Every function's start: the next one after a function's start is where it ends.
    let mut text = Vec::new();
    let mut reach = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(KallsymsError::Read)?;
        // "ffffffff8177de00 t environ_open"; a module's symbols end in "\t[module]".
        let mut fields = line.split_whitespace();
        let (Some(address), Some(symbol_type), Some(name), None) = (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !matches!(symbol_type, "t" | "T") {
            continue;
        }
        let start = u64::from_str_radix(address, 16)
            .map_err(|_| KallsymsError::Address { line: index + 1, address: address.to_owned() })?;
        text.push(start);
        match name {
            "environ_open" => symbols.environ_open = start,
            "mem_open" => symbols.mem_open = start,
            _ => {
                let base = name.split('.').next().unwrap_or(name);
                if let Some(&(_, route)) = REACH_FUNCTIONS.iter().find(|(function, _)| *function == base) {
                    reach.push((start, route));
                }
            }
        }
    }
    let KernelSymbols { environ_open, mem_open, .. } = symbols;
    for (name, address) in [("environ_open", environ_open), ("mem_open", mem_open)] {
        if address == 0 {
            return Err(KallsymsError::Missing(name));
        }
    }
    text.sort_unstable();
    reach.sort_unstable();
    reach.dedup();
    reach.retain(|&(start, _)| start != 0);
    let complete = if reach.len() > REACH_CODE_RANGES {
        Err(KallsymsError::TooMany(reach.len()))
    } else {
        for (slot, &(start, route)) in symbols.reach_code.iter_mut().zip(&reach) {
            let next = text.partition_point(|&address| address <= start);
            let end = text.get(next).copied().unwrap_or(start);
            *slot = CodeRange { start, end, kind: route, _pad: 0 };
        }
        match ROUTES.iter().find(|(route, _)| !reach.iter().any(|(_, found)| found == route)) {
            Some(&(_, function)) => Err(KallsymsError::Missing(function)),
            None => Ok(()),
        }
    };
    Ok(Resolved { symbols, reach: complete })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "ffffffff81000000 T _text
ffffffff81371750 T ptrace_access_vm
ffffffff81371800 T ptrace_readdata
ffffffff81371900 T ptrace_request
ffffffff816324d0 t process_vm_rw_core.constprop.0
ffffffff81632a00 t process_vm_rw
ffffffff81632b00 T __x64_sys_process_vm_readv
ffffffff8177dd40 t mem_open
ffffffff8177de00 t environ_open
ffffffff817a6b80 t environ_read
ffffffff817a6d00 d environ_data
ffffffff817a6e00 t environ_lseek
ffffffff817a72b0 t mem_rw
ffffffff817a7590 t mem_write
ffffffff817a75b0 t mem_read
ffffffff817a7600 t mem_lseek
ffffffffc0001000 t environ_read\t[some_module]
";

    #[test]
    fn finds_the_open_functions_and_the_routes_code() {
        let Resolved { symbols, reach } = parse(TEXT.as_bytes()).unwrap();
        reach.unwrap();
        assert_eq!((symbols.environ_open, symbols.mem_open), (0xffffffff8177de00, 0xffffffff8177dd40));
        let ranges: Vec<_> =
            symbols.reach_code.iter().filter(|range| range.start != 0).map(|r| (r.start, r.end, r.kind)).collect();
        assert_eq!(
            ranges,
            [
                (0xffffffff81371750, 0xffffffff81371800, kind::PTRACE),
                (0xffffffff81371800, 0xffffffff81371900, kind::PTRACE),
                (0xffffffff816324d0, 0xffffffff81632a00, kind::VM_READV),
                (0xffffffff81632a00, 0xffffffff81632b00, kind::VM_READV),
                // A data symbol does not end a function; a module's namesake is not the kernel's.
                (0xffffffff817a6b80, 0xffffffff817a6e00, kind::ENVIRON),
                (0xffffffff817a72b0, 0xffffffff817a7590, kind::MEM),
                (0xffffffff817a7590, 0xffffffff817a75b0, kind::MEM),
                (0xffffffff817a75b0, 0xffffffff817a7600, kind::MEM),
            ]
        );
    }

    #[test]
    fn hidden_addresses_are_an_error() {
        let hidden = TEXT.lines().map(|line| format!("0000000000000000{}\n", &line[16..])).collect::<String>();
        assert!(matches!(parse(hidden.as_bytes()), Err(KallsymsError::Missing("environ_open"))));
    }

    #[test]
    fn a_route_without_its_code_leaves_the_open_functions() {
        let text = TEXT.lines().filter(|line| !line.contains("ptrace_")).collect::<Vec<_>>().join("\n");
        let Resolved { symbols, reach } = parse(text.as_bytes()).unwrap();
        assert!(matches!(reach, Err(KallsymsError::Missing("ptrace_access_vm"))));
        assert_ne!(symbols.environ_open, 0);
    }

    #[test]
    fn more_functions_than_slots_are_refused_not_cut() {
        let extra: String = (0..REACH_CODE_RANGES).map(|n| format!("ffffffff8190{n:04x} t environ_read.part.{n}\n")).collect();
        let Resolved { reach, .. } = parse(format!("{TEXT}{extra}").as_bytes()).unwrap();
        assert!(matches!(reach, Err(KallsymsError::TooMany(_))), "{reach:?}");
    }

    #[test]
    fn a_malformed_address_names_the_line() {
        let error = parse("zz t mem_open\n".as_bytes()).err().unwrap().to_string();
        assert_eq!(error, "/proc/kallsyms:1: malformed address \"zz\"");
    }

    #[test]
    fn this_kernel_has_them() {
        let Resolved { symbols, reach } = resolve().expect("root reads /proc/kallsyms");
        reach.expect("every route's code");
        assert!(symbols.reach_code.iter().filter(|range| range.start != 0).all(|range| range.start < range.end));
    }
}
