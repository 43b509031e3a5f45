//! A reader that shows what it read even if it is killed: one read(2) of the file straight into a
//! shared mapping of another file, which keeps whatever the kernel copied. An empty stdout proves
//! less: a `cat` killed between its read and its write looks like one killed at the open.

use std::path::{Path, PathBuf};

/// `python3 shared_read.py SECRET OUT`: reads SECRET into the first 4 KiB of OUT, mapped shared.
const SCRIPT: &str = r#"
import mmap, os, sys
out = open(sys.argv[2], "r+b")
buf = mmap.mmap(out.fileno(), 4096)
fd = os.open(sys.argv[1], os.O_RDONLY)
print("read", os.readv(fd, [buf]), flush=True)
"#;

pub struct SharedRead {
    out: PathBuf,
    script: PathBuf,
}

impl SharedRead {
    /// A fresh, zeroed buffer file named after `label` in `dir`.
    pub fn new(dir: &Path, label: &str) -> Self {
        let script = dir.join("shared_read.py");
        std::fs::write(&script, SCRIPT).unwrap();
        let out = dir.join(format!("shared-read-{label}.out"));
        std::fs::write(&out, vec![0u8; 4096]).unwrap();
        Self { out, script }
    }

    /// The shell command that reads `secret` (as the reader names it) into the buffer.
    pub fn command(&self, secret: &str) -> String {
        format!("/usr/bin/python3 {} {secret} {}", self.script.display(), self.out.display())
    }

    /// What reached the buffer: its bytes up to the first NUL.
    pub fn received(&self) -> Vec<u8> {
        let bytes = std::fs::read(&self.out).unwrap();
        let end = bytes.iter().position(|&byte| byte == 0).unwrap_or(bytes.len());
        bytes[..end].to_vec()
    }
}
