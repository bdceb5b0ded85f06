//! Arguments are checked before a task starts, with the HRESULTs Virtual Server
//! documents: a size of 0, an empty destination or a bad block size is `E_INVALIDARG`, a
//! missing destination folder `ERROR_PATH_NOT_FOUND`, an existing destination
//! `ERROR_ALREADY_EXISTS`; and a fixed disk that does not fit its volume is
//! `ERROR_DISK_FULL` with nothing left behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use vhdkit_format::ops::{self, OpsOptions, Target};
use vhdkit_format::{CreateOptions, Disk, DiskKind};
use vhdkit_task::HResult;

const MIB: u64 = 1 << 20;

fn refused(r: vhdkit_format::Result<ops::OpTask>) -> HResult {
    match r {
        Ok(_) => panic!("the task started; the argument should have been refused first"),
        Err(e) => e.hresult(),
    }
}

fn source(dir: &Path) -> PathBuf {
    let p = dir.join("src.vhd");
    Disk::create(&p, &CreateOptions::new(DiskKind::Dynamic, 4 * MIB)).expect("create");
    p
}

#[test]
fn create_task_refuses_bad_arguments_with_virtual_servers_hresults() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let fixed = |size| CreateOptions::new(DiskKind::Fixed, size);
    assert_eq!(
        refused(ops::create_task(d.join("a.vhd"), &fixed(0))),
        HResult::E_INVALIDARG
    );
    assert_eq!(
        refused(ops::create_task(d.join("b.vhd"), &fixed(MIB))),
        HResult::VM_E_IMAGE_SIZE_TOO_SMALL
    );
    assert_eq!(
        refused(ops::create_task(Path::new(""), &fixed(4 * MIB))),
        HResult::E_INVALIDARG
    );
    let bad_block = CreateOptions::new(DiskKind::Dynamic, 4 * MIB).block_size(3000);
    assert_eq!(
        refused(ops::create_task(d.join("c.vhd"), &bad_block)),
        HResult::E_INVALIDARG
    );
    assert_eq!(
        refused(ops::create_task(
            d.join("no/such/folder/d.vhd"),
            &fixed(4 * MIB)
        )),
        HResult::E_PATH_NOT_FOUND
    );
    let there = source(d);
    assert_eq!(
        refused(ops::create_task(&there, &fixed(4 * MIB))),
        HResult::E_ALREADY_EXISTS
    );
    assert_eq!(
        std::fs::read_dir(d).expect("ls").count(),
        1,
        "nothing was created"
    );
}

#[test]
fn convert_and_merge_to_refuse_bad_destinations_before_the_copy() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = source(dir.path());
    let o = OpsOptions::default();
    assert_eq!(
        refused(ops::convert_task(&src, Path::new(""), Target::Fixed, &o)),
        HResult::E_INVALIDARG
    );
    assert_eq!(
        refused(ops::convert_task(
            &src,
            dir.path().join("gone/x.vhd"),
            Target::Fixed,
            &o
        )),
        HResult::E_PATH_NOT_FOUND
    );
    let bad = OpsOptions {
        block_size: 1000,
        ..OpsOptions::default()
    };
    assert_eq!(
        refused(ops::convert_task(
            &src,
            dir.path().join("y.vhd"),
            Target::Dynamic,
            &bad
        )),
        HResult::E_INVALIDARG
    );
    let child = dir.path().join("c.vhd");
    Disk::create(&child, &CreateOptions::differencing(&src)).expect("child");
    assert_eq!(
        refused(ops::merge_to_task(
            &child,
            dir.path().join("gone/z.vhd"),
            Target::Fixed,
            &o
        )),
        HResult::E_PATH_NOT_FOUND
    );
}

/// A tmpfs of `mib` MiB mounted on a new folder of `dir` (the tests run as root);
/// unmounted on drop.
struct SmallVolume(PathBuf);

impl SmallVolume {
    fn new(dir: &Path, mib: u64) -> SmallVolume {
        let p = dir.join("small");
        std::fs::create_dir(&p).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&p)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs needs root (CI runs as root)");
        SmallVolume(p)
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "mounts a small tmpfs (Linux)")]
fn a_fixed_disk_larger_than_its_volume_is_disk_full_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let vol = SmallVolume::new(dir.path(), 16);
    let dst = vol.0.join("big.vhd");
    let task = ops::create_task(&dst, &CreateOptions::new(DiskKind::Fixed, 64 * MIB))
        .expect("the arguments are fine");
    let e = task.join().expect_err("64 MiB do not fit in 16");
    assert_eq!(e.hresult(), HResult::E_DISK_FULL, "{e}");
    assert_eq!(std::fs::read_dir(&vol.0).expect("ls").count(), 0);
    // The same through convert to fixed.
    let src = source(dir.path());
    let big = dir.path().join("big.raw");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(64 * MIB))
        .expect("sparse raw");
    let task = ops::convert_task(
        &big,
        vol.0.join("c.vhd"),
        Target::Fixed,
        &OpsOptions::default(),
    )
    .expect("starts");
    assert_eq!(
        task.join().expect_err("does not fit").hresult(),
        HResult::E_DISK_FULL
    );
    assert_eq!(std::fs::read_dir(&vol.0).expect("ls").count(), 0);
    // Asked to be sparse, it is made (and takes almost nothing).
    let sparse = CreateOptions {
        sparse: true,
        ..CreateOptions::new(DiskKind::Fixed, 64 * MIB)
    };
    Disk::create(vol.0.join("sparse.vhd"), &sparse).expect("a sparse fixed disk fits");
    drop(src);
}

#[cfg(unix)]
#[test]
fn a_fixed_disk_is_allocated_up_front() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("f.vhd");
    Disk::create(&p, &CreateOptions::new(DiskKind::Fixed, 8 * MIB)).expect("create");
    let m = std::fs::metadata(&p).expect("stat");
    assert!(
        m.blocks() * 512 >= 8 * MIB,
        "{} bytes allocated",
        m.blocks() * 512
    );
}
