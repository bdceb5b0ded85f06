//! The library's VHDX outputs: `Disk::create` and `ops::convert_task` / `merge_to_task`
//! with `ContainerFormat::Vhdx` (by the destination's extension or by the options),
//! cancelled at many points (no destination, no temporary file, the source untouched)
//! or completed (qemu-img reads the result byte for byte), and a parent whose log was
//! not replayed yet (its metadata as the log leaves it).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vhdkit_format::image::ContainerFormat;
use vhdkit_format::ops::{self, OpsOptions, Target};
use vhdkit_format::vhdx::ParsedVhdx;
use vhdkit_format::{CreateOptions, Disk, DiskKind};
use vhdkit_task::{HResult, VMTaskResult};

use common::{dir_names, have, run_cmd, Tool, MIB};

/// The raw bytes qemu-img reads from the VHDX at `path`.
fn qemu_vhdx_raw(path: &Path) -> Vec<u8> {
    have(Tool::QemuImg);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.raw");
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["convert", "-f", "vhdx", "-O", "raw"])
            .arg(path)
            .arg(&out),
    );
    assert_eq!(r.code, 0, "qemu-img: {}", r.stderr);
    std::fs::read(&out).unwrap()
}

/// A dynamic VHD of 24 MiB with data in most 1 MiB pieces (some left empty).
fn source(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let src = dir.join("src.vhd");
    let size = 24 * MIB;
    Disk::create(&src, &CreateOptions::new(DiskKind::Dynamic, size)).unwrap();
    let disk = Disk::open_rw(&src).unwrap();
    let mut want = vec![0u8; size as usize];
    for piece in 0..24u64 {
        if piece % 5 == 3 {
            continue;
        }
        let at = piece * MIB + 4096;
        let bytes = vec![piece as u8 + 1; 300 * 1024];
        disk.write_at(&bytes, at).unwrap();
        want[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
    }
    disk.flush().unwrap();
    (src, want)
}

fn cancelled_at_many_points(merge_to: bool, target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let (mut src, mut want) = source(dir.path());
    let mut names = vec!["src.vhd".to_string()];
    if merge_to {
        // merge-to flattens a chain: a child holding more data over the source.
        let child = dir.path().join("child.vhd");
        Disk::create(&child, &CreateOptions::differencing(&src)).unwrap();
        let disk = Disk::open_rw(&child).unwrap();
        let bytes = vec![0xEE; 3 * MIB as usize];
        disk.write_at(&bytes, 5 * MIB + 512).unwrap();
        disk.flush().unwrap();
        want[(5 * MIB + 512) as usize..(8 * MIB + 512) as usize].copy_from_slice(&bytes);
        src = child;
        names.insert(0, "child.vhd".to_string());
    }
    let before = std::fs::read(&src).unwrap();
    // No extension: the options choose the container.
    let dst = dir.path().join("out");
    let opts = OpsOptions {
        format: Some(ContainerFormat::Vhdx),
        vhdx_block_size: MIB as u32,
        chunk_bytes: MIB,
        sync_bytes: 0,
        ..OpsOptions::default()
    };
    let start = || {
        if merge_to {
            ops::merge_to_task(&src, &dst, target, &opts)
        } else {
            ops::convert_task(&src, &dst, target, &opts)
        }
        .expect("starts")
    };
    let (mut cancelled, mut finished) = (0, 0);
    for k in 0..30usize {
        let task = start();
        let rx = task.subscribe();
        let mut seen = 0;
        if k == 0 {
            task.cancel().unwrap();
        }
        for e in rx.iter() {
            if e.is_final {
                break;
            }
            seen += 1;
            if seen == k {
                task.cancel().unwrap();
            }
        }
        assert!(task.wait_for_completion(Some(Duration::from_secs(60))));
        match task.result().unwrap() {
            VMTaskResult::Cancelled => {
                cancelled += 1;
                assert_eq!(task.error(), HResult::E_ABORT);
                assert!(
                    !dst.exists(),
                    "cancelled after {k} events: a destination is left"
                );
                assert_eq!(dir_names(dir.path()), names);
            }
            VMTaskResult::Success => {
                finished += 1;
                assert_eq!(&std::fs::read(&dst).unwrap()[..8], b"vhdxfile");
                assert!(qemu_vhdx_raw(&dst) == want, "the finished result");
                std::fs::remove_file(&dst).unwrap();
            }
            other => panic!("{other:?}: {}", task.error_description()),
        }
        assert!(std::fs::read(&src).unwrap() == before, "the source changed");
    }
    assert!(
        cancelled >= 10,
        "{cancelled} cancelled, {finished} finished"
    );
    assert!(finished >= 1, "no run finished");
}

#[test]
fn convert_to_dynamic_vhdx_cancelled_anywhere_leaves_nothing() {
    cancelled_at_many_points(false, Target::Dynamic);
}

#[test]
fn merge_to_fixed_vhdx_cancelled_anywhere_leaves_nothing() {
    cancelled_at_many_points(true, Target::Fixed);
}

#[test]
fn the_extension_chooses_the_container_and_the_options_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let (src, want) = source(dir.path());
    let opts = OpsOptions::default();
    let vhdx = dir.path().join("a.VHDX");
    ops::convert_task(&src, &vhdx, Target::Dynamic, &opts)
        .unwrap()
        .join()
        .unwrap();
    let parsed = ParsedVhdx::decode(&std::fs::read(&vhdx).unwrap()).unwrap();
    assert_eq!(parsed.metadata.file_parameters.block_size, 32 << 20);
    assert!(qemu_vhdx_raw(&vhdx) == want);
    let vhd = dir.path().join("b.vhdx");
    let as_vhd = OpsOptions {
        format: Some(ContainerFormat::Vhd),
        ..OpsOptions::default()
    };
    ops::convert_task(&src, &vhd, Target::Dynamic, &as_vhd)
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(Disk::open(&vhd).unwrap().virtual_size(), 24 * MIB);
    // A raw result has no container, whatever the extension.
    let raw = dir.path().join("c.vhdx");
    ops::convert_task(&src, &raw, Target::Raw, &opts)
        .unwrap()
        .join()
        .unwrap();
    assert!(std::fs::read(&raw).unwrap() == want);
}

#[test]
fn a_child_takes_its_parents_metadata_as_the_log_leaves_it() {
    use vhdkit_format::vhdx::log::{LogCursor, LogWrite};
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhdx");
    Disk::create(&base, &CreateOptions::new(DiskKind::Dynamic, 64 * MIB)).unwrap();
    // A log entry, not applied, that changes the virtual size to 128 MiB (as a resize
    // interrupted after its log entry was written): the 4 KiB sectors of the metadata
    // region that change.
    let mut bytes = std::fs::read(&base).unwrap();
    let parsed = ParsedVhdx::decode(&bytes).unwrap();
    let mut md = parsed.metadata.clone();
    md.virtual_size = 128 * MIB;
    let region = parsed.regions.metadata;
    let r = region.offset as usize..region.offset as usize + region.length as usize;
    let mut encoded = bytes[r].to_vec();
    let new = md.encode();
    encoded[..new.len()].copy_from_slice(&new);
    let writes: Vec<LogWrite> = encoded
        .chunks(4096)
        .enumerate()
        .filter_map(|(i, sector)| {
            let at = region.offset as usize + i * 4096;
            (bytes[at..at + 4096] != *sector).then(|| LogWrite::Data {
                offset: at as u64,
                bytes: sector.to_vec(),
            })
        })
        .collect();
    assert!(!writes.is_empty());
    let log_guid = uuid::Uuid::new_v4();
    let len = bytes.len() as u64;
    let header = parsed.header.header;
    let placed = LogCursor::new(u64::from(header.log_length))
        .append(log_guid, len, len, &writes)
        .unwrap();
    let (log_at, log_len) = (header.log_offset as usize, header.log_length as usize);
    placed.write_into(&mut bytes[log_at..log_at + log_len]);
    let mut h = header;
    h.log_guid = log_guid;
    let (next, slot) = parsed.header.next(h).unwrap();
    let at = slot.offset() as usize;
    bytes[at..at + 4096].copy_from_slice(&next.encode());
    std::fs::write(&base, &bytes).unwrap();
    assert_eq!(
        ParsedVhdx::decode(&bytes).unwrap().metadata.virtual_size,
        128 * MIB
    );

    let child = dir.path().join("child.avhdx");
    Disk::create(&child, &CreateOptions::differencing(&base)).unwrap();
    let c = ParsedVhdx::decode(&std::fs::read(&child).unwrap()).unwrap();
    assert_eq!(c.metadata.virtual_size, 128 * MIB, "the replayed size");
    assert_eq!(
        c.metadata.parent_locator.unwrap().parent_linkage(),
        Some(header.data_write_guid)
    );
    assert!(
        std::fs::read(&base).unwrap() == bytes,
        "the parent is only read"
    );
}
