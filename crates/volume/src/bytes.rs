//! Little- and big-endian field reads at an offset, with byteorder (the one way the
//! workspace reads numbers from bytes). Out-of-range reads give 0: the callers read
//! fixed-size buffers whose lengths they checked, so this never happens in practice,
//! and 0 is a value every validator rejects or handles.

use byteorder::{BigEndian, ByteOrder, LittleEndian};

pub(crate) fn u8_at(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

/// `b[off..off + n]`, or `None` past the end.
fn field(b: &[u8], off: usize, n: usize) -> Option<&[u8]> {
    off.checked_add(n).and_then(|end| b.get(off..end))
}

pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    field(b, off, 2).map_or(0, LittleEndian::read_u16)
}

pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    field(b, off, 4).map_or(0, LittleEndian::read_u32)
}

pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    field(b, off, 8).map_or(0, LittleEndian::read_u64)
}

pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    field(b, off, 4).map_or(0, BigEndian::read_u32)
}

pub(crate) fn be64(b: &[u8], off: usize) -> u64 {
    field(b, off, 8).map_or(0, BigEndian::read_u64)
}

/// Whether `b[off..]` starts with `magic`.
pub(crate) fn has(b: &[u8], off: usize, magic: &[u8]) -> bool {
    off.checked_add(magic.len())
        .and_then(|end| b.get(off..end))
        .is_some_and(|s| s == magic)
}

/// `a.div_ceil(b)` for `b > 0`; `None` for `b == 0`.
pub(crate) fn div_ceil(a: u64, b: u64) -> Option<u64> {
    if b == 0 {
        None
    } else {
        Some(a.div_ceil(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_take_their_byte_order_and_give_zero_past_the_end() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(le16(&b, 1), 0x0302);
        assert_eq!(le32(&b, 0), 0x0403_0201);
        assert_eq!(be32(&b, 0), 0x0102_0304);
        assert_eq!(le64(&b, 1), 0x0908_0706_0504_0302);
        assert_eq!(be64(&b, 1), 0x0203_0405_0607_0809);
        assert_eq!(le32(&b, 6), 0, "a field running past the end");
        assert_eq!(be64(&b, 2), 0);
        assert_eq!(le16(&b, usize::MAX), 0, "an offset that overflows");
        assert_eq!(u8_at(&b, 9), 0);
    }
}
