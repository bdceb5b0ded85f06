//! The library as a new user meets it: `create_and_open`, one argument style for paths,
//! the task members on `OpTask` itself, and everything reachable from `vhdkit_format`
//! alone (this file names no other workspace crate).

use std::path::{Path, PathBuf};

use vhdkit_format::ops::{self, OpTask, OpsOptions, Target};
use vhdkit_format::{
    check, CreateOptions, Disk, DiskKind, ErrorKind, HResult, OpenOptions, TaskFailure, TaskHandle,
    VMTaskResult, VhdFile,
};
use vhdkit_testkit::{tempdir, MIB};

#[test]
fn create_and_open_gives_a_writable_disk_of_each_kind() {
    let dir = tempdir();
    for kind in [DiskKind::Fixed, DiskKind::Dynamic] {
        let path = dir.path().join(format!("{kind}.vhd"));
        let disk =
            Disk::create_and_open(&path, &CreateOptions::new(kind, 8 * MIB)).expect("create");
        assert_eq!(disk.kind(), kind);
        disk.write_at(b"written at once", 4096).expect("writable");
        disk.flush().expect("flush");
        drop(disk);
        let mut buf = [0u8; 15];
        Disk::open(&path)
            .expect("reopen")
            .read_at(&mut buf, 4096)
            .expect("read");
        assert_eq!(&buf, b"written at once");
    }
}

#[test]
fn create_and_open_of_a_child_opens_over_the_parent_it_was_given() {
    // The parent in another folder than the child.
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("base")).expect("mkdir");
    std::fs::create_dir(dir.path().join("children")).expect("mkdir");
    let base = dir.path().join("base/base.vhd");
    let b = Disk::create_and_open(&base, &CreateOptions::new(DiskKind::Dynamic, 8 * MIB))
        .expect("base");
    b.write_at(&[0xB5; 512], 0).expect("write");
    b.flush().expect("flush");
    drop(b);
    let child = dir.path().join("children/child.vhd");
    let disk = Disk::create_and_open(&child, &CreateOptions::differencing(&base)).expect("child");
    assert_eq!(disk.layers().len(), 2);
    let mut buf = [0u8; 512];
    disk.read_at(&mut buf, 0).expect("read through");
    assert_eq!(buf, [0xB5; 512]);
    disk.write_at(&[0xC6; 512], 0).expect("write the child");
    disk.flush().expect("flush");
    drop(disk);
    let mut base_bytes = [0u8; 512];
    Disk::open(&base)
        .expect("base")
        .read_at(&mut base_bytes, 0)
        .expect("read");
    assert_eq!(base_bytes, [0xB5; 512], "the parent is untouched");
}

#[test]
fn create_and_open_of_an_existing_path_is_refused_and_leaves_it() {
    let dir = tempdir();
    let path = dir.path().join("taken.vhd");
    std::fs::write(&path, b"someone else's").expect("write");
    let err = Disk::create_and_open(&path, &CreateOptions::new(DiskKind::Dynamic, 8 * MIB))
        .expect_err("exists");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&path).expect("read"), b"someone else's");
}

#[test]
fn every_path_argument_takes_str_string_path_and_pathbuf() {
    let dir = tempdir();
    let at = |name: &str| -> String { dir.path().join(name).to_string_lossy().into_owned() };
    let base: String = at("base.vhd");
    // &String, &str, String, PathBuf, &Path — whatever the caller holds.
    Disk::create(&base, &CreateOptions::new(DiskKind::Dynamic, 8 * MIB)).expect("create");
    Disk::create(
        at("child.vhd").as_str(),
        &CreateOptions::differencing(base.as_str()),
    )
    .expect("child");
    let child: PathBuf = PathBuf::from(at("child.vhd"));
    let opened = OpenOptions::new().parent(base.as_str());
    VhdFile::open(at("child.vhd"), &opened).expect("file");
    check::check(child.as_path(), &OpenOptions::new()).expect("check");
    ops::measure(&child, Target::Dynamic, &OpsOptions::default()).expect("measure");
    let found = ops::relink::search_parent(&child, &[dir.path()]).expect("search");
    assert_eq!(found, std::fs::canonicalize(&base).expect("canonical"));
    ops::relink::set_parent(at("child.vhd"), Path::new(&base), false).expect("relink");
    ops::convert_task(
        &child,
        at("flat.vhd"),
        Target::Dynamic,
        &OpsOptions::default(),
    )
    .expect("start")
    .join()
    .expect("convert");
    ops::compact_task(at("flat.vhd"), &OpsOptions::default())
        .expect("start")
        .join()
        .expect("compact");
    ops::merge_task(child, &OpsOptions::default())
        .expect("start")
        .join()
        .expect("merge");
}

#[test]
fn op_task_has_the_task_members_and_its_handle_watches() {
    let dir = tempdir();
    let src = dir.path().join("src.vhd");
    let d = Disk::create_and_open(&src, &CreateOptions::new(DiskKind::Dynamic, 16 * MIB))
        .expect("create");
    d.write_at(&[1; 4096], 0).expect("write");
    drop(d);
    let task: OpTask = ops::convert_task(
        &src,
        dir.path().join("dst.vhd"),
        Target::Fixed,
        &OpsOptions::default(),
    )
    .expect("start");
    let handle: TaskHandle = task.handle();
    assert_eq!(handle.id(), task.id());
    assert!(task.is_cancelable());
    assert!(task.description().starts_with("Converting"));
    let events: Vec<_> = task.subscribe().collect();
    assert!(task.wait_for_completion(None));
    assert!(task.is_complete() && !task.is_cancel_requested());
    assert_eq!(task.result(), Some(VMTaskResult::Success));
    assert_eq!(task.error(), HResult::S_OK);
    assert_eq!(task.error_description(), "");
    assert_eq!(task.percent_completed(), 100);
    assert_eq!(task.progress().task_percent, 100);
    let last = events.last().expect("the final event");
    assert!(last.is_final && last.phase_bytes_done == last.phase_bytes_total);
    let report = task.join().expect("converted");
    assert_eq!(report.file_size_after, 16 * MIB + 512);
    assert!(handle.is_complete());
}

#[test]
fn a_cancel_through_op_task_is_an_hresult_and_join_says_cancelled() {
    let dir = tempdir();
    let src = dir.path().join("src.vhd");
    Disk::create(&src, &CreateOptions::new(DiskKind::Dynamic, 64 * MIB)).expect("create");
    let dst = dir.path().join("dst.vhd");
    // Cancelled before it could start: the first check stops it.
    let task = ops::convert_task(&src, &dst, Target::Fixed, &OpsOptions::default()).expect("start");
    let cancelled: Result<(), Box<dyn std::error::Error>> = (|| {
        task.cancel()?;
        Ok(())
    })();
    cancelled.expect("cancelable");
    match task.join() {
        Err(TaskFailure::Cancelled) => assert!(!dst.exists(), "nothing left behind"),
        Ok(_) => eprintln!("the conversion finished before it noticed the cancel"),
        Err(other) => panic!("{other}"),
    }
}
