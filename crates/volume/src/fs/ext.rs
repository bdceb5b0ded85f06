//! ext2/3/4: the superblock, the group descriptors and each group's block bitmap.
//!
//! A block is free when its bit in its group's block bitmap is clear. Groups flagged
//! `BLOCK_UNINIT` (only meaningful with `uninit_bg`/`metadata_csum`) have no bitmap on disk:
//! they are free except the superblock backup and descriptor blocks the group carries.
//! On top of every bitmap, the superblock, descriptor blocks and every group's block
//! bitmap, inode bitmap and inode table are marked used. A group whose bitmap shows more
//! free blocks than its descriptor counts is counted as used. The internal journal's
//! blocks are allocated in the bitmaps like a file's (the tests check this).

use byteorder::{ByteOrder, LittleEndian};

use crate::bytes::{div_ceil, le16, le32, u8_at};
use crate::error::{corrupt, unsupported, Fail, Reason};
use crate::fs::{FsKind, FsReport};
use crate::ranges::{bitmap_free, normalize, Runs};
use crate::region::Region;
use crate::ReadAt;
use std::ops::Range;

/// Byte offset of the primary superblock.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Size of the superblock.
pub const SUPERBLOCK_SIZE: usize = 1024;
/// `s_magic`.
pub const EXT_MAGIC: u16 = 0xEF53;

// Superblock field offsets.
const S_BLOCKS_COUNT_LO: usize = 0x04;
const S_FIRST_DATA_BLOCK: usize = 0x14;
const S_LOG_BLOCK_SIZE: usize = 0x18;
const S_BLOCKS_PER_GROUP: usize = 0x20;
const S_INODES_PER_GROUP: usize = 0x28;
const S_MAGIC: usize = 0x38;
const S_STATE: usize = 0x3A;
const S_REV_LEVEL: usize = 0x4C;
const S_INODE_SIZE: usize = 0x58;
const S_FEATURE_COMPAT: usize = 0x5C;
const S_FEATURE_INCOMPAT: usize = 0x60;
const S_FEATURE_RO_COMPAT: usize = 0x64;
const S_RESERVED_GDT_BLOCKS: usize = 0xCE;
const S_DESC_SIZE: usize = 0xFE;
const S_FIRST_META_BG: usize = 0x104;
const S_BLOCKS_COUNT_HI: usize = 0x150;
const S_BACKUP_BGS: usize = 0x24C;

/// `s_state`: cleanly unmounted.
const STATE_VALID: u16 = 0x0001;
/// `s_state`: errors detected.
const STATE_ERROR: u16 = 0x0002;

const COMPAT_HAS_JOURNAL: u32 = 0x0004;
const COMPAT_SPARSE_SUPER2: u32 = 0x0200;

const INCOMPAT_COMPRESSION: u32 = 0x0001;
const INCOMPAT_FILETYPE: u32 = 0x0002;
const INCOMPAT_RECOVER: u32 = 0x0004;
const INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
const INCOMPAT_META_BG: u32 = 0x0010;
const INCOMPAT_EXTENTS: u32 = 0x0040;
const INCOMPAT_64BIT: u32 = 0x0080;
const INCOMPAT_MMP: u32 = 0x0100;
const INCOMPAT_FLEX_BG: u32 = 0x0200;
const INCOMPAT_EA_INODE: u32 = 0x0400;
const INCOMPAT_DIRDATA: u32 = 0x1000;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;
/// Incompatible features whose meaning for the block bitmaps is known.
const INCOMPAT_KNOWN: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_DIRDATA
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;

const RO_SPARSE_SUPER: u32 = 0x0001;
const RO_LARGE_FILE: u32 = 0x0002;
const RO_BTREE_DIR: u32 = 0x0004;
const RO_HUGE_FILE: u32 = 0x0008;
const RO_GDT_CSUM: u32 = 0x0010;
const RO_DIR_NLINK: u32 = 0x0020;
const RO_EXTRA_ISIZE: u32 = 0x0040;
const RO_QUOTA: u32 = 0x0100;
const RO_BIGALLOC: u32 = 0x0200;
const RO_METADATA_CSUM: u32 = 0x0400;
const RO_READONLY: u32 = 0x1000;
const RO_PROJECT: u32 = 0x2000;
const RO_VERITY: u32 = 0x8000;
const RO_ORPHAN_PRESENT: u32 = 0x10000;
/// Read-only-compatible features whose meaning for the block bitmaps is known
/// (bigalloc, snapshots, replicas and shared blocks are not).
const RO_KNOWN: u32 = RO_SPARSE_SUPER
    | RO_LARGE_FILE
    | RO_BTREE_DIR
    | RO_HUGE_FILE
    | RO_GDT_CSUM
    | RO_DIR_NLINK
    | RO_EXTRA_ISIZE
    | RO_QUOTA
    | RO_METADATA_CSUM
    | RO_READONLY
    | RO_PROJECT
    | RO_VERITY
    | RO_ORPHAN_PRESENT;

/// Group descriptor flag: the block bitmap is not initialised (all free but metadata).
const BG_BLOCK_UNINIT: u16 = 0x0002;

// Group descriptor field offsets.
const BG_BLOCK_BITMAP_LO: usize = 0x00;
const BG_INODE_BITMAP_LO: usize = 0x04;
const BG_INODE_TABLE_LO: usize = 0x08;
const BG_FREE_BLOCKS_LO: usize = 0x0C;
const BG_FLAGS: usize = 0x12;
const BG_BLOCK_BITMAP_HI: usize = 0x20;
const BG_INODE_BITMAP_HI: usize = 0x24;
const BG_INODE_TABLE_HI: usize = 0x28;
const BG_FREE_BLOCKS_HI: usize = 0x2C;

/// The smallest blocks-per-group mke2fs accepts; smaller is not read (bounds the number
/// of groups, hence the descriptor table, to a 256th of the blocks).
const MIN_BLOCKS_PER_GROUP: u32 = 256;

/// The ext superblock's magic at its place in a probe buffer, with a sane block size.
pub(crate) fn detect(head: &[u8]) -> Option<FsKind> {
    let sb = head.get(SUPERBLOCK_OFFSET as usize..SUPERBLOCK_OFFSET as usize + SUPERBLOCK_SIZE)?;
    if le16(sb, S_MAGIC) != EXT_MAGIC || le32(sb, S_LOG_BLOCK_SIZE) > 6 {
        return None;
    }
    Some(kind_of(sb))
}

fn kind_of(sb: &[u8]) -> FsKind {
    let compat = le32(sb, S_FEATURE_COMPAT);
    let incompat = le32(sb, S_FEATURE_INCOMPAT);
    let ro = le32(sb, S_FEATURE_RO_COMPAT);
    let ext4_incompat = INCOMPAT_EXTENTS
        | INCOMPAT_64BIT
        | INCOMPAT_FLEX_BG
        | INCOMPAT_MMP
        | INCOMPAT_EA_INODE
        | INCOMPAT_INLINE_DATA
        | INCOMPAT_CSUM_SEED
        | INCOMPAT_LARGEDIR
        | INCOMPAT_ENCRYPT
        | INCOMPAT_CASEFOLD;
    let ext4_ro = RO_HUGE_FILE
        | RO_GDT_CSUM
        | RO_DIR_NLINK
        | RO_EXTRA_ISIZE
        | RO_METADATA_CSUM
        | RO_BIGALLOC
        | RO_QUOTA
        | RO_PROJECT;
    if incompat & ext4_incompat != 0 || ro & ext4_ro != 0 {
        FsKind::Ext4
    } else if compat & COMPAT_HAS_JOURNAL != 0 {
        FsKind::Ext3
    } else {
        FsKind::Ext2
    }
}

/// The validated geometry of an ext file system.
struct Geometry {
    block_size: u64,
    blocks: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    groups: u64,
    desc_size: u64,
    descs_per_block: u64,
    gdt_blocks: u64,
    reserved_gdt_blocks: u64,
    inode_table_blocks: u64,
    meta_bg: bool,
    first_meta_bg: u64,
    sparse_super: bool,
    sparse_super2: bool,
    backup_bgs: [u64; 2],
    uninit_valid: bool,
}

impl Geometry {
    fn group_first(&self, g: u64) -> Option<u64> {
        g.checked_mul(self.blocks_per_group)?
            .checked_add(self.first_data_block)
    }

    /// Whether group `g` holds a superblock (primary or backup).
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.sparse_super2 {
            return g == self.backup_bgs[0] || g == self.backup_bgs[1];
        }
        if g <= 1 || !self.sparse_super {
            return true;
        }
        if g.is_multiple_of(2) {
            return false;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut p = base;
            while p < g {
                match p.checked_mul(base) {
                    Some(n) => p = n,
                    None => return false,
                }
            }
            p == g
        })
    }

    /// Blocks at the start of group `g` taken by its superblock copy and descriptor
    /// blocks (the kernel's `ext4_num_base_meta_clusters`).
    fn base_meta(&self, g: u64) -> u64 {
        let sup = u64::from(self.has_super(g));
        let meta_group = g / self.descs_per_block;
        if !self.meta_bg || meta_group < self.first_meta_bg {
            if sup == 1 {
                1 + self.gdt_blocks + self.reserved_gdt_blocks
            } else {
                0
            }
        } else {
            let idx = g % self.descs_per_block;
            let gdb = u64::from(idx == 0 || idx == 1 || idx == self.descs_per_block - 1);
            sup + gdb
        }
    }

    /// Block number of descriptor block `i`.
    fn desc_block(&self, i: u64) -> Option<u64> {
        if !self.meta_bg || i < self.first_meta_bg {
            self.first_data_block.checked_add(1)?.checked_add(i)
        } else {
            let g = i.checked_mul(self.descs_per_block)?;
            self.group_first(g)?
                .checked_add(u64::from(self.has_super(g)))
        }
    }
}

fn geometry(sb: &[u8], rep: &mut FsReport, fs_bytes: u64) -> Result<Geometry, Fail> {
    let log = le32(sb, S_LOG_BLOCK_SIZE);
    if log > 6 {
        return Err(corrupt(format!("block size 1024 << {log}")));
    }
    let block_size = 1024u64 << log;
    rep.unit = Some(block_size);
    let compat = le32(sb, S_FEATURE_COMPAT);
    let incompat = le32(sb, S_FEATURE_INCOMPAT);
    let ro = le32(sb, S_FEATURE_RO_COMPAT);
    let is64 = incompat & INCOMPAT_64BIT != 0;
    let mut blocks = u64::from(le32(sb, S_BLOCKS_COUNT_LO));
    if is64 {
        blocks |= u64::from(le32(sb, S_BLOCKS_COUNT_HI)) << 32;
    }
    let size = blocks
        .checked_mul(block_size)
        .ok_or_else(|| corrupt("block count overflows"))?;
    rep.size = Some(size);
    if size > fs_bytes {
        return Err(Fail::Left(Reason::SizeMismatch {
            fs_size: size,
            partition_size: fs_bytes,
        }));
    }
    if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        return Err(unsupported("an external journal device"));
    }
    if incompat & INCOMPAT_COMPRESSION != 0 {
        return Err(unsupported("compression feature"));
    }
    if incompat & !INCOMPAT_KNOWN != 0 {
        return Err(unsupported(format!(
            "unknown incompatible features {:#x}",
            incompat & !INCOMPAT_KNOWN
        )));
    }
    if ro & RO_BIGALLOC != 0 {
        return Err(unsupported("bigalloc (bitmaps of clusters)"));
    }
    if ro & !RO_KNOWN != 0 {
        return Err(unsupported(format!(
            "unknown read-only features {:#x}",
            ro & !RO_KNOWN
        )));
    }
    let state = le16(sb, S_STATE);
    if incompat & INCOMPAT_RECOVER != 0 {
        return Err(Fail::Left(Reason::NotClean(
            "the journal needs recovery".into(),
        )));
    }
    if state & STATE_VALID == 0 {
        return Err(Fail::Left(Reason::NotClean(
            "state not clean (mounted or not cleanly unmounted)".into(),
        )));
    }
    if state & STATE_ERROR != 0 {
        return Err(Fail::Left(Reason::NotClean("errors recorded".into())));
    }
    let first_data_block = u64::from(le32(sb, S_FIRST_DATA_BLOCK));
    if first_data_block != u64::from(block_size == 1024) {
        return Err(corrupt(format!(
            "first data block {first_data_block} with {block_size}-byte blocks"
        )));
    }
    let bpg = le32(sb, S_BLOCKS_PER_GROUP);
    if bpg < MIN_BLOCKS_PER_GROUP || !bpg.is_multiple_of(8) || u64::from(bpg) > block_size * 8 {
        return Err(corrupt(format!("{bpg} blocks per group")));
    }
    let blocks_per_group = u64::from(bpg);
    let ipg = u64::from(le32(sb, S_INODES_PER_GROUP));
    if ipg == 0 || ipg > block_size * 8 {
        return Err(corrupt(format!("{ipg} inodes per group")));
    }
    let inode_size = if le32(sb, S_REV_LEVEL) == 0 {
        128
    } else {
        u64::from(le16(sb, S_INODE_SIZE))
    };
    if inode_size < 128 || !inode_size.is_power_of_two() || inode_size > block_size {
        return Err(corrupt(format!("inode size {inode_size}")));
    }
    let desc_size = if is64 {
        u64::from(le16(sb, S_DESC_SIZE))
    } else {
        32
    };
    if is64 && (!(64..=1024).contains(&desc_size) || !desc_size.is_power_of_two()) {
        return Err(corrupt(format!("descriptor size {desc_size}")));
    }
    if blocks <= first_data_block {
        return Err(corrupt(format!("{blocks} blocks")));
    }
    let groups = div_ceil(blocks - first_data_block, blocks_per_group)
        .ok_or_else(|| corrupt("no blocks per group"))?;
    let descs_per_block = block_size / desc_size;
    let gdt_blocks = div_ceil(groups, descs_per_block).ok_or_else(|| corrupt("descriptors"))?;
    if gdt_blocks >= blocks {
        return Err(corrupt("descriptor table larger than the file system"));
    }
    let reserved_gdt_blocks = u64::from(le16(sb, S_RESERVED_GDT_BLOCKS));
    if reserved_gdt_blocks > blocks_per_group {
        return Err(corrupt(format!(
            "{reserved_gdt_blocks} reserved descriptor blocks"
        )));
    }
    let inode_table_blocks =
        div_ceil(ipg * inode_size, block_size).ok_or_else(|| corrupt("inode table"))?;
    let geo = Geometry {
        block_size,
        blocks,
        first_data_block,
        blocks_per_group,
        groups,
        desc_size,
        descs_per_block,
        gdt_blocks,
        reserved_gdt_blocks,
        inode_table_blocks,
        meta_bg: incompat & INCOMPAT_META_BG != 0,
        first_meta_bg: u64::from(le32(sb, S_FIRST_META_BG)),
        sparse_super: ro & RO_SPARSE_SUPER != 0,
        sparse_super2: compat & COMPAT_SPARSE_SUPER2 != 0,
        backup_bgs: [
            u64::from(le32(sb, S_BACKUP_BGS)),
            u64::from(le32(sb, S_BACKUP_BGS + 4)),
        ],
        uninit_valid: ro & (RO_GDT_CSUM | RO_METADATA_CSUM) != 0,
    };
    Ok(geo)
}

/// Reads the descriptor table (`groups * desc_size` bytes, bounded by the checks above to
/// less than the file system).
fn read_descriptors<R: ReadAt + ?Sized>(
    region: &Region<'_, R>,
    geo: &Geometry,
) -> Result<Vec<u8>, Fail> {
    let total = geo
        .groups
        .checked_mul(geo.desc_size)
        .ok_or_else(|| corrupt("descriptor table size"))?;
    let cap = usize::try_from(total).map_err(|_| corrupt("descriptor table size"))?;
    let mut gdt = Vec::with_capacity(cap);
    let mut block = vec![0u8; geo.block_size as usize];
    for i in 0..geo.gdt_blocks {
        let b = geo
            .desc_block(i)
            .filter(|&b| b < geo.blocks)
            .ok_or_else(|| corrupt(format!("descriptor block {i} outside the file system")))?;
        region.read(b * geo.block_size, &mut block, "ext group descriptors")?;
        gdt.extend_from_slice(&block);
    }
    gdt.truncate(cap);
    Ok(gdt)
}

struct Desc {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    free_blocks: u64,
    flags: u16,
}

fn desc(gdt: &[u8], geo: &Geometry, g: u64) -> Desc {
    let off = (g * geo.desc_size) as usize;
    let d = gdt.get(off..off + geo.desc_size as usize).unwrap_or(&[]);
    let wide = geo.desc_size >= 64;
    let lohi = |lo: usize, hi: usize| {
        let mut v = u64::from(le32(d, lo));
        if wide {
            v |= u64::from(le32(d, hi)) << 32;
        }
        v
    };
    let mut free_blocks = u64::from(le16(d, BG_FREE_BLOCKS_LO));
    if wide {
        free_blocks |= u64::from(le16(d, BG_FREE_BLOCKS_HI)) << 16;
    }
    Desc {
        block_bitmap: lohi(BG_BLOCK_BITMAP_LO, BG_BLOCK_BITMAP_HI),
        inode_bitmap: lohi(BG_INODE_BITMAP_LO, BG_INODE_BITMAP_HI),
        inode_table: lohi(BG_INODE_TABLE_LO, BG_INODE_TABLE_HI),
        free_blocks,
        flags: le16(d, BG_FLAGS),
    }
}

/// Sets bits `a..b` (clamped to the bitmap) in an LSB-first bitmap.
fn set_bits(bm: &mut [u8], a: u64, b: u64) {
    let end = b.min(bm.len() as u64 * 8);
    let mut i = a;
    while i < end {
        if i.is_multiple_of(8) && i + 8 <= end {
            bm[(i / 8) as usize] = 0xff;
            i += 8;
        } else {
            bm[(i / 8) as usize] |= 1 << (i % 8);
            i += 1;
        }
    }
}

fn count_clear(bm: &[u8], n: u64) -> u64 {
    let full = ((n / 8) as usize).min(bm.len());
    let words = bm[..full].chunks_exact(8);
    let tail = words.remainder();
    let mut clear: u64 = words
        .map(|w| u64::from(LittleEndian::read_u64(w).count_zeros()))
        .sum::<u64>()
        + tail.iter().map(|b| u64::from(b.count_zeros())).sum::<u64>();
    for i in (full as u64 * 8)..n {
        if u8_at(bm, (i / 8) as usize) >> (i % 8) & 1 == 0 {
            clear += 1;
        }
    }
    clear
}

pub(crate) fn analyse<R: ReadAt + ?Sized>(
    region: &Region<'_, R>,
    rep: &mut FsReport,
) -> Result<Runs, Fail> {
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    region.read(SUPERBLOCK_OFFSET, &mut sb, "ext superblock")?;
    if le16(&sb, S_MAGIC) != EXT_MAGIC {
        return Err(corrupt("no ext superblock magic"));
    }
    rep.kind = kind_of(&sb);
    let geo = geometry(&sb, rep, region.len)?;
    let gdt = read_descriptors(region, &geo)?;

    // Metadata, in blocks: the primary superblock and descriptor area, then every
    // group's bitmaps and inode table (wherever flex_bg put them).
    let mut meta: Vec<Range<u64>> = Vec::new();
    meta.push(0..geo.base_meta(0).saturating_add(geo.first_data_block));
    for g in 0..geo.groups {
        let d = desc(&gdt, &geo, g);
        for (what, start, len) in [
            ("block bitmap", d.block_bitmap, 1),
            ("inode bitmap", d.inode_bitmap, 1),
            ("inode table", d.inode_table, geo.inode_table_blocks),
        ] {
            let end = start.checked_add(len).filter(|&e| e <= geo.blocks);
            match end {
                Some(end) if start >= geo.first_data_block => meta.push(start..end),
                _ => {
                    return Err(corrupt(format!(
                        "group {g}: {what} at block {start} outside the file system"
                    )))
                }
            }
        }
    }
    normalize(&mut meta);

    let mut runs = Runs::default();
    let mut bitmap = vec![0u8; geo.block_size as usize];
    let mut meta_i = 0usize;
    let mut distrusted = 0u64;
    for g in 0..geo.groups {
        let first = geo
            .group_first(g)
            .ok_or_else(|| corrupt("group offset overflow"))?;
        let n = geo.blocks_per_group.min(geo.blocks - first);
        let d = desc(&gdt, &geo, g);
        if geo.uninit_valid && d.flags & BG_BLOCK_UNINIT != 0 {
            bitmap.fill(0);
            set_bits(&mut bitmap, 0, geo.base_meta(g));
        } else {
            region.read(
                d.block_bitmap * geo.block_size,
                &mut bitmap,
                "ext block bitmap",
            )?;
        }
        // Metadata of any group that lies in this one.
        while meta_i < meta.len() && meta[meta_i].end <= first {
            meta_i += 1;
        }
        let mut j = meta_i;
        while j < meta.len() && meta[j].start < first + n {
            let a = meta[j].start.max(first) - first;
            let b = meta[j].end.min(first + n) - first;
            set_bits(&mut bitmap, a, b);
            j += 1;
        }
        if count_clear(&bitmap, n) > d.free_blocks {
            distrusted += 1;
            continue;
        }
        bitmap_free(
            &bitmap,
            n,
            geo.block_size,
            first * geo.block_size,
            &mut runs,
        );
    }
    if distrusted > 0 {
        rep.warnings.push(format!(
            "{distrusted} group(s) whose bitmap shows more free blocks than the descriptor counts: counted as used"
        ));
    }
    Ok(runs)
}
