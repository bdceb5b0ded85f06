//! Xen's batmap: a bitmap of "fully written" blocks that blktap (`vhd-util`, tapdisk,
//! creator `tap`) keeps after the BAT of the dynamic and differencing disks it writes.
//! tapdisk trusts a set bit instead of reading the block's sector bitmap, so a bit may be
//! set only while its block is allocated and every sector of it is marked; a clear bit is
//! always safe. `docs/format.md` ("Xen's batmap") has the layout and where it comes from.
//!
//! The 512-byte header (big-endian) sits right after the BAT padded to whole sectors —
//! nothing points to it:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | cookie `tdbatmap` |
//! | 8 | 8 | absolute offset of the bitmap |
//! | 16 | 4 | size of the bitmap area, in sectors |
//! | 20 | 4 | version (`0x00010002`) |
//! | 24 | 4 | checksum: ones' complement of the byte sum of the checksummed bitmap bytes |
//! | 28 | 484 | a marker byte, an optional key hash, reserved: kept as found |
//!
//! Bit `n` is bit `0x80 >> (n % 8)` of byte `n / 8` (most significant first).

use byteorder::{BigEndian, ByteOrder};

use super::{Footer, Problem, Severity, SECTOR_SIZE};

/// The header's cookie.
pub const BATMAP_COOKIE: [u8; 8] = *b"tdbatmap";
/// Size of the header: one sector.
pub const BATMAP_HEADER_SIZE: usize = 512;
/// The newest batmap version blktap writes and the newest it reads.
pub const BATMAP_VERSION: u32 = 0x0001_0002;
/// The batmap version whose checksum summed signed bytes.
pub const BATMAP_VERSION_SIGNED_SUM: u32 = 0x0001_0001;

/// Whether a file's footer says it must carry a batmap (`None`: it may, if a valid
/// header is there — creator version 1.1). Only `tap` files have one.
pub fn expects_batmap(footer: &Footer) -> Option<bool> {
    if !footer.creator_app.starts_with(b"tap") || !footer.disk_type.is_sparse() {
        return Some(false);
    }
    match footer.creator_version {
        v if v <= 0x0000_0001 => Some(false),
        v if v >= 0x0001_0002 => Some(true),
        _ => None,
    }
}

/// Where the batmap header is: right after the BAT of `max_table_entries` entries,
/// padded to whole sectors (at least one).
pub fn header_offset(table_offset: u64, max_table_entries: u32) -> u64 {
    let bat = super::layout::table_bytes(u64::from(max_table_entries)).max(SECTOR_SIZE);
    table_offset.saturating_add(bat)
}

/// Bytes of the bitmap that blktap reads and checksums for a disk of `current_size`:
/// whole sectors holding one bit per 2 MiB of the size (at least one sector).
pub fn map_bytes(current_size: u64) -> u64 {
    ((current_size >> 24).div_ceil(SECTOR_SIZE)).max(1) * SECTOR_SIZE
}

/// A decoded batmap header; `raw` keeps the whole sector, so that re-encoding changes
/// only the fields vhdkit rewrites (the checksum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatmapHeader {
    /// The cookie found.
    pub cookie: [u8; 8],
    /// Absolute file offset of the bitmap.
    pub map_offset: u64,
    /// Size of the bitmap area in sectors.
    pub map_sectors: u32,
    /// Version.
    pub version: u32,
    /// Stored checksum.
    pub checksum: u32,
    raw: [u8; BATMAP_HEADER_SIZE],
}

impl BatmapHeader {
    /// A new header for a batmap whose header sits at `header_offset` after a BAT of
    /// `max_table_entries` entries, laid out as blktap creates one (libvhd's
    /// `vhd_create_batmap`): the bitmap in the sectors right after the header, one bit
    /// per entry rounded up to whole sectors (at least one), version 1.2, every other
    /// byte zero, and the checksum of an all-clear bitmap.
    pub fn new(header_offset: u64, max_table_entries: u32) -> BatmapHeader {
        let map_sectors = (u64::from(max_table_entries).div_ceil(8))
            .div_ceil(SECTOR_SIZE)
            .max(1);
        let mut raw = [0u8; BATMAP_HEADER_SIZE];
        raw[..8].copy_from_slice(&BATMAP_COOKIE);
        BatmapHeader {
            cookie: BATMAP_COOKIE,
            map_offset: header_offset.saturating_add(BATMAP_HEADER_SIZE as u64),
            map_sectors: u32::try_from(map_sectors).expect("2^32 entries need 2^20 sectors"),
            version: BATMAP_VERSION,
            checksum: !0,
            raw,
        }
    }

    /// Decodes a 512-byte header (fails only on a wrong length).
    pub fn decode(b: &[u8]) -> Option<BatmapHeader> {
        let raw: [u8; BATMAP_HEADER_SIZE] = b.get(..BATMAP_HEADER_SIZE)?.try_into().ok()?;
        Some(BatmapHeader {
            cookie: raw[0..8].try_into().ok()?,
            map_offset: BigEndian::read_u64(&raw[8..16]),
            map_sectors: BigEndian::read_u32(&raw[16..20]),
            version: BigEndian::read_u32(&raw[20..24]),
            checksum: BigEndian::read_u32(&raw[24..28]),
            raw,
        })
    }

    /// Encodes the header: the sector as found with the fields above written over it.
    pub fn encode(&self) -> [u8; BATMAP_HEADER_SIZE] {
        let mut out = self.raw;
        out[0..8].copy_from_slice(&self.cookie);
        BigEndian::write_u64(&mut out[8..16], self.map_offset);
        BigEndian::write_u32(&mut out[16..20], self.map_sectors);
        BigEndian::write_u32(&mut out[20..24], self.version);
        BigEndian::write_u32(&mut out[24..28], self.checksum);
        out
    }

    /// Bytes of the bitmap area.
    pub fn map_area(&self) -> u64 {
        u64::from(self.map_sectors) * SECTOR_SIZE
    }

    /// Every problem with the header for a disk of `current_size` bytes whose BAT has
    /// `max_table_entries` entries and whose trailing footer is at `footer_at` — what
    /// blktap checks before it trusts a batmap.
    pub fn validate(
        &self,
        current_size: u64,
        max_table_entries: u32,
        footer_at: u64,
    ) -> Vec<Problem> {
        let mut p = Vec::new();
        let err =
            |field: &'static str, m: String| Problem::new(Severity::Error, "batmap", field, m);
        if self.cookie != BATMAP_COOKIE {
            p.push(err(
                "cookie",
                format!(
                    "found {:?}, expected \"tdbatmap\"",
                    String::from_utf8_lossy(&self.cookie)
                ),
            ));
            return p;
        }
        if self.version > BATMAP_VERSION {
            p.push(err(
                "version",
                format!("{:#010x} is newer than 1.2", self.version),
            ));
        }
        if self.map_sectors == 0 {
            p.push(err("size", "the bitmap has no sectors".into()));
        } else if u64::from(self.map_sectors) * 4096 < u64::from(max_table_entries) {
            p.push(err(
                "size",
                format!(
                    "{} sectors hold {} bits, fewer than the BAT's {max_table_entries} entries",
                    self.map_sectors,
                    u64::from(self.map_sectors) * 4096
                ),
            ));
        } else if map_bytes(current_size) > self.map_area() {
            p.push(err(
                "size",
                format!(
                    "{} sectors are fewer than the {} bytes read for a {current_size}-byte disk",
                    self.map_sectors,
                    map_bytes(current_size)
                ),
            ));
        }
        if self.map_offset == 0 || !self.map_offset.is_multiple_of(SECTOR_SIZE) {
            p.push(err(
                "offset",
                format!("bitmap offset {:#x} is not a sector", self.map_offset),
            ));
        } else if self.map_offset.saturating_add(self.map_area()) > footer_at {
            p.push(err(
                "offset",
                format!(
                    "the bitmap ({:#x}, {} sectors) runs into the footer at {footer_at:#x}",
                    self.map_offset, self.map_sectors
                ),
            ));
        }
        p
    }
}

/// The checksum of the checksummed bitmap bytes under `version`.
pub fn checksum(map: &[u8], version: u32) -> u32 {
    let sum = if version == BATMAP_VERSION_SIGNED_SUM {
        map.iter()
            .fold(0u32, |s, &b| s.wrapping_add(i32::from(b as i8) as u32))
    } else {
        map.iter().fold(0u32, |s, &b| s.wrapping_add(u32::from(b)))
    };
    !sum
}

/// Whether block `n`'s bit is set in `map`.
pub fn test_bit(map: &[u8], n: u64) -> bool {
    usize::try_from(n / 8)
        .ok()
        .and_then(|i| map.get(i))
        .is_some_and(|b| b & (0x80 >> (n % 8)) != 0)
}

/// The blocks below `limit` whose bit is set in `map`, in order (a clear byte costs one
/// look).
pub fn set_bits(map: &[u8], limit: u64) -> impl Iterator<Item = u64> + '_ {
    map.iter()
        .enumerate()
        .filter(|(_, &b)| b != 0)
        .flat_map(|(i, &b)| {
            (0..8u64)
                .filter(move |k| b & (0x80 >> k) != 0)
                .map(move |k| i as u64 * 8 + k)
        })
        .take_while(move |&n| n < limit)
}

/// Clears block `n`'s bit in `map`; returns whether it was set.
pub fn clear_bit(map: &mut [u8], n: u64) -> bool {
    let Some(b) = usize::try_from(n / 8).ok().and_then(|i| map.get_mut(i)) else {
        return false;
    };
    let mask = 0x80u8 >> (n % 8);
    let was = *b & mask != 0;
    *b &= !mask;
    was
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(map_offset: u64, sectors: u32) -> BatmapHeader {
        let mut raw = [0u8; 512];
        raw[..8].copy_from_slice(&BATMAP_COOKIE);
        BigEndian::write_u64(&mut raw[8..16], map_offset);
        BigEndian::write_u32(&mut raw[16..20], sectors);
        BigEndian::write_u32(&mut raw[20..24], BATMAP_VERSION);
        raw[28] = 7; // a marker, kept
        BatmapHeader::decode(&raw).expect("512 bytes")
    }

    #[test]
    fn header_round_trips_and_keeps_the_marker() {
        let mut h = header(2560, 1);
        h.checksum = 0xFFFF_FF7F;
        let back = BatmapHeader::decode(&h.encode()).expect("512 bytes");
        assert_eq!(back.encode(), h.encode());
        assert_eq!((back.map_offset, back.checksum), (2560, 0xFFFF_FF7F));
        assert_eq!(h.encode()[28], 7);
    }

    #[test]
    fn checksum_of_blktaps_written_image_matches() {
        // written-64m.vhd: block 0 full, map byte 0 = 0x80, stored 0xFFFFFF7F.
        let mut map = vec![0u8; 512];
        map[0] = 0x80;
        assert_eq!(checksum(&map, BATMAP_VERSION), 0xFFFF_FF7F);
        assert_eq!(checksum(&[0u8; 512], BATMAP_VERSION), 0xFFFF_FFFF);
    }

    #[test]
    fn bits_are_most_significant_first() {
        let mut map = vec![0u8; 2];
        map[0] = 0x20;
        assert!(test_bit(&map, 2) && !test_bit(&map, 0));
        assert!(clear_bit(&mut map, 2));
        assert_eq!(map, vec![0, 0]);
        assert!(!clear_bit(&mut map, 1000));
    }

    #[test]
    fn set_bits_lists_the_set_bits_below_the_limit() {
        let map = [0x81, 0x00, 0x20];

        let bits: Vec<u64> = set_bits(&map, 18).collect();

        assert_eq!(bits, vec![0, 7]);
        assert_eq!(set_bits(&map, 100).collect::<Vec<_>>(), vec![0, 7, 18]);
    }

    #[test]
    fn a_new_header_is_laid_out_as_blktap_creates_it() {
        // empty-64m.vhd (fixtures/blktap): 32 entries, header at 2048, bitmap at 2560.
        let h = BatmapHeader::new(2048, 32);

        assert_eq!(
            (h.map_offset, h.map_sectors, h.version),
            (2560, 1, BATMAP_VERSION)
        );
        assert_eq!(h.checksum, checksum(&[0u8; 512], BATMAP_VERSION));
        assert!(h.validate(64 << 20, 32, 3072).is_empty());
        // 4097 entries: 513 bytes of bits, two sectors.
        assert_eq!(BatmapHeader::new(0, 4097).map_sectors, 2);
    }

    #[test]
    fn layout_of_a_64_mib_blktap_disk() {
        assert_eq!(header_offset(1536, 32), 2048);
        assert_eq!(map_bytes(64 << 20), 512);
        assert!(header(2560, 1).validate(64 << 20, 32, 3072).is_empty());
        let p = header(2560, 1).validate(64 << 20, 32, 2560);
        assert!(p.iter().any(|x| x.field == "offset"), "{p:?}");
        let p = header(2560, 0).validate(64 << 20, 32, 3072);
        assert!(p.iter().any(|x| x.field == "size"), "{p:?}");
    }
}
