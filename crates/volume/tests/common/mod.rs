//! The volume crate's checks over real disks: what the scanner should report for each
//! file system, and the central check ([`verify`]). The disks themselves (images, loop
//! devices, mkfs, mounts, file plans, checkers) are `vhdkit_testkit::disks`.
#![allow(dead_code)]

use std::fs::File;

pub use vhdkit_testkit::disks::*;
use vhdkit_volume::{scan, DiskReport, FsKind, Partition};

/// The kind the scanner should report.
pub fn expected_kind(fs: &str) -> FsKind {
    match fs {
        "ext2" => FsKind::Ext2,
        "ext3" => FsKind::Ext3,
        f if f.starts_with("ext4") => FsKind::Ext4,
        "fat12" => FsKind::Fat12,
        "fat16" => FsKind::Fat16,
        "fat32" => FsKind::Fat32,
        "ntfs" => FsKind::Ntfs,
        "swap" => FsKind::Swap,
        "xfs" => FsKind::Xfs,
        _ => FsKind::Unknown,
    }
}

/// Scanning a test disk.
pub trait Scan {
    /// The scanner's report of the whole image.
    fn scan(&self) -> DiskReport;
}

impl Scan for Disk {
    fn scan(&self) -> DiskReport {
        let f = File::open(&self.path).expect("open image");
        scan(&f).expect("scan")
    }
}

/// The report's partition starting at `start`.
pub fn part_at(report: &DiskReport, start: u64) -> &Partition {
    report
        .partitions
        .iter()
        .find(|p| p.start == start && p.left_alone != Some(vhdkit_volume::Reason::Container))
        .unwrap_or_else(|| panic!("no partition at {start} in {report:#?}"))
}

/// The central check: scan the disk, fill every reported free range in a copy, then each
/// file system's checker passes and every surviving file reads back identical. Returns
/// the report (of the original).
pub fn verify(disk: &Disk, made: &[Made]) -> DiskReport {
    let report = disk.scan();
    let free = report.free_ranges();
    for r in &free {
        assert!(
            r.start < r.end && r.end <= disk.size,
            "range {r:?} outside the disk"
        );
    }
    let copy = disk.copy();
    fill(&copy, &free);
    for m in made {
        let p = part_at(&report, m.part.start);
        assert_eq!(
            p.fs,
            expected_kind(m.part.fs),
            "kind of {:?}: {p:#?}",
            m.part
        );
        for r in &p.free {
            assert!(
                r.start >= m.part.start && r.end <= m.part.start + m.part.len,
                "free range {r:?} outside partition {:?}",
                m.part
            );
        }
        let lo = copy.loopdev(&m.part);
        fsck(m.part.fs, &lo.dev);
        if is_fat(m.part.fs) {
            assert_fat_files(&lo.dev, &m.files);
        } else if let Some(kind) = mount_kind(m.part.fs) {
            let mnt = Mount::new(&lo.dev, kind, true);
            assert_files(mnt.path(), &m.files);
            mnt.unmount();
        }
        if let Some(fs_free) = m.fs_free {
            eprintln!(
                "FIGURES {}: scanner {} free bytes, the file system's own count {} ({:+.3}%)",
                m.part.fs,
                p.free_bytes,
                fs_free,
                (p.free_bytes as f64 - fs_free as f64) * 100.0 / fs_free.max(1) as f64
            );
            assert!(
                p.free_bytes <= fs_free + fs_free / 100
                    && p.free_bytes + m.part.len / 50 >= fs_free,
                "{}: {} free found vs {} reported",
                m.part.fs,
                p.free_bytes,
                fs_free
            );
        }
    }
    report
}
