//! Real filesystems: the mount table (`/proc/self/mounts`) filtered the way node_exporter
//! does by default, one entry per device, sized through [`StatFs`].
//!
//! Left out: pseudo filesystems (autofs binfmt_misc bpf cgroup cgroup2 configfs debugfs devpts
//! devtmpfs efivarfs fusectl hugetlbfs iso9660 mqueue nsfs overlay proc procfs pstore ramfs
//! rootfs rpc_pipefs securityfs selinuxfs squashfs sysfs tracefs), mount points under /dev,
//! /proc and /sys (and those themselves), and anything mounted below /run/credentials/,
//! /var/lib/docker/ or /var/lib/containers/storage/ (containers' layers, counted with the disk
//! below them). tmpfs is left out too, except at `/tmp` and `/dev/shm`: those two are where
//! agents put scratch files and shared tensors, they fill up in RAM, and a full `/dev/shm` is
//! a classic way for a data loader to fail. A device mounted twice (bind mounts) is listed once,
//! at its first mount point; so is a mount point mounted over. Filesystems of size zero are
//! skipped (nothing to fill).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{StatFs, push, ratio};
use crate::metric::Sample;

/// One mounted filesystem and its sizes. Listed: real filesystems, once per device; not
/// pseudo filesystems (proc, sysfs, cgroup, overlay, squashfs, ...), nothing under /dev, /proc,
/// /sys or inside /var/lib/docker/, and tmpfs only at `/tmp` and `/dev/shm`, where agents' scratch
/// files and shared tensors fill RAM.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filesystem {
    /// What is mounted (`/dev/nvme0n1p2`, `tmpfs`, `server:/export`).
    pub device: String,
    /// Where (`\040` and other escapes undone; bytes that are not UTF-8 replaced by `�`).
    pub mount_point: String,
    /// The filesystem type (`ext4`, `xfs`, `nfs4`).
    pub fs_type: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Free bytes, including those reserved for root.
    pub free_bytes: u64,
    /// Free bytes for unprivileged users.
    pub avail_bytes: u64,
    /// `size - free`.
    pub used_bytes: u64,
    /// `used / (used + avail)`, the share `df` shows as full (0..1); `None` when both are zero.
    pub used_ratio: Option<f64>,
    /// Inodes (zero on filesystems without a fixed number, such as btrfs).
    pub files: u64,
    /// Free inodes.
    pub files_free: u64,
}

const PSEUDO: [&str; 27] = [
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Scratch space for the mount table, kept between collections.
#[derive(Debug, Default)]
pub(crate) struct MountState {
    device: Vec<u8>,
    mount_point: Vec<u8>,
}

impl MountState {
    /// The real filesystems of a mount table, sized by `statfs`.
    pub(crate) fn filesystems(
        &mut self,
        mounts: &[u8],
        statfs: &mut dyn StatFs,
    ) -> Vec<Filesystem> {
        let mut out: Vec<Filesystem> = Vec::new();
        for line in mounts.split(|&b| b == b'\n') {
            let mut fields = line.split(|&b| b == b' ');
            let (Some(device), Some(mount_point), Some(fs_type), Some(_options)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Ok(fs_type) = std::str::from_utf8(fs_type) else {
                continue;
            };
            if device.is_empty() || fs_type.is_empty() || !mount_point.starts_with(b"/") {
                continue;
            }
            unescape(device, &mut self.device);
            unescape(mount_point, &mut self.mount_point);
            if !is_real(fs_type, &self.mount_point) {
                continue;
            }
            let device = String::from_utf8_lossy(&self.device);
            let mount_point = String::from_utf8_lossy(&self.mount_point);
            // a block device once; other sources (tmpfs, nfs) are told apart by mount point
            let seen = out.iter().any(|fs| {
                fs.mount_point == mount_point || (device.starts_with('/') && fs.device == device)
            });
            if seen {
                continue;
            }
            let Some(stat) = statfs.stat(Path::new(OsStr::from_bytes(&self.mount_point))) else {
                continue;
            };
            if stat.size_bytes == 0 {
                continue;
            }
            let used = stat.size_bytes.saturating_sub(stat.free_bytes);
            out.push(Filesystem {
                device: device.into_owned(),
                mount_point: mount_point.into_owned(),
                fs_type: fs_type.to_owned(),
                size_bytes: stat.size_bytes,
                free_bytes: stat.free_bytes,
                avail_bytes: stat.avail_bytes,
                used_bytes: used,
                used_ratio: ratio(used as f64, used as f64 + stat.avail_bytes as f64),
                files: stat.files,
                files_free: stat.files_free,
            });
        }
        out
    }
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash) into `out`.
fn unescape(field: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(&[a, b, c]) = field.get(i + 1..i + 4)
            && [a, b, c].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = u32::from(a - b'0') * 64 + u32::from(b - b'0') * 8 + u32::from(c - b'0');
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
}

fn is_real(fs_type: &str, mount_point: &[u8]) -> bool {
    if fs_type == "tmpfs" {
        return matches!(mount_point, b"/tmp" | b"/dev/shm");
    }
    if PSEUDO.contains(&fs_type) {
        return false;
    }
    let at_or_under = |prefix: &[u8]| {
        mount_point
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest[0] == b'/')
    };
    let strictly_under = |prefix: &[u8]| {
        mount_point
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.len() > 1 && rest[0] == b'/')
    };
    !(at_or_under(b"/dev")
        || at_or_under(b"/proc")
        || at_or_under(b"/sys")
        || strictly_under(b"/run/credentials")
        || strictly_under(b"/var/lib/docker")
        || strictly_under(b"/var/lib/containers/storage"))
}

impl Filesystem {
    pub(crate) fn samples(&self, out: &mut Vec<Sample>) {
        let labels = [
            ("device", self.device.as_str()),
            ("mountpoint", self.mount_point.as_str()),
            ("fstype", self.fs_type.as_str()),
        ];
        let b = |v: u64| Some(v as f64);
        push(out, &SIZE, &labels, b(self.size_bytes));
        push(out, &AVAIL, &labels, b(self.avail_bytes));
        push(out, &FREE, &labels, b(self.free_bytes));
        push(out, &USED, &labels, b(self.used_bytes));
        push(out, &USED_RATIO, &labels, self.used_ratio);
        push(out, &FILES, &labels, b(self.files));
        push(out, &FILES_FREE, &labels, b(self.files_free));
    }
}

descs! {
    SIZE Gauge "qm_host_filesystem_size_bytes"
        "Filesystem size.";
    AVAIL Gauge "qm_host_filesystem_avail_bytes"
        "Free bytes unprivileged users can have.";
    FREE Gauge "qm_host_filesystem_free_bytes"
        "Free bytes, including those reserved for root.";
    USED Gauge "qm_host_filesystem_used_bytes"
        "Bytes in use (size minus free).";
    USED_RATIO Gauge "qm_host_filesystem_used_ratio"
        "Share of the filesystem in use, as df shows it.";
    FILES Gauge "qm_host_filesystem_files"
        "Inodes.";
    FILES_FREE Gauge "qm_host_filesystem_files_free"
        "Free inodes.";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FsStat;

    #[derive(Debug)]
    struct Fixed;

    impl StatFs for Fixed {
        fn stat(&mut self, mount_point: &Path) -> Option<FsStat> {
            (mount_point != Path::new("/broken")).then_some(FsStat {
                size_bytes: 1000,
                free_bytes: 400,
                avail_bytes: 300,
                files: 10,
                files_free: 5,
            })
        }
    }

    fn mounts(table: &str) -> Vec<(String, String)> {
        let fs = MountState::default().filesystems(table.as_bytes(), &mut Fixed);
        fs.into_iter().map(|f| (f.device, f.mount_point)).collect()
    }

    #[test]
    fn only_real_filesystems_once_per_device() {
        let table = "proc /proc proc rw 0 0\nsysfs /sys sysfs rw 0 0\n\
            /dev/vda / ext4 rw,relatime 0 0\ntmpfs /run tmpfs rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n\
            tmpfs /dev/shm tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
            /dev/vda /etc/hosts ext4 rw 0 0\n/dev/vdb /mnt/my\\040data xfs rw 0 0\n\
            overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0\n\
            /dev/vdc /var/lib/docker ext4 rw 0 0\n/dev/vdd /var/lib/docker/volumes/v ext4 rw 0 0\n\
            /dev/vde /broken ext4 rw 0 0\n/dev/loop0 /snap/core/1 squashfs ro 0 0\n";
        assert_eq!(
            mounts(table),
            [
                ("/dev/vda", "/"),
                ("tmpfs", "/tmp"),
                ("tmpfs", "/dev/shm"),
                ("/dev/vdb", "/mnt/my data"),
                ("/dev/vdc", "/var/lib/docker"),
            ]
            .map(|(d, m)| (d.to_owned(), m.to_owned()))
        );
    }

    #[test]
    fn sizes_and_ratio_as_df_shows_them() {
        let fs = MountState::default().filesystems(b"/dev/vda / ext4 rw 0 0", &mut Fixed);
        assert_eq!(fs[0].used_bytes, 600);
        assert_eq!(fs[0].used_ratio, Some(600.0 / 900.0));
        assert_eq!((fs[0].files, fs[0].files_free), (10, 5));
    }

    #[test]
    fn truncated_and_odd_tables_do_not_panic() {
        assert!(mounts("").is_empty());
        assert!(mounts("/dev/vda / ext").is_empty(), "cut in half");
        assert!(mounts("\n\n   \n").is_empty());
        assert_eq!(mounts("/dev/x /a\\0 ext4 rw 0 0")[0].1, "/a\\0");
        assert_eq!(
            mounts("/dev/x /a\\777b ext4 rw")[0].1,
            "/a\\777b",
            "not a byte"
        );
        let t = b"/dev/x /caf\xff ext4 rw 0 0";
        let fs = MountState::default().filesystems(t, &mut Fixed);
        assert_eq!(fs[0].mount_point, "/caf\u{fffd}");
    }

    #[test]
    fn unescape_handles_each_escape() {
        let mut out = Vec::new();
        unescape(br"a\040b\011c\012d\134e", &mut out);
        assert_eq!(out, b"a b\tc\nd\\e");
    }
}
