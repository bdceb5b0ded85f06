//! Crash-safety simulation of writes into existing disks.
//!
//! A recording backend logs every write and sync the engine issues and can play dead
//! after N writes (every later call fails, as after a power cut). For every N, the bytes
//! stored up to that point must open, read the old or the new content in each sector of
//! the written range and the old content everywhere else, check without errors, and
//! accept further writes.
//!
//! A stricter model follows the design's assumption that only an aligned 512-byte sector
//! write is atomic and only `fsync` orders: any subset of the sectors written since the
//! last sync may have reached the disk. It is sampled per sync epoch.
//!
//! Finally, transient errors (one failed write or sync, then the device works again) must
//! not make later writes in the same session corrupt the image.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{create, create_child, pattern, read_all, Algorithm, Rng, MIB};
use vhdkit_format::check::check_file;
use vhdkit_format::image::{Backend, FsResolver, MemBackend};
use vhdkit_format::spec::{Severity, SECTOR_SIZE};
use vhdkit_format::{Disk, DiskKind, OpenOptions, VhdFile};

const SECTOR: usize = SECTOR_SIZE as usize;

/// One call the engine made.
#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
    Sync,
}

/// How the recording backend misbehaves.
#[derive(Debug, Default, Clone, Copy)]
struct Faults {
    /// After this many writes (and length changes), every call fails for good.
    dead_after_writes: Option<usize>,
    /// This write (0-based) fails once; the device works again afterwards.
    fail_write_once: Option<usize>,
    /// This sync (0-based) fails once.
    fail_sync_once: Option<usize>,
}

#[derive(Debug)]
struct Recorder {
    inner: MemBackend,
    log: Mutex<Vec<Op>>,
    faults: Faults,
    counts: Mutex<(usize, usize)>,
}

impl Recorder {
    fn new(bytes: Vec<u8>, faults: Faults) -> Arc<Recorder> {
        Arc::new(Recorder {
            inner: MemBackend::new(bytes),
            log: Mutex::new(Vec::new()),
            faults,
            counts: Mutex::new((0, 0)),
        })
    }

    fn bytes(&self) -> Vec<u8> {
        self.inner.to_vec()
    }

    fn log(&self) -> Vec<Op> {
        self.log.lock().expect("log").clone()
    }

    /// Counts a write; says whether it may proceed.
    fn admit_write(&self) -> io::Result<()> {
        let mut c = self.counts.lock().expect("counts");
        if self.faults.dead_after_writes.is_some_and(|n| c.0 >= n) {
            return Err(io::Error::other("simulated crash: device gone"));
        }
        let i = c.0;
        c.0 += 1;
        if self.faults.fail_write_once == Some(i) {
            return Err(io::Error::other("simulated transient write error"));
        }
        Ok(())
    }
}

impl Backend for Recorder {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.admit_write()?;
        self.log.lock().expect("log").push(Op::Write {
            offset,
            data: buf.to_vec(),
        });
        self.inner.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.admit_write()?;
        self.log.lock().expect("log").push(Op::SetLen(len));
        self.inner.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        let mut c = self.counts.lock().expect("counts");
        if self.faults.dead_after_writes.is_some_and(|n| c.0 >= n) {
            // A sync after the crash point never returns success.
            return Err(io::Error::other("simulated crash: device gone"));
        }
        let i = c.1;
        c.1 += 1;
        if self.faults.fail_sync_once == Some(i) {
            return Err(io::Error::other("simulated transient sync error"));
        }
        self.log.lock().expect("log").push(Op::Sync);
        Ok(())
    }
}

/// Opens the image held by `backend` as if it were the file at `path` (parents are
/// looked up next to `path` on the real file system).
fn open(path: &Path, backend: Arc<dyn Backend>, writable: bool) -> vhdkit_format::Result<Disk> {
    let opts = OpenOptions::new().writable(writable);
    let top = VhdFile::from_backend(path, backend, &opts)?;
    Disk::resolve(top, &opts, &FsResolver)
}

/// A disk image in memory, the file it stands for, and the write to make into it.
struct Scenario {
    name: &'static str,
    path: PathBuf,
    base: Vec<u8>,
    offset: u64,
    data: Vec<u8>,
    /// A later write that needs a block of its own, for the "writes still work after
    /// the crash" check.
    after: (u64, Vec<u8>),
    _dir: tempfile::TempDir,
}

impl Scenario {
    /// Whole-disk content before the write.
    fn old(&self) -> Vec<u8> {
        read_all(
            &open(
                &self.path,
                Arc::new(MemBackend::new(self.base.clone())),
                false,
            )
            .expect("open base"),
        )
    }

    /// Whole-disk content after the write.
    fn new_content(&self) -> Vec<u8> {
        let mut v = self.old();
        let o = self.offset as usize;
        v[o..o + self.data.len()].copy_from_slice(&self.data);
        v
    }

    /// Sectors the write may change.
    fn touched(&self) -> std::ops::Range<usize> {
        let first = self.offset as usize / SECTOR;
        let last = (self.offset as usize + self.data.len()).div_ceil(SECTOR);
        first..last
    }
}

const BS: u32 = 8 * 1024;

/// Dynamic 3 MiB, 8 KiB blocks (384 BAT entries: three BAT sectors). Blocks 0 and 127 are
/// allocated, 127 only in its first half. The write covers the end of block 126 (new,
/// BAT sector 0), all of 127 (existing, bits half set) and the start of 128 (new, BAT
/// sector 1), unaligned at both ends.
fn dynamic_scenario() -> Scenario {
    let dir = common::fast_tempdir();
    let path = create(dir.path(), "d.vhd", DiskKind::Dynamic, 3 * MIB, BS);
    let bs = u64::from(BS);
    common::write(&path, &pattern(20, 5000), 100);
    common::write(&path, &pattern(21, BS as usize / 2), 127 * bs);
    let base = std::fs::read(&path).expect("read");
    Scenario {
        name: "dynamic",
        path,
        base,
        offset: 127 * bs - 1300,
        data: pattern(22, BS as usize + 2900),
        after: (200 * bs + 512, pattern(23, 1536)),
        _dir: dir,
    }
}

/// Differencing child (8 KiB blocks) over a 3 MiB dynamic parent full of data. The
/// child has block 10 allocated with only its first 4 KiB present. The write puts zeros
/// from inside block 10 (over sectors the child does not hold: the parent shows there)
/// into block 11 (new).
fn differencing_scenario() -> Scenario {
    let dir = common::fast_tempdir();
    let parent = create(
        dir.path(),
        "p.vhd",
        DiskKind::Dynamic,
        3 * MIB,
        2 * 1024 * 1024,
    );
    common::write(&parent, &pattern(30, 3 * MIB as usize), 0);
    let path = create_child(dir.path(), "c.vhd", &parent, BS);
    let bs = u64::from(BS);
    common::write(&path, &pattern(31, 4096), 10 * bs);
    let base = std::fs::read(&path).expect("read");
    Scenario {
        name: "differencing",
        path,
        base,
        offset: 10 * bs + 2048 + 3,
        data: vec![0; BS as usize],
        after: (100 * bs + 4096, pattern(33, 4096)),
        _dir: dir,
    }
}

/// Fixed 3 MiB: data writes only.
fn fixed_scenario() -> Scenario {
    let dir = common::fast_tempdir();
    let path = create(dir.path(), "f.vhd", DiskKind::Fixed, 3 * MIB, 0);
    common::write(&path, &pattern(40, 3 * MIB as usize), 0);
    let base = std::fs::read(&path).expect("read");
    Scenario {
        name: "fixed",
        path,
        base,
        offset: 77,
        data: pattern(41, 70_000),
        after: (2 * MIB, pattern(42, 512)),
        _dir: dir,
    }
}

/// Runs the scenario's write on a healthy recorder and returns the log.
fn reference_log(s: &Scenario) -> Vec<Op> {
    let rec = Recorder::new(s.base.clone(), Faults::default());
    let disk = open(&s.path, rec.clone(), true).expect("open");
    disk.write_at(&s.data, s.offset).expect("write");
    disk.flush().expect("flush");
    drop(disk);
    let log = rec.log();
    assert!(!log.is_empty(), "{}: the write issued no I/O", s.name);
    let after = open(&s.path, Arc::new(MemBackend::new(rec.bytes())), false).expect("open");
    assert!(
        read_all(&after) == s.new_content(),
        "{}: healthy write",
        s.name
    );
    log
}

/// Checks one possible on-disk state after a crash: it opens, reads old or new in each
/// touched sector and old elsewhere, checks without errors, and takes a further write.
fn verify_crash_state(s: &Scenario, bytes: Vec<u8>, old: &[u8], new: &[u8], what: &str) {
    verify_crash_state_with(s, bytes, old, new, what, false)
}

/// [`verify_crash_state`]; with `end_footer_may_be_lost`, check may also report the one
/// error of a file whose length grew while the footer written there was lost: "no footer
/// at the end of the file; the copy at offset 0 is intact (repairable)".
fn verify_crash_state_with(
    s: &Scenario,
    bytes: Vec<u8>,
    old: &[u8],
    new: &[u8],
    what: &str,
    end_footer_may_be_lost: bool,
) {
    let disk = open(&s.path, Arc::new(MemBackend::new(bytes.clone())), false)
        .unwrap_or_else(|e| panic!("{}: {what}: the image does not open: {e}", s.name));
    let seen = read_all(&disk);
    drop(disk);
    let touched = s.touched();
    for (i, ((sec, o), n)) in seen
        .chunks(SECTOR)
        .zip(old.chunks(SECTOR))
        .zip(new.chunks(SECTOR))
        .enumerate()
    {
        if touched.contains(&i) {
            assert!(
                sec == o || sec == n,
                "{}: {what}: written sector {i} reads neither the old nor the new content",
                s.name
            );
        } else {
            assert!(
                sec == o,
                "{}: {what}: sector {i} outside the write changed",
                s.name
            );
        }
    }
    let problems = check_file(&MemBackend::new(bytes.clone())).expect("check");
    let errors: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .filter(|p| {
            !(end_footer_may_be_lost
                && p.structure == "footer"
                && p.field == "cookie"
                && p.message.contains("copy at offset 0 is intact"))
        })
        .map(|p| p.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{}: {what}: check finds {errors:#?}",
        s.name
    );

    // `check --repair` makes it clean without changing what it reads.
    let copy = s.path.with_file_name("repaired.vhd");
    std::fs::write(&copy, &bytes).expect("write a copy");
    vhdkit_format::ops::repair::repair(&copy)
        .unwrap_or_else(|e| panic!("{}: {what}: repair: {e}", s.name));
    let report = vhdkit_format::check::check(&copy, &OpenOptions::new()).expect("check");
    let left: Vec<String> = report.problems().map(|(_, p)| p.to_string()).collect();
    assert!(
        report.is_clean(),
        "{}: {what}: after repair: {left:#?}",
        s.name
    );
    assert!(
        read_all(&Disk::open(&copy).expect("open the repaired copy")) == seen,
        "{}: {what}: repair changed the content",
        s.name
    );
    std::fs::remove_file(&copy).expect("rm");

    // The image takes further writes, which land where asked and nowhere else.
    let backend = Arc::new(MemBackend::new(bytes));
    let disk = open(&s.path, backend.clone(), true).expect("open for writing");
    let (at, data) = &s.after;
    disk.write_at(data, *at)
        .unwrap_or_else(|e| panic!("{}: {what}: write after recovery: {e}", s.name));
    disk.flush().expect("flush");
    drop(disk);
    let mut expected = seen;
    expected[*at as usize..*at as usize + data.len()].copy_from_slice(data);
    let reopened = open(&s.path, backend.clone(), false).expect("reopen");
    assert!(
        read_all(&reopened) == expected,
        "{}: {what}: after a further write the disk does not read as expected",
        s.name
    );
    let problems = check_file(&*backend).expect("check");
    assert!(
        problems.iter().all(|p| p.severity < Severity::Error),
        "{}: {what}: check after a further write: {problems:#?}",
        s.name
    );
}

fn writes_in(log: &[Op]) -> usize {
    log.iter().filter(|o| !matches!(o, Op::Sync)).count()
}

fn crash_after_every_write(s: &Scenario) {
    let total = writes_in(&reference_log(s));
    let (old, new) = (s.old(), s.new_content());
    for n in 0..=total {
        let rec = Recorder::new(
            s.base.clone(),
            Faults {
                dead_after_writes: Some(n),
                ..Faults::default()
            },
        );
        let disk = open(&s.path, rec.clone(), true).expect("open");
        let result = disk.write_at(&s.data, s.offset).and_then(|_| disk.flush());
        drop(disk);
        if n < total {
            assert!(
                result.is_err(),
                "{}: the write ignored a crash after {n} writes",
                s.name
            );
        }
        verify_crash_state(
            s,
            rec.bytes(),
            &old,
            &new,
            &format!("crash after {n} of {total} writes"),
        );
    }
}

#[test]
fn dynamic_write_crashing_after_any_write_leaves_old_or_new_content() {
    crash_after_every_write(&dynamic_scenario());
}

#[test]
fn differencing_write_crashing_after_any_write_leaves_old_or_new_content() {
    crash_after_every_write(&differencing_scenario());
}

#[test]
fn fixed_write_crashing_after_any_write_leaves_old_or_new_content() {
    crash_after_every_write(&fixed_scenario());
}

/// The writes of one epoch cut into aligned sector pieces (the atomic unit assumed).
fn sector_pieces(epoch: &[Op]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for op in epoch {
        match op {
            Op::Write { offset, data } => {
                let mut pos = 0usize;
                while pos < data.len() {
                    let at = offset + pos as u64;
                    let n = (SECTOR - (at % SECTOR_SIZE) as usize).min(data.len() - pos);
                    out.push((at, data[pos..pos + n].to_vec()));
                    pos += n;
                }
            }
            Op::SetLen(len) => panic!("no length change expected in a write (set_len {len})"),
            Op::Sync => unreachable!("epochs hold no syncs"),
        }
    }
    out
}

fn apply(bytes: &mut Vec<u8>, at: u64, data: &[u8]) {
    let end = at as usize + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[at as usize..end].copy_from_slice(data);
}

fn unordered_sectors_within_sync_epochs(s: &Scenario, samples: usize) {
    let log = reference_log(s);
    let (old, new) = (s.old(), s.new_content());
    let epochs: Vec<&[Op]> = log.split(|o| matches!(o, Op::Sync)).collect();
    let mut durable = s.base.clone();
    // The sampled subsets: xorshift64 from a fixed state.
    let mut rng = Rng::from_state(Algorithm::XorShift, 0x5EED_1234_ABCD_0001);
    for (e, epoch) in epochs.iter().enumerate() {
        let pieces = sector_pieces(epoch);
        let n = pieces.len();
        let mut subsets: Vec<Vec<bool>> = vec![vec![false; n], vec![true; n]];
        // Each piece alone and all but each piece: every piece when there are few,
        // else the first ones (footer, bitmaps, zero fill), the last ones and a spread.
        let picked: Vec<usize> = if n <= 12 {
            (0..n).collect()
        } else {
            let mut v: Vec<usize> = (0..5).chain(n - 3..n).collect();
            v.extend((1..5).map(|k| k * n / 5));
            v.sort_unstable();
            v.dedup();
            v
        };
        for i in picked {
            let mut only = vec![false; n];
            only[i] = true;
            subsets.push(only);
            let mut all_but = vec![true; n];
            all_but[i] = false;
            subsets.push(all_but);
        }
        for _ in 0..samples {
            subsets.push((0..n).map(|_| rng.next_u64().is_multiple_of(2)).collect());
        }
        // The file's length is metadata the file system may commit apart from the data
        // written past the old end: also try the grown length with pieces lost.
        let grown = pieces
            .iter()
            .map(|(at, d)| *at as usize + d.len())
            .max()
            .unwrap_or(0);
        for (k, keep) in subsets.iter().enumerate() {
            let mut bytes = durable.clone();
            for ((at, data), _) in pieces.iter().zip(keep).filter(|(_, &k)| k) {
                apply(&mut bytes, *at, data);
            }
            let what = format!(
                "epoch {e} of {}, subset {k} of {n} sector writes",
                epochs.len()
            );
            if bytes.len() < grown && k < 2 + 2 * 5 {
                let mut longer = bytes.clone();
                longer.resize(grown, 0);
                let what = format!("{what}, length grown to {grown}");
                verify_crash_state_with(s, longer, &old, &new, &what, true);
            }
            verify_crash_state(s, bytes, &old, &new, &what);
        }
        for (at, data) in pieces {
            apply(&mut durable, at, &data);
        }
    }
}

#[test]
fn dynamic_write_losing_any_unsynced_sectors_leaves_old_or_new_content() {
    unordered_sectors_within_sync_epochs(&dynamic_scenario(), 12);
}

#[test]
fn differencing_write_losing_any_unsynced_sectors_leaves_old_or_new_content() {
    unordered_sectors_within_sync_epochs(&differencing_scenario(), 12);
}

/// One write or sync of a first write fails once, the device then works again: a second
/// write in the same session must succeed without harming the first range, and the image
/// must check clean of errors.
fn transient_fault_then_more_writes(s: &Scenario) {
    let log = reference_log(s);
    let writes = writes_in(&log);
    let syncs = log.len() - writes;
    let (old, new) = (s.old(), s.new_content());
    let faults = (0..writes)
        .map(|i| Faults {
            fail_write_once: Some(i),
            ..Faults::default()
        })
        .chain((0..syncs).map(|i| Faults {
            fail_sync_once: Some(i),
            ..Faults::default()
        }));
    for f in faults {
        let rec = Recorder::new(s.base.clone(), f);
        let disk = open(&s.path, rec.clone(), true).expect("open");
        let first = disk.write_at(&s.data, s.offset).and_then(|_| disk.flush());
        assert!(
            first.is_err(),
            "{}: {f:?}: the fault went unreported",
            s.name
        );
        let (at, data) = &s.after;
        disk.write_at(data, *at)
            .and_then(|_| disk.flush())
            .unwrap_or_else(|e| panic!("{}: {f:?}: second write: {e}", s.name));

        // In the session: the second write reads back; the first range old or new.
        let seen = read_all(&disk);
        drop(disk);
        let a = *at as usize;
        assert!(
            seen[a..a + data.len()] == data[..],
            "{}: {f:?}: second write lost",
            s.name
        );
        let after_range = a / SECTOR..(a + data.len()).div_ceil(SECTOR);
        for i in s.touched() {
            let r = i * SECTOR..(i + 1) * SECTOR;
            if after_range.contains(&i) {
                continue;
            }
            assert!(
                seen[r.clone()] == old[r.clone()] || seen[r.clone()] == new[r.clone()],
                "{}: {f:?}: sector {i} of the failed write reads garbage in the session",
                s.name
            );
        }
        // On disk: opens, reads what the session read, checks without errors.
        let bytes = rec.bytes();
        let reopened = open(&s.path, Arc::new(MemBackend::new(bytes.clone())), false)
            .unwrap_or_else(|e| panic!("{}: {f:?}: reopen: {e}", s.name));
        let on_disk = read_all(&reopened);
        assert!(
            on_disk[a..a + data.len()] == data[..],
            "{}: {f:?}: second write not on disk",
            s.name
        );
        for i in s.touched() {
            let r = i * SECTOR..(i + 1) * SECTOR;
            if after_range.contains(&i) {
                continue;
            }
            assert!(
                on_disk[r.clone()] == old[r.clone()] || on_disk[r.clone()] == new[r.clone()],
                "{}: {f:?}: sector {i} of the failed write reads garbage after reopening",
                s.name
            );
        }
        let problems = check_file(&MemBackend::new(bytes)).expect("check");
        assert!(
            problems.iter().all(|p| p.severity < Severity::Error),
            "{}: {f:?}: {problems:#?}",
            s.name
        );
    }
}

#[test]
fn dynamic_write_after_a_transient_fault_does_not_reuse_the_failed_block() {
    transient_fault_then_more_writes(&dynamic_scenario());
}

#[test]
fn differencing_write_after_a_transient_fault_does_not_reuse_the_failed_block() {
    transient_fault_then_more_writes(&differencing_scenario());
}
