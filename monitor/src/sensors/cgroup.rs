//! Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on unified hosts,
//! `/sys/fs/cgroup/unified` in systemd's hybrid mode, or wherever the mount table says.

use std::{ffi::CStr, path::PathBuf};

/// The mount point of the cgroup v2 hierarchy, if it is mounted.
pub fn v2_root() -> Option<PathBuf> {
    // SAFETY: setmntent opens the mount table; getmntent_r fills `entry` from `buffer`, which
    // outlives every use of the entry's strings; endmntent closes it.
    unsafe {
        let table = libc::setmntent(c"/proc/self/mounts".as_ptr(), c"r".as_ptr());
        if table.is_null() {
            return None;
        }
        let mut entry: libc::mntent = std::mem::zeroed();
        let mut buffer = [0 as libc::c_char; 4096];
        let mut found = None;
        while !libc::getmntent_r(table, &mut entry, buffer.as_mut_ptr(), buffer.len() as i32).is_null() {
            if CStr::from_ptr(entry.mnt_type).to_bytes() == b"cgroup2" {
                found = Some(PathBuf::from(CStr::from_ptr(entry.mnt_dir).to_string_lossy().into_owned()));
                break;
            }
        }
        libc::endmntent(table);
        found
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_v2_hierarchy_where_the_mount_table_says() {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let expected = mounts.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields[2] == "cgroup2").then(|| std::path::PathBuf::from(fields[1]))
        });
        assert_eq!(super::v2_root(), expected);
    }
}
