//! Random writes into a small valid dynamic or differencing image built in memory,
//! compared against a plain byte-array model after every write, after reopening from
//! the final bytes, and checked by `check_file`.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vhdkit_format::check::check_file;
use vhdkit_format::image::MemBackend;
use vhdkit_format::spec::Severity;
use vhdkit_format::{Disk, OpenOptions};
use vhdkit_fuzz::{fixed_image, mem_backend, sparse_image, MemResolver, ParentInfo, GROWTH_LIMIT};

#[derive(Debug, Arbitrary)]
struct Op {
    offset: u32,
    len: u16,
    fill: u8,
    /// Aim past the end of the disk (must fail and change nothing).
    out_of_range: bool,
}

#[derive(Debug, Arbitrary)]
enum Action {
    /// One `Disk::write_at`.
    Write(Op),
    /// Up to eight runs in one `Disk::write_runs` (later runs win where they overlap).
    Runs(Vec<Op>),
    /// Reopen the image from its bytes.
    Reopen,
}

#[derive(Debug, Arbitrary)]
struct Input {
    differencing: bool,
    parent_fixed: bool,
    block_shift: u8,
    size_sectors: u16,
    parent_ops: Vec<Action>,
    ops: Vec<Action>,
}

const PARENT_ID: [u8; 16] = [0x11; 16];
const CHILD_ID: [u8; 16] = [0x22; 16];
const MAX_OPS: usize = 24;

/// A pattern that differs from byte to byte and from write to write.
fn pattern(fill: u8, len: usize, salt: usize) -> Vec<u8> {
    (0..len)
        .map(|i| fill ^ (i as u8).wrapping_mul(31) ^ (salt as u8))
        .collect()
}

fn open(files: &[Arc<MemBackend>], writable: bool) -> Disk {
    let resolver = MemResolver::new(files.to_vec(), false);
    let opts = OpenOptions::new().writable(writable).strict(true);
    let top = resolver
        .open_index(0, &opts)
        .expect("a valid image vhdkit wrote to opens");
    Disk::resolve(top, &opts, &resolver).expect("its chain resolves")
}

/// Whether the whole disk reads as `model`, compared 64 KiB at a time (buffers over
/// 128 KiB cost the sanitizer's allocator an mmap and page faults every time).
fn reads_as(disk: &Disk, model: &[u8]) -> bool {
    assert_eq!(disk.virtual_size(), model.len() as u64);
    let mut buf = vec![0u8; 64 << 10];
    model.chunks(64 << 10).enumerate().all(|(i, want)| {
        let got = &mut buf[..want.len()];
        disk.read_at(got, (i * (64 << 10)) as u64)
            .expect("read the disk");
        got == want
    })
}

fn assert_clean(bytes: Vec<u8>, what: &str) {
    let problems = check_file(&MemBackend::new(bytes)).expect("memory never fails");
    let errors: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| p.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "check finds errors in the {what}: {errors:#?}"
    );
}

/// Where an op writes: inside the disk, or (when it asks) across or past its end.
fn place(op: &Op, size: u64) -> (u64, usize) {
    let len = usize::from(op.len) % (64 << 10);
    if op.out_of_range {
        let off = size - (u64::from(op.offset) % (len as u64 + 1)).min(size);
        (off, len)
    } else {
        let off = u64::from(op.offset) % size;
        (off, len.min((size - off) as usize))
    }
}

/// Checks that `off..off + len` and one sector either side read as the model.
fn verify(disk: &Disk, model: &[u8], off: u64, len: usize, what: &str) {
    let size = model.len() as u64;
    let lo = off.saturating_sub(512);
    let hi = (off + len as u64 + 512).min(size);
    let mut back = vec![0u8; (hi - lo) as usize];
    disk.read_at(&mut back, lo).expect("read back");
    assert!(
        back[..] == model[lo as usize..hi as usize],
        "{what} ({len} bytes at {off:#x}) reads back wrong"
    );
}

/// Applies `actions` to file 0 of `files` (its parents read-only) and to `model`.
fn apply(files: &mut [Arc<MemBackend>], actions: &[Action], model: &mut [u8]) {
    let size = model.len() as u64;
    let mut disk = open(files, true);
    for (k, action) in actions.iter().take(MAX_OPS).enumerate() {
        match action {
            Action::Reopen => {
                drop(disk);
                let bytes = files[0].to_vec();
                files[0] = mem_backend(bytes, GROWTH_LIMIT);
                disk = open(files, true);
            }
            Action::Write(op) => {
                let (off, len) = place(op, size);
                let data = pattern(op.fill, len, k);
                if off + len as u64 > size {
                    assert!(
                        disk.write_at(&data, off).is_err(),
                        "write past the end accepted"
                    );
                    continue;
                }
                disk.write_at(&data, off).expect("write inside the disk");
                model[off as usize..off as usize + len].copy_from_slice(&data);
                verify(&disk, model, off, len, &format!("write {k}"));
            }
            Action::Runs(ops) => {
                let runs: Vec<(u64, Vec<u8>)> = ops
                    .iter()
                    .take(8)
                    .enumerate()
                    .map(|(j, op)| {
                        let (off, len) = place(op, size);
                        (off, pattern(op.fill, len, k * 8 + j))
                    })
                    .collect();
                let refs: Vec<(u64, &[u8])> =
                    runs.iter().map(|(o, d)| (*o, d.as_slice())).collect();
                if runs.iter().any(|(o, d)| o + d.len() as u64 > size) {
                    // All or nothing: one run past the end fails the call before any write.
                    assert!(
                        disk.write_runs(&refs).is_err(),
                        "runs past the end accepted"
                    );
                    continue;
                }
                disk.write_runs(&refs).expect("runs inside the disk");
                for (off, data) in &runs {
                    model[*off as usize..*off as usize + data.len()].copy_from_slice(data);
                }
                for (j, (off, data)) in runs.iter().enumerate() {
                    verify(
                        &disk,
                        model,
                        *off,
                        data.len(),
                        &format!("run {j} of write {k}"),
                    );
                }
            }
        }
    }
    disk.flush().expect("flush");
    assert!(reads_as(&disk, model), "whole disk differs from the model");
}

fuzz_target!(|input: Input| {
    let block_size = 512u32 << (input.block_shift % 10); // 512 B ..= 256 KiB
    let size = (1 + u64::from(input.size_sectors) % 2048) * 512; // 512 B ..= 1 MiB
    let mut model = vec![0u8; size as usize];

    let mut files: Vec<Arc<MemBackend>> = Vec::new();
    if input.differencing {
        let parent = if input.parent_fixed {
            fixed_image(size, &[], PARENT_ID)
        } else {
            sparse_image(size, block_size, None, PARENT_ID)
        };
        let mut parent_files = vec![mem_backend(parent, GROWTH_LIMIT)];
        apply(&mut parent_files, &input.parent_ops, &mut model);
        let info = ParentInfo {
            unique_id: PARENT_ID,
            name: "1.vhd".into(),
        };
        let child = sparse_image(size, block_size, Some(&info), CHILD_ID);
        files.push(mem_backend(child, GROWTH_LIMIT));
        files.push(parent_files.pop().expect("parent"));
    } else {
        let image = sparse_image(size, block_size, None, CHILD_ID);
        files.push(mem_backend(image, GROWTH_LIMIT));
    }
    assert!(reads_as(&open(&files, false), &model), "fresh disk differs");

    apply(&mut files, &input.ops, &mut model);

    // Reopen from the final bytes, read-only: the same content, and a clean check.
    let fresh: Vec<Arc<MemBackend>> = files
        .iter()
        .map(|f| Arc::new(MemBackend::new(f.to_vec())))
        .collect();
    let disk = open(&fresh, false);
    assert!(
        reads_as(&disk, &model),
        "reopened disk differs from the model"
    );
    drop(disk);
    for (i, f) in fresh.iter().enumerate() {
        assert_clean(f.to_vec(), if i == 0 { "top file" } else { "parent" });
    }
});
