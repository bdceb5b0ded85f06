//! Real disks for the tests: images in temporary files, partitioned with sfdisk,
//! formatted with the real mkfs tools over loop devices, filled through kernel (or FUSE)
//! mounts. Needs root and the tools `.ci/run` installs; a missing tool fails the test.
//! (The volume crate's suites, the CLI's `fs_aware` and `offload` suites and the format
//! crate's whole-file clone tests use them.)

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use vhdkit_platform::FileExt;

use crate::files::tempdir;
use crate::partitions::{sfdisk, sfdisk_partitions};
use crate::rng::Rng;
pub use crate::MIB;

/// Runs a shell command; panics with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail; {cmd}"))
        .output()
        .expect("bash runs");
    if !out.status.success() {
        panic!(
            "command failed ({}): {cmd}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exit status of a shell command (for checkers), with its output.
pub fn sh_status(cmd: &str) -> (bool, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A loop device over bytes `offset..offset+len` of a file; detached on drop.
pub struct Loop {
    /// The device's path, `/dev/loopN`.
    pub dev: String,
}

impl Loop {
    /// Attaches a loop device over bytes `offset..offset+len` of `img`.
    pub fn new(img: &Path, offset: u64, len: u64) -> Loop {
        let dev = sh(&format!(
            // One lock for every test that attaches loop devices: `losetup -f` in
            // parallel processes can race for the same device.
            "flock /tmp/vhdkit-tests-losetup.lock losetup -f --show -o {offset} --sizelimit {len} '{}'",
            img.display()
        ))
        .trim()
        .to_string();
        Loop { dev }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = sh_status(&format!("losetup -d {}", self.dev));
    }
}

/// A mount point with something mounted on it; unmounted on drop.
pub struct Mount {
    /// The mount point (a temporary directory).
    pub dir: tempfile::TempDir,
    mounted: bool,
}

impl Mount {
    /// `kind` is `ext4`, `ext2`, `vfat` or `ntfs` (ntfs-3g).
    pub fn new(dev: &str, kind: &str, ro: bool) -> Mount {
        let dir = tempdir();
        let d = dir.path().display();
        let opt = if ro { "-o ro" } else { "" };
        match kind {
            "ntfs" => sh(&format!(
                "ntfs-3g {} {dev} {d}",
                if ro { "-o ro" } else { "" }
            )),
            "ext" if ro => sh(&format!("mount -t ext4 -o ro,noload {dev} {d}")),
            "ext" => sh(&format!("mount -t ext4 {dev} {d}")),
            other => sh(&format!("mount -t {other} {opt} {dev} {d}")),
        };
        Mount { dir, mounted: true }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Syncs and unmounts (panics if `umount` fails).
    pub fn unmount(mut self) {
        self.do_unmount();
    }

    fn do_unmount(&mut self) {
        if self.mounted {
            self.mounted = false;
            sh(&format!("sync; umount '{}'", self.dir.path().display()));
        }
    }

    /// Free bytes as the file system reports them (statvfs: free blocks × block size).
    pub fn statvfs_free(&self) -> u64 {
        let out = sh(&format!(
            "stat -f -c '%f %S' '{}'",
            self.dir.path().display()
        ));
        let mut it = out
            .split_whitespace()
            .map(|x| x.parse::<u64>().expect("number"));
        let (f, s) = (it.next().expect("free"), it.next().expect("size"));
        f * s
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            self.mounted = false;
            let _ = sh_status(&format!("umount -l '{}'", self.dir.path().display()));
        }
    }
}

/// A file system made in a sparse 1 GiB file of its own and mounted through a loop
/// device (`mount -o loop`, under the lock every test that attaches loop devices
/// shares); unmounted, and its device freed, when dropped. `kind`: `xfs` (with
/// reflink), `xfs-noreflink`, `btrfs` or `ext4`.
pub struct ImageFs {
    mount: Mount,
    /// The backing file's directory (none for a ramfs), removed after the unmount.
    _img: Option<tempfile::TempDir>,
}

impl ImageFs {
    /// Makes and mounts the file system.
    pub fn new(kind: &str) -> ImageFs {
        let img_dir = tempdir();
        let img = img_dir.path().join("fs.img");
        File::create(&img)
            .and_then(|f| f.set_len(1 << 30))
            .expect("the file system's backing file");
        let img = img.display();
        sh(&match kind {
            "xfs" => format!("mkfs.xfs -q -m reflink=1 '{img}'"),
            "xfs-noreflink" => format!("mkfs.xfs -q -m reflink=0 '{img}'"),
            "btrfs" => format!("mkfs.btrfs -q '{img}'"),
            "ext4" => format!("mkfs.ext4 -q -F '{img}'"),
            _ => panic!("no such test file system: {kind}"),
        });
        let dir = tempdir();
        sh(&format!(
            "flock /tmp/vhdkit-tests-losetup.lock mount -o loop '{img}' '{}'",
            dir.path().display()
        ));
        ImageFs {
            mount: Mount { dir, mounted: true },
            _img: Some(img_dir),
        }
    }

    /// Mounts a ramfs (in memory, no `fallocate` at all, so no holes).
    pub fn ramfs() -> ImageFs {
        let dir = tempdir();
        sh(&format!("mount -t ramfs none '{}'", dir.path().display()));
        ImageFs {
            mount: Mount { dir, mounted: true },
            _img: None,
        }
    }

    /// `name` inside the file system.
    pub fn path(&self, name: &str) -> PathBuf {
        self.mount.path().join(name)
    }

    /// Bytes in use on the file system, after a sync of it (`df`).
    pub fn used(&self) -> u64 {
        let mnt = self.mount.path().display();
        sh(&format!("sync -f '{mnt}'; df --output=used -B1 '{mnt}'"))
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the bytes used")
    }
}

/// The extents of `path` as `filefrag -v` lists them (FIEMAP), one line each, with its
/// flags (`shared` where another file holds the same blocks: a clone).
pub fn extents(path: &Path) -> Vec<String> {
    sh(&format!("filefrag -v '{}'", path.display()))
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.split(':')
                .next()
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
        .map(str::to_owned)
        .collect()
}

/// Deterministic file content: bits 24..32 of each value of [`Rng::xorshift`].
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::xorshift(seed);
    (0..len).map(|_| (rng.next_u64() >> 24) as u8).collect()
}

/// Files expected in a file system: relative path → content.
pub type Files = BTreeMap<String, Vec<u8>>;

/// A partition of a test disk: what was made in it.
#[derive(Clone, Debug)]
pub struct Part {
    /// First byte of the partition in the image.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
    /// `ext4`, `ext4-noflex`, `ext4-1k64`, `ext3`, `ext2`, `fat12`, `fat16`, `fat32`, `ntfs`,
    /// `swap`, `xfs`, `none`.
    pub fs: &'static str,
}

/// The mkfs command for a kind on a device.
pub fn mkfs(fs: &str, dev: &str) {
    let cmd = match fs {
        "ext4" => format!("mkfs.ext4 -q -F {dev}"),
        "ext4-noflex" => format!("mkfs.ext4 -q -F -O ^flex_bg {dev}"),
        "ext4-1k64" => format!("mkfs.ext4 -q -F -b 1024 -O 64bit,metadata_csum {dev}"),
        "ext4-nouninit" => {
            format!("mkfs.ext4 -q -F -O ^metadata_csum,^uninit_bg -E lazy_itable_init=0 {dev}")
        }
        "ext3" => format!("mkfs.ext3 -q -F {dev}"),
        "ext2" => format!("mkfs.ext2 -q -F {dev}"),
        "fat12" => format!("mkfs.vfat -F 12 {dev} >/dev/null"),
        "fat16" => format!("mkfs.vfat -F 16 {dev} >/dev/null"),
        "fat32" => format!("mkfs.vfat -F 32 -s 1 {dev} >/dev/null"),
        "ntfs" => format!("mkfs.ntfs -q -f -F {dev} >/dev/null"),
        "swap" => format!("mkswap {dev} >/dev/null"),
        "xfs" => format!("mkfs.xfs -q -f {dev}"),
        "none" => String::from("true"),
        other => panic!("unknown fs {other}"),
    };
    sh(&cmd);
}

/// Whether a kind is FAT (written and read with mtools: no kernel driver needed).
pub fn is_fat(fs: &str) -> bool {
    matches!(fs, "fat12" | "fat16" | "fat32")
}

/// mtools on a device or image, geometry checks off.
pub fn mtools(cmd: &str) -> String {
    sh(&format!("export MTOOLS_SKIP_CHECK=1; {cmd}"))
}

/// Writes files into a FAT device with mtools and deletes every third one, like
/// [`populate`].
pub fn populate_fat(dev: &str, seed: u64, count: usize, max_len: usize) -> Files {
    let tmp = tempdir();
    let all = plan(seed, count, max_len);
    mtools(&format!("mmd -i {dev} ::/dir ::/dir/sub"));
    for (i, (name, data)) in all.iter().enumerate() {
        let src = tmp.path().join(format!("{i}"));
        std::fs::write(&src, data).expect("write");
        mtools(&format!("mcopy -o -i {dev} '{}' ::/{name}", src.display()));
    }
    let mut files = Files::new();
    for (i, (name, data)) in all.into_iter().enumerate() {
        if i % 3 == 1 {
            mtools(&format!("mdel -i {dev} ::/{name}"));
        } else {
            files.insert(name, data);
        }
    }
    files
}

/// Checks every expected file of a FAT device byte by byte (read with mcopy).
pub fn assert_fat_files(dev: &str, files: &Files) {
    let tmp = tempdir();
    for (i, (name, data)) in files.iter().enumerate() {
        let out = tmp.path().join(format!("{i}"));
        mtools(&format!("mcopy -n -i {dev} ::/{name} '{}'", out.display()));
        let got = std::fs::read(&out).expect("read back");
        assert!(
            got == *data,
            "{name}: content differs after filling the free ranges"
        );
    }
}

/// Free bytes of a FAT device as mtools counts them (`mdir`'s last line).
pub fn fat_free(dev: &str) -> u64 {
    let out = mtools(&format!("mdir -i {dev} ::"));
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains("bytes free"))
        .expect("bytes free line");
    line.chars()
        .filter(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .expect("number")
}

/// The mount type for a kind (`None` for FAT, swap and the like).
pub fn mount_kind(fs: &str) -> Option<&'static str> {
    match fs {
        f if f.starts_with("ext") => Some("ext"),
        "ntfs" => Some("ntfs"),
        _ => None,
    }
}

/// An image file in its own temporary directory.
pub struct Disk {
    /// The directory holding the image (removed on drop).
    pub dir: tempfile::TempDir,
    /// The image file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub size: u64,
}

impl Disk {
    /// A sparse image of `size` zero bytes.
    pub fn new(size: u64) -> Disk {
        let dir = tempdir();
        let path = dir.path().join("disk.img");
        let f = File::create(&path).expect("create image");
        f.set_len(size).expect("size image");
        Disk { dir, path, size }
    }

    /// Partitions with sfdisk (`script` in sfdisk's input format; see [`sfdisk`]).
    pub fn sfdisk(&self, script: &str) {
        sfdisk(&self.path, script);
    }

    /// The partitions as sfdisk sees them: (start, len) in bytes, in table order.
    pub fn partitions(&self) -> Vec<(u64, u64)> {
        sfdisk_partitions(&self.path)
    }

    /// A loop device over partition `p`.
    pub fn loopdev(&self, p: &Part) -> Loop {
        Loop::new(&self.path, p.start, p.len)
    }

    /// A sparse copy.
    pub fn copy(&self) -> Disk {
        let dir = tempdir();
        let path = dir.path().join("copy.img");
        sh(&format!(
            "cp --sparse=always '{}' '{}'",
            self.path.display(),
            path.display()
        ));
        Disk {
            dir,
            path,
            size: self.size,
        }
    }
}

/// The files a test writes: (path, content), in writing order; every third is deleted
/// afterwards (`i % 3 == 1`).
pub fn plan(seed: u64, count: usize, max_len: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let len = (content(seed ^ i as u64, 4)[0] as usize * 997 + i * 4099) % max_len + 1;
            let name = match i % 3 {
                0 => format!("f{i}.bin"),
                1 => format!("dir/f{i}.bin"),
                _ => format!("dir/sub/f{i}.bin"),
            };
            (name, content(seed.wrapping_add(i as u64 * 7919), len))
        })
        .collect()
}

/// Writes the [`plan`] into a mounted file system and deletes every third file; returns
/// the survivors.
pub fn populate(root: &Path, seed: u64, count: usize, max_len: usize) -> Files {
    std::fs::create_dir_all(root.join("dir/sub")).expect("mkdir");
    let mut files = Files::new();
    let all = plan(seed, count, max_len);
    for (name, data) in &all {
        std::fs::write(root.join(name), data).expect("write file");
    }
    for (i, (name, data)) in all.into_iter().enumerate() {
        if i % 3 == 1 {
            std::fs::remove_file(root.join(&name)).expect("delete");
        } else {
            files.insert(name, data);
        }
    }
    files
}

/// Checks every expected file byte by byte under a mounted root.
pub fn assert_files(root: &Path, files: &Files) {
    for (name, data) in files {
        let got = std::fs::read(root.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
        assert!(
            got == *data,
            "{name}: content differs after filling the free ranges"
        );
    }
}

/// Overwrites every byte of `ranges` in the image with a pattern.
pub fn fill(disk: &Disk, ranges: &[std::ops::Range<u64>]) {
    let f = OpenOptions::new()
        .write(true)
        .open(&disk.path)
        .expect("open copy");
    let chunk = vec![0xA5u8; 1 << 20];
    for r in ranges {
        let mut off = r.start;
        while off < r.end {
            let n = ((r.end - off) as usize).min(chunk.len());
            f.write_all_at(&chunk[..n], off).expect("fill");
            off += n as u64;
        }
    }
    f.sync_all().expect("sync");
}

/// The file system's own checker, read-only, on a device; panics with its output if it
/// finds anything.
pub fn fsck(fs: &str, dev: &str) {
    let cmd = match fs {
        f if f.starts_with("ext") => format!("e2fsck -fn {dev}"),
        "fat12" | "fat16" | "fat32" => format!("fsck.vfat -n {dev}"),
        "ntfs" => format!("ntfsfix -n {dev}"),
        _ => return,
    };
    let (ok, out) = sh_status(&cmd);
    assert!(ok, "{cmd} failed after filling the free ranges:\n{out}");
    if fs == "ntfs" {
        // ntfsfix -n exits 0 even when it would fix something; look at its words too.
        assert!(
            !out.contains("FAILED") && !out.contains("corrupt"),
            "{cmd}:\n{out}"
        );
    }
}

/// Sets the dirty bit Linux keeps in the state byte of the FAT boot sector at byte
/// `start` of the image (the one fsck.vfat reads).
pub fn set_fat_dirty_bit(disk: &Disk, start: u64, fat32: bool) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk.path)
        .expect("open");
    let at = start + if fat32 { 0x41 } else { 0x25 };
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    f.write_all_at(&[b[0] | 1], at).expect("write");
}

/// A made file system: where, and what should survive in it.
pub struct Made {
    /// The partition.
    pub part: Part,
    /// The files that should survive in it.
    pub files: Files,
    /// Free bytes the file system reported (statvfs) before unmounting.
    pub fs_free: Option<u64>,
}

/// Formats `part` and, if mountable, writes files and deletes some.
pub fn make(disk: &Disk, part: &Part, seed: u64, count: usize, max_len: usize) -> Made {
    let lo = disk.loopdev(part);
    mkfs(part.fs, &lo.dev);
    let mut files = Files::new();
    let mut fs_free = None;
    if is_fat(part.fs) {
        files = populate_fat(&lo.dev, seed, count, max_len);
        fs_free = Some(fat_free(&lo.dev));
    } else if let Some(kind) = mount_kind(part.fs) {
        let m = Mount::new(&lo.dev, kind, false);
        files = populate(m.path(), seed, count, max_len);
        sh("sync");
        m.unmount();
        // statvfs after a clean remount (ntfs-3g and vfat settle their counts on unmount).
        let m = Mount::new(&lo.dev, kind, true);
        fs_free = Some(m.statvfs_free());
        m.unmount();
    }
    Made {
        part: part.clone(),
        files,
        fs_free,
    }
}
