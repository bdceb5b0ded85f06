//! Comparing byte strings.

/// Whether every byte is zero (compared a block at a time: fast in a debug build).
pub fn all_zero(data: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    data.chunks(4096).all(|c| c == &ZEROS[..c.len()])
}

/// Asserts that two byte strings are equal; on a difference, names the first differing
/// offset (and its sector) with up to 16 bytes from there, instead of printing
/// megabytes.
#[track_caller]
pub fn assert_bytes_eq(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} differs from the expected {}",
        got.len(),
        want.len()
    );
    if got == want {
        return; // memcmp: the search below is slow in a debug build
    }
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let end = (i + 16).min(got.len());
        panic!(
            "{what}: first difference at byte {i} (sector {}): got {:02x?}, expected {:02x?}",
            i / 512,
            &got[i..end],
            &want[i..end]
        );
    }
}
