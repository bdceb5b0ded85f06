//! Inputs of the `volume_*` targets: a sparse disk image, and the invariants every
//! report must keep.
//!
//! Input format (little-endian): a `u32` disk size in 512-byte sectors (capped at
//! [`MAX_DISK`]), then chunks of `u32` sector offset, `u16` length, and that many bytes.
//! A chunk length of `0xFFFF` is a fill instead: a `u32` sector count and one byte.
//! Everything not covered by a chunk reads as zeros, so a real 16 MiB file system is a
//! seed of a few tens of KiB (its non-zero sectors; `volume_seeds.sh` makes them).

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;

use vhdkit_volume::{DiskReport, FsReport, ReadAt};

/// Largest disk a fuzz input may declare: big enough for every file system the seeds
/// hold, small enough that reading every bitmap stays within the time limit.
pub const MAX_DISK: u64 = 256 << 20;

const SECTOR: u64 = 512;
/// A chunk length meaning "fill": `u32` sector count and one byte follow.
const FILL: usize = 0xFFFF;
/// Most sectors one fill chunk sets (16 MiB), bounding the map's memory.
const MAX_FILL: u64 = 32768;

/// A disk of zeros with some sectors set.
pub struct SparseDisk {
    size: u64,
    sectors: BTreeMap<u64, Box<[u8; 512]>>,
}

impl SparseDisk {
    /// Decodes an input; any byte string is a valid (maybe empty) disk.
    pub fn decode(data: &[u8]) -> SparseDisk {
        let size = data
            .get(..4)
            .map(|b| u64::from(u32::from_le_bytes(b.try_into().expect("4 bytes"))))
            .unwrap_or(0)
            .saturating_mul(SECTOR)
            .min(MAX_DISK);
        let mut disk = SparseDisk {
            size,
            sectors: BTreeMap::new(),
        };
        let mut rest = data.get(4..).unwrap_or(&[]);
        while rest.len() >= 6 {
            let sector = u64::from(u32::from_le_bytes(rest[..4].try_into().expect("4")));
            let len = usize::from(u16::from_le_bytes(rest[4..6].try_into().expect("2")));
            if len == FILL && rest.len() >= 11 {
                // A run of sectors filled with one byte (e.g. an empty NTFS $LogFile).
                let count = u64::from(u32::from_le_bytes(rest[6..10].try_into().expect("4")));
                let byte = rest[10];
                let first = sector.min(disk.size / SECTOR);
                let last = sector
                    .saturating_add(count)
                    .min(disk.size / SECTOR)
                    .min(first + MAX_FILL);
                for s in first..last {
                    disk.sectors.insert(s, Box::new([byte; 512]));
                }
                rest = &rest[11..];
                continue;
            }
            let bytes = &rest[6..(6 + len).min(rest.len())];
            disk.write(sector * SECTOR, bytes);
            rest = &rest[(6 + len).min(rest.len())..];
        }
        disk
    }

    fn write(&mut self, offset: u64, mut bytes: &[u8]) {
        let mut pos = offset;
        while !bytes.is_empty() && pos < self.size {
            let in_sector = (pos % SECTOR) as usize;
            let n = bytes.len().min(512 - in_sector);
            let s = self
                .sectors
                .entry(pos / SECTOR)
                .or_insert_with(|| Box::new([0u8; 512]));
            s[in_sector..in_sector + n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            pos += n as u64;
        }
    }
}

impl ReadAt for SparseDisk {
    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "past the disk"))?;
        buf.fill(0);
        let first = offset / SECTOR;
        let last = end.div_ceil(SECTOR);
        for (&s, bytes) in self.sectors.range(first..last) {
            let s_off = s * SECTOR;
            let a = s_off.max(offset);
            let b = (s_off + SECTOR).min(end);
            buf[(a - offset) as usize..(b - offset) as usize]
                .copy_from_slice(&bytes[(a - s_off) as usize..(b - s_off) as usize]);
        }
        Ok(())
    }
}

/// Sorted, disjoint, non-empty, and each inside `bound`.
pub fn check_ranges(ranges: &[Range<u64>], bound: &Range<u64>) {
    let mut prev_end = None;
    for r in ranges {
        assert!(r.start < r.end, "empty range {r:?}");
        assert!(
            r.start >= bound.start && r.end <= bound.end,
            "free range {r:?} outside {bound:?}"
        );
        if let Some(p) = prev_end {
            assert!(r.start > p, "ranges not sorted and merged at {r:?}");
        }
        prev_end = Some(r.end);
    }
}

/// A file-system report over `start..start+len`: free ranges inside the region and the
/// file system's own size; none when left alone.
pub fn check_fs(rep: &FsReport, start: u64, len: u64) {
    if rep.left_alone.is_some() {
        assert!(rep.free.is_empty(), "left alone but free ranges: {rep:?}");
        return;
    }
    let size = rep.size.expect("an analysed file system has a size");
    assert!(size <= len, "file system of {size} bytes analysed in {len}");
    check_ranges(&rep.free, &(start..start + size));
    let _ = rep.free_bytes();
}

/// A disk report: every free range inside an analysed partition, inside the disk.
pub fn check_disk(rep: &DiskReport, size: u64) {
    for p in &rep.partitions {
        if p.left_alone.is_some() {
            assert!(p.free.is_empty(), "left alone but free: {p:?}");
        }
        check_ranges(&p.free, &(p.start..p.start + p.length));
        if let Some(fs) = p.fs_size {
            if p.left_alone.is_none() {
                check_ranges(&p.free, &(p.start..p.start + fs));
            }
        }
        assert_eq!(p.used_bytes + p.free_bytes, p.length);
        let _ = (
            p.ptype.to_string(),
            p.left_alone.as_ref().map(|r| r.to_string()),
        );
    }
    check_ranges(&rep.free_ranges(), &(0..size));
}
