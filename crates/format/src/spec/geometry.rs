//! CHS geometry, computed by the algorithm of the VHD specification.

use byteorder::{BigEndian, ByteOrder};

/// Largest sector count the geometry can describe: 65535 cylinders × 16 heads × 255
/// sectors per track.
pub const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;

/// Cylinder/head/sector geometry stored in the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Geometry {
    /// Cylinders (16 bits on disk).
    pub cylinders: u16,
    /// Heads (8 bits on disk).
    pub heads: u8,
    /// Sectors per track (8 bits on disk).
    pub sectors_per_track: u8,
}

impl Geometry {
    /// The geometry 65535/16/255 that marks "size is the footer's current size" for
    /// readers such as qemu.
    pub const MAX: Geometry = Geometry {
        cylinders: 65535,
        heads: 16,
        sectors_per_track: 255,
    };

    /// Computes the specification's geometry for a disk of `total_sectors` sectors.
    ///
    /// The product C·H·S never exceeds the input; sizes above about 127.5 GiB saturate at
    /// [`Geometry::MAX`].
    ///
    /// ```
    /// use vhdkit_format::spec::Geometry;
    /// let g = Geometry::from_total_sectors(1024 * 1024 * 1024 / 512);
    /// assert_eq!((g.cylinders, g.heads, g.sectors_per_track), (2080, 16, 63));
    /// ```
    pub fn from_total_sectors(total_sectors: u64) -> Geometry {
        let total = total_sectors.min(MAX_CHS_SECTORS);
        let (spt, heads, cyl_times_heads);
        if total >= 65535 * 16 * 63 {
            spt = 255;
            heads = 16;
            cyl_times_heads = total / spt;
        } else {
            let mut s = 17;
            let mut cth = total / s;
            let mut h = cth.div_ceil(1024).max(4);
            if cth >= h * 1024 || h > 16 {
                s = 31;
                h = 16;
                cth = total / s;
            }
            if cth >= h * 1024 {
                s = 63;
                h = 16;
                cth = total / s;
            }
            spt = s;
            heads = h;
            cyl_times_heads = cth;
        }
        let cylinders = cyl_times_heads / heads;
        Geometry {
            // All three fit by construction: total ≤ 65535·16·255.
            cylinders: u16::try_from(cylinders).unwrap_or(u16::MAX),
            heads: u8::try_from(heads).unwrap_or(u8::MAX),
            sectors_per_track: u8::try_from(spt).unwrap_or(u8::MAX),
        }
    }

    /// Sectors the geometry describes (C·H·S).
    pub fn total_sectors(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }

    /// Bytes the geometry describes (C·H·S·512), the size Virtual PC shows.
    pub fn capacity(&self) -> u64 {
        self.total_sectors() * super::SECTOR_SIZE
    }

    /// Decodes the four geometry bytes of the footer.
    pub fn decode(bytes: [u8; 4]) -> Geometry {
        Geometry {
            cylinders: BigEndian::read_u16(&bytes[..2]),
            heads: bytes[2],
            sectors_per_track: bytes[3],
        }
    }

    /// Encodes the four geometry bytes of the footer.
    pub fn encode(&self) -> [u8; 4] {
        let c = self.cylinders.to_be_bytes();
        [c[0], c[1], self.heads, self.sectors_per_track]
    }
}

impl std::fmt::Display for Geometry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.cylinders, self.heads, self.sectors_per_track
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chs(bytes: u64) -> (u16, u8, u8) {
        let g = Geometry::from_total_sectors(bytes / 512);
        (g.cylinders, g.heads, g.sectors_per_track)
    }

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

    #[test]
    fn geometry_of_known_sizes_matches_the_specification() {
        // Values from the specification's algorithm as used by Hyper-V, VirtualBox and
        // the real images in shared/realworld.
        assert_eq!(chs(4 * MIB), (120, 4, 17));
        assert_eq!(chs(5 * MIB), (150, 4, 17));
        assert_eq!(chs(10 * MIB), (301, 4, 17));
        assert_eq!(chs(512 * MIB), (1040, 16, 63));
        assert_eq!(chs(GIB), (2080, 16, 63));
        assert_eq!(chs(10 * GIB), (20805, 16, 63));
        assert_eq!(chs(40 * GIB), (20560, 16, 255));
        assert_eq!(chs(127 * GIB), (65278, 16, 255));
        assert_eq!(chs(4_352_000), (125, 4, 17));
    }

    #[test]
    fn geometry_above_127_gib_saturates_at_max() {
        assert_eq!(Geometry::from_total_sectors(u64::MAX), Geometry::MAX);
        assert_eq!(chs(2040 * GIB), (65535, 16, 255));
    }

    #[test]
    fn geometry_never_exceeds_the_requested_size() {
        for sectors in (0..300_000u64)
            .step_by(997)
            .chain([6144, 507_904, 66_059_279])
        {
            let g = Geometry::from_total_sectors(sectors);
            assert!(g.total_sectors() <= sectors, "{sectors}: {g}");
        }
    }

    #[test]
    fn geometry_round_trips_through_bytes() {
        let g = Geometry {
            cylinders: 0x1234,
            heads: 16,
            sectors_per_track: 63,
        };
        assert_eq!(Geometry::decode(g.encode()), g);
    }
}
