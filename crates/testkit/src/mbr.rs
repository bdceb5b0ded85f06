//! Partition tables written by hand, for tests that need one without `sfdisk`.

/// A master boot record with one primary partition of type `ptype` (0x83: Linux)
/// covering bytes `start..end` (multiples of 512; the other three entries empty).
pub fn mbr_with_partition(start: u64, end: u64, ptype: u8) -> [u8; 512] {
    let sector = |bytes: u64| u32::try_from(bytes / 512).expect("the partition fits an MBR");
    let mut mbr = [0u8; 512];
    let entry = &mut mbr[446..462];
    entry[4] = ptype;
    entry[8..12].copy_from_slice(&sector(start).to_le_bytes());
    entry[12..16].copy_from_slice(&sector(end - start).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}
