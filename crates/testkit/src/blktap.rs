//! Copies of the blktap fixtures (`fixtures/blktap/`) with an inconsistent Xen batmap:
//! the forms that a strict open, `check` and `check --repair` must grade alike. Each is
//! one small edit of a genuine file (offsets from the fixtures: BAT at 0x600, batmap
//! header at 0x800, bitmap at 0xa00, trailing footer last).

/// One way a batmap can disagree with the rest of its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatmapDamage {
    /// `empty-64m.vhd` cut after its BAT and the footer appended where the batmap
    /// header was: cookie `conectix`, not `tdbatmap`.
    Cookie,
    /// `written-64m.vhd` with BAT entry 0 set to 0xFFFFFFFF: block 0's bit is set for a
    /// block that is not allocated.
    UnallocatedBit,
    /// `empty-64m.vhd` with the byte at file offset 0xBFA (in the bitmap, past the
    /// disk's blocks) set to 0x2C: the checksum no longer matches.
    Checksum,
    /// `written-64m.vhd` with block 5's bit set (its 12 KiB are partly written) and the
    /// checksum made to match: a set bit whose block's sector bitmap is not full.
    NotFullBit,
}

impl BatmapDamage {
    /// Every form.
    pub const ALL: [BatmapDamage; 4] = [
        BatmapDamage::Cookie,
        BatmapDamage::UnallocatedBit,
        BatmapDamage::Checksum,
        BatmapDamage::NotFullBit,
    ];

    /// The fixture under `fixtures/blktap/` the form is made from.
    pub fn fixture(self) -> &'static str {
        match self {
            BatmapDamage::Cookie | BatmapDamage::Checksum => "empty-64m.vhd",
            BatmapDamage::UnallocatedBit | BatmapDamage::NotFullBit => "written-64m.vhd",
        }
    }

    /// The damaged bytes, from the fixture's bytes.
    pub fn apply(self, fixture: &[u8]) -> Vec<u8> {
        let mut b = fixture.to_vec();
        match self {
            BatmapDamage::Cookie => {
                let footer = b[b.len() - 512..].to_vec();
                b.truncate(0x800);
                b.extend_from_slice(&footer);
            }
            BatmapDamage::UnallocatedBit => b[0x600..0x604].fill(0xFF),
            BatmapDamage::Checksum => b[0xBFA] = 0x2C,
            BatmapDamage::NotFullBit => {
                b[0xA00] |= 0x80 >> 5;
                let sum = b[0xA00..0xC00]
                    .iter()
                    .fold(0u32, |s, &x| s.wrapping_add(u32::from(x)));
                b[0x818..0x81C].copy_from_slice(&(!sum).to_be_bytes());
            }
        }
        b
    }
}
