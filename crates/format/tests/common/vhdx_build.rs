//! VHDX files built block by block with the format layer (`vhdkit_format::vhdx`), for
//! the tests of the VHDX container (`crates/format/tests/vhdx_container.rs`) and of the
//! CLI on VHDX files (`tests/vhdx_cli.rs`, which includes this file by path): what
//! qemu-img cannot make — differencing files, partially present blocks, 4096-byte
//! sectors — and the bytes such a chain reads as.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

use uuid::Uuid;
use vhdkit_format::vhdx::bat::{
    bitmap_bits, set_bitmap_bits, BatEntry, PAYLOAD_BLOCK_FULLY_PRESENT,
    PAYLOAD_BLOCK_PARTIALLY_PRESENT, PAYLOAD_BLOCK_ZERO, SB_BLOCK_PRESENT,
};
use vhdkit_format::vhdx::header::{HeaderSlot, HEADER_SIZE};
use vhdkit_format::vhdx::log::{LogCursor, LogWrite};
use vhdkit_format::vhdx::{DiskType, NewVhdx, ParentLocator, PayloadState, VhdxLayout, MIB};

/// What to put in a block of a built file.
#[derive(Clone, Copy)]
pub enum Content {
    /// Fully present, every byte `b`.
    Full(u8),
    /// Partially present: sectors `first..first + count` hold `b`, the rest come from
    /// the parent.
    Partial(u8, u64, u64),
    /// The zero state.
    Zero,
}

/// Writes a new VHDX file at `path` from `n`, with `blocks` stored (payload and
/// sector-bitmap blocks appended, 1 MiB aligned). Returns its layout and its data
/// write GUID.
pub fn build(
    path: &Path,
    n: &NewVhdx,
    parent: Option<ParentLocator>,
    blocks: &[(u64, Content)],
) -> (VhdxLayout, Uuid) {
    let l = n.layout().unwrap();
    let header = l.header();
    let md = l.metadata(Uuid::new_v4(), parent);
    let mut bytes = vec![0u8; l.file_len as usize];
    for (at, b) in l.initial_writes(&header, &md) {
        bytes[at as usize..at as usize + b.len()].copy_from_slice(&b);
    }
    let mut bat = l.initial_bat();
    let bs = u64::from(n.block_size);
    let mut bitmaps: Vec<(u64, u64)> = Vec::new(); // (chunk, file offset)
    for &(block, c) in blocks {
        let index = l.geometry.payload_index(block).unwrap() as usize;
        match c {
            Content::Zero => bat.entries[index] = BatEntry::new(PAYLOAD_BLOCK_ZERO, 0),
            Content::Full(v) | Content::Partial(v, ..) => {
                let at = bytes.len() as u64;
                bytes.resize((at + bs) as usize, v);
                let state = if matches!(c, Content::Full(_)) {
                    PAYLOAD_BLOCK_FULLY_PRESENT
                } else {
                    PAYLOAD_BLOCK_PARTIALLY_PRESENT
                };
                bat.entries[index] = BatEntry::new(state, at);
            }
        }
        if let Content::Partial(_, first, count) = c {
            let (chunk, first_bit, _) = bitmap_bits(&l.geometry, block);
            let at = match bitmaps.iter().find(|b| b.0 == chunk) {
                Some(&(_, at)) => at,
                None => {
                    let at = bytes.len() as u64;
                    bytes.resize((at + MIB) as usize, 0);
                    bitmaps.push((chunk, at));
                    let sb = l.geometry.bitmap_index(chunk).unwrap() as usize;
                    bat.entries[sb] = BatEntry::new(SB_BLOCK_PRESENT, at);
                    at
                }
            };
            set_bitmap_bits(&mut bytes[at as usize..], first_bit + first, count, true);
        }
    }
    let b = bat.encode();
    bytes[l.bat.offset as usize..l.bat.offset as usize + b.len()].copy_from_slice(&b);
    fs::write(path, &bytes).unwrap();
    (l, header.data_write_guid)
}

/// What a chain of `levels` (top first) reads as, computed from the contents.
pub fn model(size: u64, n: &NewVhdx, levels: &[&[(u64, Content)]]) -> Vec<u8> {
    let bs = u64::from(n.block_size);
    let sector = u64::from(n.logical_sector_size);
    let mut out = vec![0u8; size as usize];
    let mut known = vec![false; (size / sector) as usize];
    for level in levels {
        for &(block, c) in level.iter() {
            let first_sector = block * bs / sector;
            let per = bs / sector;
            for k in 0..per {
                let sct = first_sector + k;
                if sct as usize >= known.len() || known[sct as usize] {
                    continue;
                }
                let v = match c {
                    Content::Full(v) => Some(v),
                    Content::Zero => Some(0),
                    Content::Partial(v, f, cnt) => (k >= f && k < f + cnt).then_some(v),
                };
                if let Some(v) = v {
                    known[sct as usize] = true;
                    let a = (sct * sector) as usize;
                    out[a..a + sector as usize].fill(v);
                }
            }
        }
    }
    out
}

/// A dynamic file whose log holds one entry, not applied: it allocates block 3 at the
/// end of the file (the BAT sector) and writes 4 KiB of 0x77 at its start.
pub fn file_with_pending_log(path: &Path) -> Vec<u8> {
    let mut n = NewVhdx::new(DiskType::Dynamic, 16 * MIB);
    n.block_size = MIB as u32;
    let l = n.layout().unwrap();
    let mut b = vec![0u8; l.file_len as usize];
    for (at, bytes) in l.initial_writes(&l.header(), &l.metadata(Uuid::nil(), None)) {
        b[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
    }
    let end = b.len() as u64;
    let mut bat = l.initial_bat();
    bat.set_payload(3, PayloadState::FullyPresent, end);
    let mut sector = bat.encode();
    sector.resize(4096, 0);
    let guid = Uuid::from_u128(0x1234);
    let placed = LogCursor::new(u64::from(l.log.length))
        .append(
            guid,
            end,
            end + MIB,
            &[
                LogWrite::Data {
                    offset: l.bat.offset,
                    bytes: sector,
                },
                LogWrite::Data {
                    offset: end,
                    bytes: vec![0x77; 4096],
                },
            ],
        )
        .unwrap();
    placed.write_into(&mut b[l.log.offset as usize..l.log.end() as usize]);
    let mut h = l.header();
    h.sequence_number = 9;
    h.log_guid = guid;
    let at = HeaderSlot::First.offset() as usize;
    b[at..at + HEADER_SIZE].copy_from_slice(&h.encode());
    fs::write(path, &b).unwrap();
    b
}

/// A dynamic file (16 MiB, 1 MiB blocks) cut short: its BAT names block 3 at its old
/// end, and its pending log holds one entry without writes whose file offsets say the
/// file is 1 MiB longer — a replay grows it to hold block 3, which then reads zeros.
pub fn file_cut_with_growing_log(path: &Path) {
    let mut n = NewVhdx::new(DiskType::Dynamic, 16 * MIB);
    n.block_size = MIB as u32;
    let l = n.layout().unwrap();
    let mut b = vec![0u8; l.file_len as usize];
    for (at, bytes) in l.initial_writes(&l.header(), &l.metadata(Uuid::nil(), None)) {
        b[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
    }
    let end = b.len() as u64;
    let mut bat = l.initial_bat();
    bat.set_payload(3, PayloadState::FullyPresent, end);
    let e = bat.encode();
    b[l.bat.offset as usize..l.bat.offset as usize + e.len()].copy_from_slice(&e);
    let guid = Uuid::from_u128(0x5678);
    let placed = LogCursor::new(u64::from(l.log.length))
        .append(guid, end, end + MIB, &[])
        .unwrap();
    placed.write_into(&mut b[l.log.offset as usize..l.log.end() as usize]);
    let mut h = l.header();
    h.sequence_number = 9;
    h.log_guid = guid;
    let at = HeaderSlot::First.offset() as usize;
    b[at..at + HEADER_SIZE].copy_from_slice(&h.encode());
    fs::write(path, &b).unwrap();
}
