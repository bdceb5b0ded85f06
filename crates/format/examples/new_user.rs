//! The new-user check: a program written from `vhdkit-format`'s rustdoc alone, with
//! `vhdkit-format` as its one dependency (it names no other crate). It makes a
//! differencing chain, writes into it, compacts the child as a task while showing its
//! progress, starts a conversion and cancels it, and meets a refusal — every error
//! handled with `?`.
//!
//! ```sh
//! cargo run -p vhdkit-format --example new_user            # in a fresh temporary folder
//! cargo run -p vhdkit-format --example new_user -- /some/empty/folder
//! ```
//!
//! `cargo test` runs it too (`test = true` in `crates/format/Cargo.toml`).

use std::error::Error;
use std::path::{Path, PathBuf};

use vhdkit_format::ops::{self, OpsOptions, Target};
use vhdkit_format::{CreateOptions, Disk, DiskKind, ErrorKind, HResult, TaskFailure, VMTaskResult};

const MIB: u64 = 1 << 20;

fn main() -> Result<(), Box<dyn Error>> {
    match std::env::args_os().nth(1) {
        Some(dir) => run(Path::new(&dir)),
        None => run_in_fresh_dir(),
    }
}

/// [`run`] in a new folder, removed afterwards.
fn run_in_fresh_dir() -> Result<(), Box<dyn Error>> {
    let dir = fresh_dir()?;
    let result = run(&dir);
    std::fs::remove_dir_all(&dir)?;
    result
}

/// A new, empty folder under the system's temporary folder.
fn fresh_dir() -> std::io::Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("vhdkit-new-user-{}-{stamp}", std::process::id()));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

fn run(dir: &Path) -> Result<(), Box<dyn Error>> {
    // 1. A chain: a dynamic base with data, a differencing child over it.
    let base_path = dir.join("base.vhd");
    let base = Disk::create_and_open(&base_path, &CreateOptions::new(DiskKind::Dynamic, 64 * MIB))?;
    base.write_at(&vec![0xAB; 4 * MIB as usize], 0)?;
    base.flush()?;
    drop(base); // releases the writer's lock: the child opens it read-only

    let child_path = dir.join("child.vhd");
    let child = Disk::create_and_open(&child_path, &CreateOptions::differencing(&base_path))?;
    child.write_at(b"written in the child", MIB)?;
    // Zeros over a range the base leaves empty: a block the compaction can give back.
    child.write_at(&vec![0; 2 * MIB as usize], 16 * MIB)?;
    child.flush()?;
    let mut head = [0u8; 4];
    child.read_at(&mut head, 0)?;
    assert_eq!(
        head, [0xAB; 4],
        "the child reads its parent where it holds nothing"
    );
    let mut mine = [0u8; 20];
    child.read_at(&mut mine, MIB)?;
    assert_eq!(&mine, b"written in the child");
    println!(
        "chain: {} over {} ({} levels, {} bytes)",
        child_path.display(),
        base_path.display(),
        child.layers().len(),
        child.virtual_size()
    );
    drop(child);

    // 2. Compact the child, showing its progress.
    let task = ops::compact_task(&child_path, &OpsOptions::default())?;
    println!("{} (task {})", task.description(), task.id());
    let mut shown = 0;
    for event in task.subscribe() {
        assert!(
            event.task_percent >= shown,
            "the percentage never goes down"
        );
        shown = event.task_percent;
        println!(
            "  {:>7} {:>3}%  phase {:>3}%  {}/{} bytes",
            event.phase,
            event.task_percent,
            event.phase_percent,
            event.phase_bytes_done,
            event.phase_bytes_total
        );
    }
    assert_eq!(task.result(), Some(VMTaskResult::Success));
    let report = task.join()?;
    println!(
        "  released {} of {} blocks; {} -> {} bytes",
        report.blocks_released,
        report.blocks_total,
        report.file_size_before,
        report.file_size_after
    );
    assert!(report.blocks_released >= 1, "the block of zeros went back");

    // 3. Flatten the chain into a new file, and cancel it.
    let flat = dir.join("flat.vhd");
    let task = ops::merge_to_task(&child_path, &flat, Target::Fixed, &OpsOptions::default())?;
    task.cancel()?; // an HResult: E_FAIL if the task could not be cancelled
    match task.join() {
        Err(TaskFailure::Cancelled) => {
            assert!(!flat.exists(), "a cancelled conversion leaves nothing");
            println!("merge-to cancelled: {} was never created", flat.display());
        }
        Ok(report) => println!(
            "merge-to finished before it saw the cancel: {} bytes",
            report.file_size_after
        ),
        Err(other) => return Err(other.into()),
    }

    // 4. A refusal, before any work: the destination exists.
    let taken = dir.join("taken.vhd");
    std::fs::write(&taken, b"not yours")?;
    match ops::convert_task(&child_path, &taken, Target::Dynamic, &OpsOptions::default()) {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            assert_eq!(e.hresult(), HResult::E_ALREADY_EXISTS);
            println!("refused: {e} ({:?})", e.hresult());
        }
        Err(e) => return Err(e.into()),
        Ok(_) => return Err("an existing destination must be refused".into()),
    }
    assert_eq!(std::fs::read(&taken)?, b"not yours");

    // 5. The chain still reads as written.
    let child = Disk::open(&child_path)?;
    child.read_at(&mut mine, MIB)?;
    assert_eq!(&mine, b"written in the child");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_new_user_program_runs() {
        super::run_in_fresh_dir().expect("the program succeeds");
    }
}
