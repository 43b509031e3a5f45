//! A writer for the `newc` cpio format, the one the kernel unpacks as an initramfs, so that
//! building the VM's root file system needs no `cpio` program.

use std::io::{self, Write};

/// `S_IFDIR`, `S_IFREG`, `S_IFLNK`, `S_IFCHR` (the file type bits of `st_mode`).
const DIRECTORY: u32 = 0o040_000;
const REGULAR: u32 = 0o100_000;
const CHAR_DEVICE: u32 = 0o020_000;
const FILE_TYPE: u32 = 0o170_000;

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

/// Writes an archive entry by entry; [`Archive::finish`] adds the trailer.
pub struct Archive<W: Write> {
    out: W,
    written: u64,
    next_inode: u32,
}

impl<W: Write> Archive<W> {
    pub fn new(out: W) -> Self {
        Self { out, written: 0, next_inode: 1 }
    }

    pub fn directory(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.entry(path, DIRECTORY | mode, 0, b"")
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, REGULAR | mode, 0, data)
    }

    /// A character device node, e.g. `/dev/console` (5, 1), which the kernel opens for init's
    /// stdio before devtmpfs is mounted.
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, CHAR_DEVICE | mode, (major << 8) | minor, b"")
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 0, 0, 0)?;
        self.name(TRAILER)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: u32, data: &[u8]) -> io::Result<()> {
        // Archive names are relative: the kernel unpacks them under its rootfs.
        let name = path.trim_start_matches('/');
        let inode = self.next_inode;
        self.next_inode += 1;
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{path}: over 4 GiB")))?;
        self.header(name, inode, mode, size, rdev)?;
        self.name(name)?;
        self.write(data)?;
        self.pad()
    }

    fn header(&mut self, name: &str, inode: u32, mode: u32, size: u32, rdev: u32) -> io::Result<()> {
        let nlink = if mode & FILE_TYPE == DIRECTORY { 2 } else { 1 };
        let fields = [
            inode,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            size,
            0, // dev major
            0, // dev minor
            rdev >> 8,
            rdev & 0xff,
            name.len() as u32 + 1,
            0, // check
        ];
        let mut header = String::with_capacity(110);
        header.push_str(MAGIC);
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.write(header.as_bytes())
    }

    /// The NUL-terminated name, padded so that the data starts on a 4-byte boundary.
    fn name(&mut self, name: &str) -> io::Result<()> {
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()
    }

    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - self.written % 4) % 4;
        self.write(&[0; 3][..padding as usize])
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_end_with_the_trailer() {
        let mut archive = Archive::new(Vec::new());
        archive.directory("/dev", 0o755).unwrap();
        archive.char_device("/dev/console", 0o600, 5, 1).unwrap();
        archive.file("/init", 0o755, b"#!/bin/sh\n").unwrap();
        let bytes = archive.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("070701"));
        // The first header: inode 1, a directory 0755, two links, name "dev" + NUL.
        assert_eq!(&text[6..6 + 5 * 8], "00000001000041ed000000000000000000000002");
        assert_eq!(&text[110..114], "dev\0");
        // The console: rdev 5:1.
        let console = text.find("dev/console").unwrap();
        let header = &text[console - 110..console];
        assert_eq!(&header[6 + 9 * 8..6 + 11 * 8], "0000000500000001");
        assert!(text.contains("#!/bin/sh\n"));
        assert!(text.ends_with("TRAILER!!!\0\0\0\0"));
    }
}
