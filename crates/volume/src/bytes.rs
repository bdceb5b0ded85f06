//! Little- and big-endian field reads over byte slices. Out-of-range reads give 0: the
//! callers read fixed-size buffers whose lengths they checked, so this never happens in
//! practice, and 0 is a value every validator rejects or handles.

pub(crate) fn u8_at(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    off.checked_add(N)
        .and_then(|end| b.get(off..end))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .unwrap_or([0; N])
}

pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(arr(b, off))
}

pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(arr(b, off))
}

pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(arr(b, off))
}

pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(arr(b, off))
}

pub(crate) fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(arr(b, off))
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
