//! A whole VHDX file through the real open path, from a compact input: the input picks
//! one of a few valid small VHDX templates (built here once with the format layer:
//! dynamic with 512- or 4096-byte sectors, a differencing checkpoint over a dynamic
//! base; each also with a log entry pending) and lists patches `(anchor, offset,
//! bytes)` to lay over it, an anchor being a structure of the template (either header,
//! either region table, the log, the metadata table and its items, the BAT, the payload,
//! the sector bitmap, the end of the file); optional flags reseal the headers', region
//! tables' and log entries' CRC-32C after patching (so mutations get past the checksums)
//! and change the file's length. The result is opened read-only (a pending log replayed
//! in memory), its chain resolved over the in-memory parent or refused, every structure
//! read and a bounded sample of the disk read; opened writable (a pending log replayed
//! into the memory file), one range is written and must read back, and the file must
//! then open again.
//!
//! Input: byte 0 template, byte 1 flags, then patches: `anchor u8, offset u24 LE,
//! length u8, bytes` (an anchor of 0xff sets the file's length: `u24 LE` KiB).
#![no_main]

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use libfuzzer_sys::fuzz_target;
use uuid::Uuid;
use vhdkit_format::image::{Backend, ParentResolver};
use vhdkit_format::vhdx::bat::{
    bitmap_bits, set_bitmap_bits, BatEntry, PAYLOAD_BLOCK_FULLY_PRESENT,
    PAYLOAD_BLOCK_PARTIALLY_PRESENT, PAYLOAD_BLOCK_ZERO, SB_BLOCK_PRESENT,
};
use vhdkit_format::vhdx::header::{HeaderSlot, HEADER_SIZE};
use vhdkit_format::vhdx::log::{LogCursor, LogWrite};
use vhdkit_format::vhdx::{DiskType, NewVhdx, ParentLocator, MIB};
use vhdkit_format::{Disk, OpenOptions, VhdFile};
use vhdkit_fuzz::{exercise_reads, path_of, write_and_verify, NoResolver, Rng};

/// A template: the file's bytes and where its structures are.
struct Template {
    bytes: Vec<u8>,
    /// Anchors: file offsets patches are relative to.
    anchors: [u64; 12],
    /// The log's place (offset, length).
    log: (u64, u64),
}

/// A block of a template: fully present with byte `v`, partially present (sectors
/// `first..first + count` with `v`), or the zero state.
#[derive(Clone, Copy)]
enum Content {
    Full(u8),
    Partial(u8, u64, u64),
    Zero,
}

/// Builds a template from `n` with `blocks`, a parent locator, and (with `log`) one
/// pending log entry that allocates a new block at the end and rewrites a BAT page.
fn build(
    n: &NewVhdx,
    parent: Option<ParentLocator>,
    blocks: &[(u64, Content)],
    log: bool,
    data_guid: Uuid,
) -> Template {
    let l = n.layout().expect("a valid template layout");
    let mut header = l.header();
    header.data_write_guid = data_guid;
    let md = l.metadata(Uuid::from_u128(7), parent);
    let mut b = vec![0u8; l.file_len as usize];
    for (at, w) in l.initial_writes(&header, &md) {
        b[at as usize..at as usize + w.len()].copy_from_slice(&w);
    }
    let mut bat = l.initial_bat();
    let bs = u64::from(n.block_size);
    let mut payload = 0;
    let mut bitmap = 0;
    for &(block, c) in blocks {
        let index = l.geometry.payload_index(block).expect("block in the disk") as usize;
        match c {
            Content::Zero => bat.entries[index] = BatEntry::new(PAYLOAD_BLOCK_ZERO, 0),
            Content::Full(v) | Content::Partial(v, ..) => {
                let at = b.len() as u64;
                if payload == 0 {
                    payload = at;
                }
                b.resize((at + bs) as usize, v);
                let state = match c {
                    Content::Full(_) => PAYLOAD_BLOCK_FULLY_PRESENT,
                    _ => PAYLOAD_BLOCK_PARTIALLY_PRESENT,
                };
                bat.entries[index] = BatEntry::new(state, at);
            }
        }
        if let Content::Partial(_, first, count) = c {
            let (chunk, first_bit, _) = bitmap_bits(&l.geometry, block);
            if bitmap == 0 {
                bitmap = b.len() as u64;
                b.resize((bitmap + MIB) as usize, 0);
                let sb = l.geometry.bitmap_index(chunk).expect("a differencing BAT") as usize;
                bat.entries[sb] = BatEntry::new(SB_BLOCK_PRESENT, bitmap);
            }
            set_bitmap_bits(&mut b[bitmap as usize..], first_bit + first, count, true);
        }
    }
    let e = bat.encode();
    b[l.bat.offset as usize..l.bat.offset as usize + e.len()].copy_from_slice(&e);
    if log {
        // One entry: block 6 placed at the end (its BAT page), 4 KiB of data in it, and
        // a zero descriptor over the first payload page.
        let end = b.len() as u64;
        let index = l.geometry.payload_index(6).expect("block 6") as usize;
        bat.entries[index] = BatEntry::new(PAYLOAD_BLOCK_FULLY_PRESENT, end);
        let mut page = bat.encode();
        page.resize(4096, 0);
        page.truncate(4096);
        let guid = Uuid::from_u128(0x1096);
        let mut writes = vec![
            LogWrite::Data {
                offset: l.bat.offset,
                bytes: page,
            },
            LogWrite::Data {
                offset: end,
                bytes: vec![0x77; 4096],
            },
        ];
        if payload != 0 {
            writes.push(LogWrite::Zero {
                offset: payload,
                length: 4096,
            });
        }
        let placed = LogCursor::new(u64::from(l.log.length))
            .append(guid, end, end + bs, &writes)
            .expect("a log entry that fits");
        placed.write_into(&mut b[l.log.offset as usize..l.log.end() as usize]);
        let mut h = header;
        h.sequence_number = 9;
        h.log_guid = guid;
        let at = HeaderSlot::First.offset() as usize;
        b[at..at + HEADER_SIZE].copy_from_slice(&h.encode());
    }
    let len = b.len() as u64;
    Template {
        anchors: [
            0,
            HeaderSlot::First.offset(),
            HeaderSlot::Second.offset(),
            3 * 64 * 1024,
            4 * 64 * 1024,
            l.log.offset,
            l.metadata.offset,
            l.metadata.offset + 64 * 1024,
            l.bat.offset,
            if payload != 0 {
                payload
            } else {
                l.first_payload
            },
            if bitmap != 0 { bitmap } else { len },
            len,
        ],
        log: (l.log.offset, u64::from(l.log.length)),
        bytes: b,
    }
}

/// The templates: (file, its parent if it has one).
fn templates() -> &'static [(Template, Option<Template>)] {
    static T: OnceLock<Vec<(Template, Option<Template>)>> = OnceLock::new();
    T.get_or_init(|| {
        let mut out = Vec::new();
        for log in [false, true] {
            let mut n = NewVhdx::new(DiskType::Dynamic, 16 * MIB);
            n.block_size = MIB as u32;
            let blocks = [
                (0, Content::Full(0x41)),
                (2, Content::Zero),
                (5, Content::Full(0x45)),
            ];
            out.push((build(&n, None, &blocks, log, Uuid::from_u128(1)), None));
            let mut n4k = n.clone();
            n4k.logical_sector_size = 4096;
            out.push((build(&n4k, None, &blocks, log, Uuid::from_u128(2)), None));
            // A checkpoint over the dynamic base (named by its data write GUID).
            let base = build(&n, None, &blocks, false, Uuid::from_u128(3));
            let mut d = n.clone();
            d.disk_type = DiskType::Differencing;
            let loc = ParentLocator::new(
                Uuid::from_u128(3),
                Some(r".\1.vhd"),
                None,
                Some(r"C:\vms\1.vhd"),
            );
            let child = [
                (0, Content::Partial(0x51, 8, 100)),
                (3, Content::Full(0x53)),
                (5, Content::Zero),
            ];
            out.push((
                build(&d, Some(loc), &child, log, Uuid::from_u128(4)),
                Some(base),
            ));
        }
        out
    })
}

/// A file over a template's bytes (shared, never copied): writes go into 4 KiB pages
/// of its own, a truncation hides the template's bytes past the cut, growth reads
/// zeros. What a fuzzed file costs is the pages it changes, not its length.
#[derive(Debug)]
struct Cow {
    base: &'static [u8],
    state: RwLock<CowState>,
    limit: u64,
}

#[derive(Debug)]
struct CowState {
    pages: BTreeMap<u64, Box<[u8; PAGE]>>,
    len: u64,
    /// The template's bytes from here on read as zeros (a truncation cut them).
    base_end: u64,
}

const PAGE: usize = 4096;

impl Cow {
    fn new(base: &'static [u8], limit: u64) -> Cow {
        let len = base.len() as u64;
        Cow {
            base,
            state: RwLock::new(CowState {
                pages: BTreeMap::new(),
                len,
                base_end: len,
            }),
            limit,
        }
    }

    fn page(s: &CowState, base: &[u8], p: u64) -> [u8; PAGE] {
        if let Some(b) = s.pages.get(&p) {
            return **b;
        }
        let mut out = [0u8; PAGE];
        let start = p * PAGE as u64;
        let end = (start + PAGE as u64).min(s.base_end);
        if start < end {
            out[..(end - start) as usize].copy_from_slice(&base[start as usize..end as usize]);
        }
        out
    }
}

impl Backend for Cow {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state.read().expect("no poisoning").len)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = self.state.read().expect("no poisoning");
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= s.len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let mut pos = offset;
        while pos < end {
            let (p, at) = (pos / PAGE as u64, (pos % PAGE as u64) as usize);
            let n = (PAGE - at).min((end - pos) as usize);
            let dst = &mut buf[(pos - offset) as usize..(pos - offset) as usize + n];
            match s.pages.get(&p) {
                Some(b) => dst.copy_from_slice(&b[at..at + n]),
                None => {
                    dst.fill(0);
                    let be = s.base_end.min(pos + n as u64);
                    if pos < be {
                        let k = (be - pos) as usize;
                        dst[..k].copy_from_slice(&self.base[pos as usize..pos as usize + k]);
                    }
                }
            }
            pos += n as u64;
        }
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.limit)
            .ok_or_else(|| io::Error::other("past the memory file's limit"))?;
        let mut s = self.state.write().expect("no poisoning");
        let mut pos = offset;
        while pos < end {
            let (p, at) = (pos / PAGE as u64, (pos % PAGE as u64) as usize);
            let n = (PAGE - at).min((end - pos) as usize);
            let mut page = Cow::page(&s, self.base, p);
            page[at..at + n]
                .copy_from_slice(&buf[(pos - offset) as usize..(pos - offset) as usize + n]);
            s.pages.insert(p, Box::new(page));
            pos += n as u64;
        }
        s.len = s.len.max(end);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if len > self.limit {
            return Err(io::Error::other("past the memory file's limit"));
        }
        let mut s = self.state.write().expect("no poisoning");
        if len < s.len {
            // The cut page keeps its head; everything after reads zeros when regrown.
            let p = len / PAGE as u64;
            let at = (len % PAGE as u64) as usize;
            let mut page = Cow::page(&s, self.base, p);
            page[at..].fill(0);
            let _ = s.pages.split_off(&p);
            if at > 0 {
                s.pages.insert(p, Box::new(page));
            }
            s.base_end = s.base_end.min(len);
        }
        s.len = len;
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// The parent resolver of a template: any name opens its parent, if it has one.
struct Parent(Option<&'static Template>);

impl ParentResolver for Parent {
    fn open(&self, _: &Path, opts: &OpenOptions) -> vhdkit_format::Result<Option<VhdFile>> {
        let Some(t) = self.0 else {
            return Ok(None);
        };
        let backend: Arc<dyn Backend> = Arc::new(Cow::new(&t.bytes, t.bytes.len() as u64));
        VhdFile::from_backend(path_of(1), backend, opts).map(Some)
    }
}

/// Reseals the CRC-32C at `checksum_at` of the `len` bytes at `at` (when in the file).
fn reseal(f: &Cow, at: u64, len: u64, checksum_at: usize) {
    let mut b = vec![0u8; len as usize];
    if len < checksum_at as u64 + 4 || f.read_exact_at(&mut b, at).is_err() {
        return;
    }
    b[checksum_at..checksum_at + 4].fill(0);
    let crc = crc32c::crc32c(&b);
    let _ = f.write_all_at(&crc.to_le_bytes(), at + checksum_at as u64);
}

/// Reseals every log entry found at 4 KiB steps in the log (`loge`, its length).
fn reseal_log(f: &Cow, (at, len): (u64, u64)) {
    let mut pos = 0;
    while pos + PAGE as u64 <= len {
        let mut h = [0u8; 12];
        if f.read_exact_at(&mut h, at + pos).is_err() {
            return;
        }
        if &h[..4] == b"loge" {
            let n = u64::from(u32::from_le_bytes(h[8..12].try_into().expect("4 bytes")));
            if n >= PAGE as u64 && n.is_multiple_of(PAGE as u64) && pos + n <= len {
                reseal(f, at + pos, n, 4);
                pos += n;
                continue;
            }
        }
        pos += PAGE as u64;
    }
}

/// The template's file with the input's patches laid over it.
fn patched(t: &'static Template, flags: u8, mut input: &[u8]) -> Cow {
    let len = t.bytes.len() as u64;
    let f = Cow::new(&t.bytes, len + 16 * MIB);
    while input.len() >= 4 {
        let anchor = input[0];
        let off = u64::from(u32::from_le_bytes([input[1], input[2], input[3], 0]));
        if anchor == 0xff {
            let _ = f.set_len((off * 1024).min(len + 8 * MIB));
            input = &input[4..];
            continue;
        }
        let Some(&n) = input.get(4) else {
            break;
        };
        let bytes = &input[5..(5 + n as usize).min(input.len())];
        input = &input[5 + bytes.len()..];
        let at = t.anchors[anchor as usize % t.anchors.len()] + off;
        if at + bytes.len() as u64 <= f.len().unwrap_or(0) {
            let _ = f.write_all_at(bytes, at);
        }
    }
    if flags & 4 != 0 {
        for h in [HeaderSlot::First, HeaderSlot::Second] {
            reseal(&f, h.offset(), HEADER_SIZE as u64, 4);
        }
    }
    if flags & 8 != 0 {
        for at in [3 * 64 * 1024, 4 * 64 * 1024] {
            reseal(&f, at, 64 * 1024, 4);
        }
    }
    if flags & 16 != 0 {
        reseal_log(&f, t.log);
    }
    f
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let all = templates();
    let (t, parent) = &all[data[0] as usize % all.len()];
    let flags = data[1];
    let mut rng = Rng::from_bytes(data);
    let opts = OpenOptions {
        strict: flags & 2 != 0,
        ignore_parent_id: flags & 32 != 0,
        ..OpenOptions::new()
    };
    // Read-only: a pending log is replayed in memory, the file never written.
    let resolver = Parent(if flags & 64 != 0 {
        None
    } else {
        parent.as_ref()
    });
    let file: Arc<dyn Backend> = Arc::new(patched(t, flags, &data[2..]));
    if let Ok(top) = VhdFile::from_backend(path_of(0), file, &opts) {
        let _ = top.warnings();
        let _ = top.kind();
        let _ = top.allocated_blocks();
        let _ = top.metadata_ranges();
        let _ = top.file_len();
        if let Ok(disk) = Disk::resolve(top, &opts, &resolver) {
            exercise_reads(&disk, &mut rng);
        }
    }
    if flags & 1 == 0 {
        return;
    }
    // Writable: a pending log is replayed into the memory file; a write reads back,
    // and the file opens again afterwards.
    let wopts = opts.clone().writable(true).no_parents(true);
    let file = Arc::new(patched(t, flags, &data[2..]));
    let backend: Arc<dyn Backend> = file.clone();
    let Ok(top) = VhdFile::from_backend(path_of(0), backend, &wopts) else {
        return;
    };
    let Ok(disk) = Disk::resolve(top, &wopts, &NoResolver) else {
        return;
    };
    let size = disk.virtual_size();
    let off = rng.below(size);
    let n = rng.below(9000).min(size - off) as usize;
    let fill = (rng.next_u64() as u8) | 1;
    if write_and_verify(&disk, &vec![fill; n], off) {
        discard_and_verify(&disk, &mut rng);
        let _ = disk.flush();
        drop(disk);
        let backend: Arc<dyn Backend> = file;
        let again = VhdFile::from_backend(path_of(0), backend, &opts.no_parents(true));
        assert!(
            again.is_ok(),
            "a file just written opens again: {:?}",
            again.err()
        );
    }
});

/// A discard (serve's trim) of a range around the written one: the whole blocks it
/// releases read as zeros, every other byte of the window around it as before.
fn discard_and_verify(disk: &Disk, rng: &mut Rng) {
    let size = disk.virtual_size();
    let Some(bs) = disk.top().allocation_unit() else {
        return;
    };
    let off = rng.below(size);
    let len = rng.below((4 * bs).min(size - off) + 1);
    // The window compared: the range and a block either side, at most 16 MiB.
    let lo = off.saturating_sub(bs);
    let hi = (off + len + bs).min(size).min(lo + (16 << 20));
    let mut before = vec![0u8; (hi - lo) as usize];
    if disk.read_at(&mut before, lo).is_err() {
        return;
    }
    let Ok(released) = disk.discard(off, len) else {
        return;
    };
    let mut after = vec![0u8; before.len()];
    disk.read_at(&mut after, lo)
        .expect("reading back after a discard");
    let (first, stop) = (
        off.div_ceil(bs) * bs,
        if off + len == size {
            size
        } else {
            (off + len) / bs * bs
        },
    );
    for (i, (&a, &b)) in after.iter().zip(&before).enumerate() {
        let at = lo + i as u64;
        let inside = released > 0 && at >= first && at < stop;
        assert!(
            a == b || (inside && a == 0),
            "byte {at:#x} changed by a discard of {off:#x}+{len:#x} ({released} bytes released)"
        );
    }
}
