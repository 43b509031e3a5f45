//! What the host has, read from its tools' output. Pure functions, so that the "missing" paths of
//! `setup` are tested without uninstalling anything.

use std::path::Path;

/// Whether an os-release file describes Debian or a derivative (Ubuntu, Mint, …), whose apt
/// archives are the ones `setup` knows the package names for.
pub fn is_debian_like(os_release: &str) -> bool {
    let id = os_release_value(os_release, "ID").unwrap_or_default();
    let id_like = os_release_value(os_release, "ID_LIKE").unwrap_or_default();
    std::iter::once(id.as_str())
        .chain(id_like.split_whitespace())
        .any(|id| id == "debian" || id == "ubuntu")
}

/// The distribution's name for messages: `PRETTY_NAME`, else `ID`.
pub fn os_name(os_release: &str) -> String {
    os_release_value(os_release, "PRETTY_NAME")
        .or_else(|| os_release_value(os_release, "ID"))
        .unwrap_or_else(|| "an unknown system (no /etc/os-release)".to_owned())
}

/// `KEY=value` or `KEY="value"` (os-release(5) allows both quote styles).
fn os_release_value(os_release: &str, key: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        let (k, value) = line.trim().split_once('=')?;
        if k != key {
            return None;
        }
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|&q| value.strip_prefix(q)?.strip_suffix(q))
            .unwrap_or(value);
        Some(unquoted.to_owned())
    })
}

/// The packages of `wanted` that `dpkg-query -W -f='${Package}\t${Status}\n'` does not report as
/// installed. dpkg prints nothing for a package it has never heard of, and a removed package
/// keeps a line such as `deinstall ok config-files`.
pub fn missing_packages<'a>(wanted: &[&'a str], dpkg_output: &str) -> Vec<&'a str> {
    let installed: Vec<&str> = dpkg_output
        .lines()
        .filter_map(|line| {
            let (name, status) = line.split_once('\t')?;
            let name = name.split(':').next().unwrap_or(name); // multi-arch `name:arch`
            (status.split_whitespace().nth(2) == Some("installed")).then_some(name)
        })
        .collect();
    wanted
        .iter()
        .copied()
        .filter(|package| !installed.contains(package))
        .collect()
}

/// The directory toolchain `name` stands for, from `rustup toolchain list -v`, whose lines read
/// `NAME [(active, default)] PATH` (older rustup: `NAME\tPATH`).
pub fn toolchain_dir<'a>(list: &'a str, name: &str) -> Option<&'a Path> {
    list.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(name)?;
        if !rest.starts_with(char::is_whitespace) {
            return None; // `debian-bpf-old` is not `debian-bpf`
        }
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix('(') {
            Some(flags) => flags.split_once(')')?.1.trim_start(),
            None => rest,
        };
        (!rest.is_empty()).then(|| Path::new(rest.trim_end()))
    })
}

/// Major version of the shared libLLVM that `ldd` resolved for a binary (`libLLVM.so.22.1` or
/// `libLLVM-19.so.1`), if any. A library ldd could not find counts as not linked: the binary
/// would not start.
pub fn linked_llvm_major(ldd_output: &str) -> Option<u32> {
    ldd_output.lines().find_map(|line| {
        let (library, resolved) = line.trim().split_once("=>")?;
        if resolved.trim_start().starts_with("not found") {
            return None;
        }
        let version = library.trim().strip_prefix("libLLVM")?;
        version
            .split(|c: char| !c.is_ascii_digit())
            .find(|part| !part.is_empty())?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_and_derivatives_are_recognised() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nID=debian\n";
        let ubuntu = "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\n";
        let mint = "ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n";
        let quoted = "ID='debian'\n";
        for os_release in [debian, ubuntu, mint, quoted] {
            assert!(is_debian_like(os_release), "{os_release}");
        }
        assert_eq!(os_name(debian), "Debian GNU/Linux 12 (bookworm)");
    }

    #[test]
    fn other_distros_are_not_debian() {
        let fedora = "NAME=\"Fedora Linux\"\nID=fedora\nPRETTY_NAME=\"Fedora Linux 40\"\n";
        let arch = "NAME=\"Arch Linux\"\nID=arch\n";
        let debianish_name = "ID=debianlike-but-not\n";
        for os_release in [fedora, arch, debianish_name, ""] {
            assert!(!is_debian_like(os_release), "{os_release}");
        }
        assert_eq!(os_name(arch), "arch");
        assert!(os_name("").contains("unknown"));
    }

    #[test]
    fn dpkg_statuses() {
        let wanted = ["rustc-web", "cargo-web", "bpftool", "clang", "llvm-22-dev"];
        let output = "rustc-web\tinstall ok installed\n\
                      cargo-web\tdeinstall ok config-files\n\
                      bpftool:amd64\tinstall ok installed\n\
                      clang\tinstall ok half-configured\n";
        assert_eq!(
            missing_packages(&wanted, output),
            ["cargo-web", "clang", "llvm-22-dev"]
        );
        assert_eq!(missing_packages(&wanted, ""), wanted);
        let all = wanted
            .map(|p| format!("{p}\tinstall ok installed\n"))
            .concat();
        assert!(missing_packages(&wanted, &all).is_empty());
    }

    #[test]
    fn rustup_toolchain_list() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default) /root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu\n\
                    debian-bpf-old /opt/old\n\
                    debian-bpf /usr\n";
        assert_eq!(toolchain_dir(list, "debian-bpf"), Some(Path::new("/usr")));
        assert_eq!(
            toolchain_dir("debian-bpf (active) /usr/\n", "debian-bpf"),
            Some(Path::new("/usr"))
        );
        assert_eq!(
            toolchain_dir("debian-bpf\t/opt/rust\n", "debian-bpf"),
            Some(Path::new("/opt/rust"))
        );
        assert_eq!(
            toolchain_dir(
                "stable-x86_64-unknown-linux-gnu (default) /x\n",
                "debian-bpf"
            ),
            None
        );
        assert_eq!(
            toolchain_dir("no installed toolchains\n", "debian-bpf"),
            None
        );
    }

    #[test]
    fn ldd_llvm_versions() {
        let llvm22 = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                      \tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007ff192e00000)\n\
                      \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n";
        assert_eq!(linked_llvm_major(llvm22), Some(22));
        let llvm19 = "\tlibLLVM-19.so.1 => /usr/lib/x86_64-linux-gnu/libLLVM-19.so.1 (0x00007f)\n";
        assert_eq!(linked_llvm_major(llvm19), Some(19));
        assert_eq!(linked_llvm_major("\tlibLLVM.so.22.1 => not found\n"), None);
        assert_eq!(
            linked_llvm_major("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n"),
            None
        );
        assert_eq!(linked_llvm_major("\tnot a dynamic executable\n"), None);
    }
}
