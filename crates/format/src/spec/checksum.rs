//! The ones'-complement checksum of the footer and the dynamic header.

/// Computes the VHD checksum of `bytes`, treating the four bytes at `checksum_at` as zero:
/// the wrapping sum of every byte, bitwise inverted.
///
/// ```
/// use vhdkit_format::spec::ones_complement_checksum;
/// let mut footer = [0u8; 512];
/// footer[..8].copy_from_slice(b"conectix");
/// let sum = ones_complement_checksum(&footer, 64);
/// assert_eq!(sum, !(b"conectix".iter().map(|&b| b as u32).sum::<u32>()));
/// ```
pub fn ones_complement_checksum(bytes: &[u8], checksum_at: usize) -> u32 {
    let skip = checksum_at..checksum_at.saturating_add(4);
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_windows7_footer_matches_known_vector() {
        // A Windows 7 (`win ` 6.1) dynamic footer and its stored checksum.
        let head: [u8; 85] = [
            0x63, 0x6F, 0x6E, 0x65, 0x63, 0x74, 0x69, 0x78, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x16, 0x98, 0x8B, 0x19,
            0x77, 0x69, 0x6E, 0x20, 0x00, 0x06, 0x00, 0x01, 0x57, 0x69, 0x32, 0x6B, 0x00, 0x00,
            0x00, 0xEE, 0x2F, 0x8D, 0x30, 0x00, 0x00, 0x00, 0x00, 0xEE, 0x2F, 0x8D, 0x30, 0x00,
            0xFF, 0xFF, 0x10, 0xFF, 0x00, 0x00, 0x00, 0x03, 0xFF, 0xFF, 0xE8, 0x44, 0x7D, 0xD8,
            0x77, 0x50, 0xFA, 0x9B, 0xA6, 0x42, 0x90, 0x33, 0xC3, 0x97, 0x96, 0xA6, 0x9A, 0xE5,
            0x00,
        ];
        let mut footer = [0u8; 512];
        footer[..85].copy_from_slice(&head);
        assert_eq!(ones_complement_checksum(&footer, 64), 0xFFFF_E844);
    }

    #[test]
    fn checksum_ignores_the_stored_checksum_bytes() {
        let mut a = [7u8; 512];
        let b = a;
        a[64..68].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            ones_complement_checksum(&a, 64),
            ones_complement_checksum(&b, 64)
        );
    }
}
