//! Temporary directories and small file queries.

use std::path::Path;

/// A fresh temporary directory, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A temporary directory in memory (`/dev/shm`) when there is one, where `fsync` costs
/// nothing: for tests that make many small writes. Falls back to [`tempdir`].
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempdir()
}

/// The length of the file at `path`.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// The names of the entries of `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A tmpfs of `mib` MiB mounted on a new folder `name` of `dir`, unmounted on drop: a
/// small volume to fill. Mounting needs root (the tests run as root, as CI does); a
/// failed mount fails the test.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts it.
    #[track_caller]
    pub fn new(dir: &Path, name: &str, mib: u64) -> Tmpfs {
        let p = dir.join(name);
        std::fs::create_dir(&p).expect("mkdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&p)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs needs root (CI runs as root)");
        Tmpfs(p)
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Copies `src` to `dst` keeping its modification time, as `cp -p` does: the children
/// of a copied chain then still match the time they record for their parent (`vhdkit
/// check` warns about a parent modified after its child recorded it — what a plain copy
/// looks like).
pub fn copy_keeping_time(src: &Path, dst: &Path) {
    std::fs::copy(src, dst)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", src.display(), dst.display()));
    let mtime = std::fs::metadata(src)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    std::fs::File::options()
        .write(true)
        .open(dst)
        .and_then(|f| f.set_modified(mtime))
        .unwrap_or_else(|e| panic!("setting the time of {}: {e}", dst.display()));
}

/// The process's umask, from /proc (reading it with umask(2) would change it for every
/// thread for a moment). Linux only.
pub fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("an Umask line (Linux 4.7 and later)");
    u32::from_str_radix(line.trim(), 8).expect("octal")
}
