//! Sector bitmaps: one bit per sector of a block, most significant bit first.

/// A view of a block's sector bitmap. Bit `i` (byte `i / 8`, mask `0x80 >> (i % 8)`) set
/// means sector `i` of the block lives in this file.
#[derive(Debug, Clone, Copy)]
pub struct SectorBitmap<'a> {
    bytes: &'a [u8],
}

impl<'a> SectorBitmap<'a> {
    /// Wraps bitmap bytes.
    pub fn new(bytes: &'a [u8]) -> Self {
        SectorBitmap { bytes }
    }

    /// Whether sector `i` is marked. Sectors past the bitmap read as unmarked.
    pub fn is_set(&self, i: u64) -> bool {
        usize::try_from(i / 8)
            .ok()
            .and_then(|b| self.bytes.get(b))
            .is_some_and(|byte| byte & (0x80 >> (i % 8)) != 0)
    }

    /// Length of the run of sectors starting at `start` that share `start`'s bit, capped
    /// at `limit` sectors.
    pub fn run_length(&self, start: u64, limit: u64) -> u64 {
        let bit = self.is_set(start);
        let mut n = 1;
        while n < limit {
            // No sector lies past u64::MAX: the run ends there.
            let Some(i) = start.checked_add(n) else {
                break;
            };
            // Skip whole bytes when aligned and uniform.
            if i.is_multiple_of(8) && limit - n >= 8 {
                let byte = usize::try_from(i / 8)
                    .ok()
                    .and_then(|b| self.bytes.get(b))
                    .copied()
                    .unwrap_or(0);
                if byte == if bit { 0xFF } else { 0 } {
                    n += 8;
                    continue;
                }
            }
            if self.is_set(i) != bit {
                break;
            }
            n += 1;
        }
        n
    }

    /// Whether no sector among the first `sectors` is marked.
    pub fn is_empty(&self, sectors: u64) -> bool {
        (0..sectors).all(|i| !self.is_set(i))
    }

    /// Number of marked sectors among the first `sectors`.
    pub fn count_set(&self, sectors: u64) -> u64 {
        (0..sectors).filter(|&i| self.is_set(i)).count() as u64
    }
}

/// Marks sectors `start..start + count` in `bytes` (ignoring any past its end).
pub fn set_range(bytes: &mut [u8], start: u64, count: u64) {
    for i in start..start.saturating_add(count) {
        if let Some(b) = usize::try_from(i / 8).ok().and_then(|b| bytes.get_mut(b)) {
            *b |= 0x80 >> (i % 8);
        } else {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_bits_are_most_significant_first() {
        let bytes = [0b1000_0001u8, 0];
        let bm = SectorBitmap::new(&bytes);
        assert!(bm.is_set(0));
        assert!(!bm.is_set(1));
        assert!(bm.is_set(7));
        assert!(!bm.is_set(8));
        assert!(!bm.is_set(10_000));
    }

    #[test]
    fn set_range_marks_exactly_the_range() {
        let mut bytes = [0u8; 4];
        set_range(&mut bytes, 3, 10);
        let bm = SectorBitmap::new(&bytes);
        let set: Vec<u64> = (0..32).filter(|&i| bm.is_set(i)).collect();
        assert_eq!(set, (3..13).collect::<Vec<_>>());
        assert_eq!(bm.count_set(32), 10);
        set_range(&mut bytes, 30, 100); // past the end: ignored
    }

    #[test]
    fn run_length_stops_at_the_first_change() {
        let mut bytes = [0u8; 8];
        set_range(&mut bytes, 5, 40);
        let bm = SectorBitmap::new(&bytes);
        assert_eq!(bm.run_length(0, 64), 5);
        assert_eq!(bm.run_length(5, 64), 40);
        assert_eq!(bm.run_length(45, 19), 19);
        // Sectors past the bitmap read as unmarked.
        assert_eq!(bm.run_length(45, 100), 100);
        assert_eq!(bm.run_length(5, 10), 10);
        assert!(!bm.is_empty(64));
        assert!(SectorBitmap::new(&[0; 8]).is_empty(64));
    }
}
