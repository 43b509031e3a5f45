//! Kernel function addresses from /proc/kallsyms (root sees real addresses).

use std::{
    fs::File,
    io::BufReader,
};

use monitor_common::offsets::KernelSymbols;

const KALLSYMS: &str = "/proc/kallsyms";

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("cannot read {KALLSYMS}")]
    Read(#[source] std::io::Error),
    #[error("{KALLSYMS}:{line}: malformed address {address:?}")]
    Address { line: usize, address: String },
    #[error("{KALLSYMS} has no {0} (or hides addresses: kernel.kptr_restrict, not root)")]
    Missing(&'static str),
}

/// The addresses the harvest sensor compares `f_op->open` with.
pub fn resolve() -> Result<KernelSymbols, KallsymsError> {
    let file = File::open(KALLSYMS).map_err(KallsymsError::Read)?;
    parse(BufReader::new(file))
}

fn parse(reader: impl std::io::BufRead) -> Result<KernelSymbols, KallsymsError> {
    let mut symbols = KernelSymbols::default();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(KallsymsError::Read)?;
        // "ffffffff8177de00 t environ_open" with an optional "\t[module]" suffix.
        let mut fields = line.split_whitespace();
        let (Some(address), Some(_kind), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let slot = match name {
            "environ_open" => &mut symbols.environ_open,
            "mem_open" => &mut symbols.mem_open,
            _ => continue,
        };
        *slot = u64::from_str_radix(address, 16)
            .map_err(|_| KallsymsError::Address { line: index + 1, address: address.to_owned() })?;
    }
    let KernelSymbols { environ_open, mem_open } = symbols;
    for (name, address) in [("environ_open", environ_open), ("mem_open", mem_open)] {
        if address == 0 {
            return Err(KallsymsError::Missing(name));
        }
    }
    Ok(symbols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_both_functions() {
        let text = "ffffffff81000000 T _text\nffffffff8177dd40 t mem_open\nffffffff8177de00 t environ_open\n";
        assert_eq!(
            parse(text.as_bytes()).unwrap(),
            KernelSymbols { environ_open: 0xffffffff8177de00, mem_open: 0xffffffff8177dd40 }
        );
    }

    #[test]
    fn hidden_addresses_are_an_error() {
        let text = "0000000000000000 t mem_open\n0000000000000000 t environ_open\n";
        assert!(matches!(parse(text.as_bytes()), Err(KallsymsError::Missing("environ_open"))));
    }

    #[test]
    fn a_malformed_address_names_the_line() {
        let error = parse("zz t mem_open\n".as_bytes()).unwrap_err().to_string();
        assert_eq!(error, "/proc/kallsyms:1: malformed address \"zz\"");
    }

    #[test]
    fn this_kernel_has_them() {
        resolve().expect("root reads /proc/kallsyms");
    }
}
