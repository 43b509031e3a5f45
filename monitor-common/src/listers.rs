//! Process listers: procps `ps` opens and reads every `/proc/PID/environ` to build its table,
//! whatever its options, and prints an environment only when asked to (the BSD `e` option). A
//! lister that is not asked is no harvester; the kernel tells the two apart at exec from the
//! executable's inode (the daemon's `[harvest] listers`) and the argument block parsed here, and
//! the same code is unit-tested against the real `ps`.

use crate::maps::InodeKey;

/// Most lister executables the daemon configures.
pub const LISTERS_MAX: usize = 8;

/// Most bytes of an argument block parsed; a longer one is judged as asking (what is cut is
/// unknown).
pub const ARGV_SCAN: usize = 512;

/// The lister executables, set by the daemon before load (unused slots zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listers {
    pub count: u32,
    pub _pad: u32,
    pub exes: [InodeKey; LISTERS_MAX],
}

impl Listers {
    pub const NONE: Self = Self { count: 0, _pad: 0, exes: [InodeKey { dev: 0, _pad: 0, ino: 0 }; LISTERS_MAX] };

    /// Whether `exe` is one of the listers.
    #[inline(always)]
    pub fn contains(&self, exe: InodeKey) -> bool {
        let mut index = 0;
        while index < LISTERS_MAX {
            if index as u32 >= self.count {
                return false;
            }
            if self.exes[index] == exe {
                return true;
            }
            index += 1;
        }
        false
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), two u32 then `InodeKey`s (u32, u32, u64): no padding, every bit pattern valid.
unsafe impl aya::Pod for Listers {}

/// What a byte is to the parser, by byte value.
mod class {
    pub const NUL: u8 = 0;
    pub const DASH: u8 = 1;
    pub const E: u8 = 2;
    /// Takes an argument as a Unix option (after one `-`) and as a BSD one (no dash): the rest
    /// of the word, or the next word when the letter ends it.
    pub const TAKER: u8 = 3;
    /// Takes an argument as a Unix option only.
    pub const UNIX_TAKER: u8 = 4;
    /// Takes an argument as a BSD option only.
    pub const BSD_TAKER: u8 = 5;
    pub const OTHER: u8 = 6;
    pub const COUNT: usize = 8;
}

const fn class_of(byte: u8) -> u8 {
    match byte {
        0 => class::NUL,
        b'-' => class::DASH,
        b'e' => class::E,
        b'O' | b'U' | b'o' | b'p' | b'q' | b't' => class::TAKER,
        b'C' | b'D' | b'G' | b'g' | b's' | b'u' => class::UNIX_TAKER,
        b'k' => class::BSD_TAKER,
        _ => class::OTHER,
    }
}

/// Where the parser is in the argument block.
mod state {
    /// In the program name.
    pub const PROGRAM: u8 = 0;
    /// At the start of a word that is no option's argument.
    pub const START: u8 = 1;
    /// After a word's single leading dash.
    pub const DASH: u8 = 2;
    /// In a Unix word, no argument-taking letter yet.
    pub const UNIX: u8 = 3;
    /// In a Unix word whose first argument-taking letter is the last byte so far.
    pub const UNIX_TAKER_LAST: u8 = 4;
    /// In a Unix word after its argument-taking letter: the rest is the argument.
    pub const UNIX_TAKEN: u8 = 5;
    /// In a long option (`--sort`): never takes the next word here.
    pub const LONG: u8 = 6;
    /// In a BSD word, no argument-taking letter yet.
    pub const BSD: u8 = 7;
    pub const BSD_TAKER_LAST: u8 = 8;
    pub const BSD_TAKEN: u8 = 9;
    /// In the word an option takes as its argument.
    pub const ARGUMENT: u8 = 10;
    /// An `e` in a BSD word: the environment is shown (absorbing).
    pub const SHOWN: u8 = 11;
    pub const COUNT: usize = 16;
}

/// The next state from each state, by byte class (`NUL`, `DASH`, `E`, `TAKER`, `UNIX_TAKER`,
/// `BSD_TAKER`, `OTHER`). An `e` anywhere in a BSD word counts, even inside an argument there
/// (`oe`): erring towards a harvest.
const fn next(state: u8, class: u8) -> u8 {
    use state::*;
    let row: [u8; 7] = match state {
        PROGRAM => [START, PROGRAM, PROGRAM, PROGRAM, PROGRAM, PROGRAM, PROGRAM],
        START => [START, DASH, SHOWN, BSD_TAKER_LAST, BSD, BSD_TAKER_LAST, BSD],
        DASH => [START, LONG, UNIX, UNIX_TAKER_LAST, UNIX_TAKER_LAST, UNIX, UNIX],
        UNIX => [START, UNIX, UNIX, UNIX_TAKER_LAST, UNIX_TAKER_LAST, UNIX, UNIX],
        UNIX_TAKER_LAST => [ARGUMENT, UNIX_TAKEN, UNIX_TAKEN, UNIX_TAKEN, UNIX_TAKEN, UNIX_TAKEN, UNIX_TAKEN],
        UNIX_TAKEN => [START, UNIX_TAKEN, UNIX_TAKEN, UNIX_TAKEN, UNIX_TAKEN, UNIX_TAKEN, UNIX_TAKEN],
        LONG => [START, LONG, LONG, LONG, LONG, LONG, LONG],
        BSD => [START, BSD, SHOWN, BSD_TAKER_LAST, BSD, BSD_TAKER_LAST, BSD],
        BSD_TAKER_LAST => [ARGUMENT, BSD_TAKEN, SHOWN, BSD_TAKEN, BSD_TAKEN, BSD_TAKEN, BSD_TAKEN],
        BSD_TAKEN => [START, BSD_TAKEN, SHOWN, BSD_TAKEN, BSD_TAKEN, BSD_TAKEN, BSD_TAKEN],
        ARGUMENT => [START, ARGUMENT, ARGUMENT, ARGUMENT, ARGUMENT, ARGUMENT, ARGUMENT],
        _ => [SHOWN; 7],
    };
    row[class as usize]
}

/// Byte classes and transitions as tables, so that the kernel's parse is one lookup per byte
/// with no branch on the data: the verifier then follows 512 bytes cheaply.
const CLASSES: [u8; 256] = {
    let mut table = [0; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = class_of(byte as u8);
        byte += 1;
    }
    table
};

const TRANSITIONS: [u8; state::COUNT * class::COUNT] = {
    let mut table = [state::SHOWN; state::COUNT * class::COUNT];
    let mut from = 0;
    while from < state::COUNT {
        let mut class = 0;
        while class < 7 {
            table[from * class::COUNT + class] = next(from as u8, class as u8);
            class += 1;
        }
        from += 1;
    }
    table
};

/// Whether procps `ps` run with the NUL-separated argument block `argv` (its first word the
/// program name) may print an environment. Errs towards yes: a BSD-style word holding an `e`
/// (not an option's argument), a word naming the `environ` column, or a block longer than
/// [`ARGV_SCAN`] counts, so that a false answer is never a harvest let through, and a lister with
/// unusual options is at worst judged as a harvester. A long option (`--sort`) never takes the
/// next word here, so `ps --sort user` counts; `--sort=user` does not.
#[inline(always)]
pub fn shows_environment(argv: &[u8]) -> bool {
    if argv.len() > ARGV_SCAN {
        return true;
    }
    let mut state = state::PROGRAM;
    // The last seven bytes read, to find "environ" in any word (`-o environ`).
    let mut window = 0u64;
    let mut index = 0;
    while index < ARGV_SCAN && index < argv.len() {
        let byte = argv[index];
        index += 1;
        state = step(state, byte);
        window = (window << 8 | byte as u64) & 0x00ff_ffff_ffff_ffff;
        if window == ENVIRON {
            return true;
        }
    }
    // A block without its final NUL ends its last word here.
    step(state, 0) == state::SHOWN
}

#[inline(always)]
fn step(state: u8, byte: u8) -> u8 {
    let class = CLASSES[byte as usize] as usize & (class::COUNT - 1);
    TRANSITIONS[(state as usize & (state::COUNT - 1)) * class::COUNT + class]
}

/// Most bytes of an environment block searched for loader variables; a longer one is judged as
/// holding one.
pub const ENV_SCAN: usize = 8 << 10;

/// Whether the environment block `env` (its first `len` bytes: NUL-separated `NAME=value`
/// entries) sets a variable of the dynamic loader (`LD_PRELOAD`, `LD_AUDIT`, `LD_LIBRARY_PATH`,
/// any `LD_*`), which would run code of the caller's choosing inside a lister; also when `len`
/// is over [`ENV_SCAN`]. Without a branch on the data (a window compared by arithmetic), so that
/// the verifier follows the whole scan as one path.
#[inline(always)]
pub fn loads_code(env: &[u8; ENV_SCAN], len: usize) -> bool {
    if len > ENV_SCAN {
        return true;
    }
    // Opaque to the compiler, which would otherwise turn the arithmetic below back into branches
    // from what it knows of the values' ranges.
    let len = core::hint::black_box(len as u64);
    // The last four bytes read, the block's start counting as a NUL.
    let mut window = 0u64;
    let mut found = 0u64;
    let mut index = 0;
    while index < ENV_SCAN {
        window = (window << 8 | env[index] as u64) & 0xffff_ffff;
        // 1 while `index` is inside the block, and where the window matches.
        let inside = (index as u64).wrapping_sub(len) >> 63;
        let matches = core::hint::black_box(window ^ LOADER_VARIABLE).wrapping_sub(1) >> 63;
        found |= inside & matches;
        index += 1;
    }
    found != 0
}

/// An entry starting with "LD_", as the last four bytes of the window.
const LOADER_VARIABLE: u64 = u32::from_be_bytes([0, b'L', b'D', b'_']) as u64;

/// "environ", as the last seven bytes of the window.
const ENVIRON: u64 = u64::from_be_bytes([0, b'e', b'n', b'v', b'i', b'r', b'o', b'n']);

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{process::Command, string::String, vec::Vec};

    use super::*;

    /// The argument block of `ps` run with `args`.
    fn block(args: &[&str]) -> Vec<u8> {
        let mut block = b"ps\0".to_vec();
        for arg in args {
            block.extend_from_slice(arg.as_bytes());
            block.push(0);
        }
        block
    }

    fn shows(args: &str) -> bool {
        shows_environment(&block(&args.split(' ').filter(|word| !word.is_empty()).collect::<Vec<_>>()))
    }

    #[test]
    fn listing_options_show_no_environment_and_e_does() {
        for listing in ["", "aux", "-ef", "-p 1", "-p1", "axo pid,user", "-eo pid,user,cmd", "-C sleep", "t e", "k e", "-fp 1", "--sort=user", "-u user"] {
            assert!(!shows(listing), "ps {listing}");
        }
        for showing in ["e", "eww -p 1", "aux e", "ue", "-p 1 e", "--forest e", "-o environ", "o pid,environ", "-ep 1 e", "--sort user"] {
            assert!(shows(showing), "ps {showing}");
        }
        // A last word without its NUL, and a block too long to read whole.
        assert!(shows_environment(b"ps\0e"));
        assert!(shows_environment(&[b'a'; ARGV_SCAN + 1]));
        // The program name is not an option.
        assert!(!shows_environment(b"/usr/bin/pse\0aux\0"));
    }

    #[test]
    fn loader_variables_are_found_in_any_entry() {
        let loads = |env: &[u8]| {
            let mut block = [b'x'; ENV_SCAN];
            block[..env.len()].copy_from_slice(env);
            loads_code(&block, env.len())
        };
        assert!(!loads(b""));
        assert!(!loads(b"PATH=/usr/bin\0HOME=/root\0OLD_PRELOAD=x\0"));
        assert!(loads(b"LD_PRELOAD=/tmp/x.so\0"));
        assert!(loads(b"PATH=/usr/bin\0LD_AUDIT=/tmp/x.so\0"));
        assert!(!loads(b"PATH=/bin:LD_\0"), "inside a value, not a name");
        let mut stale = [0u8; ENV_SCAN];
        stale[8..12].copy_from_slice(b"\0LD_");
        assert!(!loads_code(&stale, 8), "past the block's end: stale bytes of an earlier exec");
        assert!(loads_code(&stale, 12));
        assert!(loads_code(&[0; ENV_SCAN], ENV_SCAN + 1));
    }

    #[test]
    fn the_listers_are_found_by_inode_only_in_their_count() {
        let ps = InodeKey { dev: 1, _pad: 0, ino: 42 };
        let mut listers = Listers::NONE;
        assert!(!listers.contains(ps));
        listers.exes[0] = ps;
        assert!(!listers.contains(ps), "slots past the count are unused");
        listers.count = 1;
        assert!(listers.contains(ps) && !listers.contains(InodeKey { ino: 43, ..ps }));
    }

    /// The real procps `ps`: whatever it prints for each option set, the parser never says "no
    /// environment" where `ps` printed one, and agrees with it on the common ones.
    #[test]
    fn the_parser_agrees_with_procps() {
        let marker = std::format!("lister-marker-{}", std::process::id());
        let mut sleeper = Command::new("sleep").arg("60").env("LISTER_MARKER", &marker).spawn().unwrap();
        let pid = std::format!("{}", sleeper.id());
        let sets: &[&[&str]] = &[
            &["-p", &pid],
            &["e", "-p", &pid],
            &["-p", &pid, "e"],
            &["eww", "-p", &pid],
            &["-fp", &pid],
            &["-o", "pid,user", "-p", &pid],
            &["p", &pid, "e"],
            &["q", &pid, "e"],
            &["-q", &pid, "e"],
            &["t", "e", "-p", &pid],
            &["k", "e", "-p", &pid],
            &["--forest", "e", "-p", &pid],
            &["-p", &pid, "-s", "1", "e"],
            &["-p", &pid, "x", "e"],
            &["ue", "-p", &pid],
            &["-p", &pid, "-o", "environ"],
            &["-C", "sleep", "e"],
            &["-p", &pid, "-O", "user", "e"],
        ];
        for args in sets {
            let output = Command::new("ps").args(*args).output().expect("procps ps");
            let printed = String::from_utf8_lossy(&output.stdout).contains(&marker);
            let parsed = shows_environment(&block(args));
            assert!(parsed || !printed, "ps {args:?} printed an environment the parser missed");
            let common = [&["-p", &pid][..], &["e", "-p", &pid][..], &["eww", "-p", &pid][..], &["-fp", &pid][..]];
            if common.contains(args) {
                assert_eq!(parsed, printed, "ps {args:?}");
            }
        }
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }
}
