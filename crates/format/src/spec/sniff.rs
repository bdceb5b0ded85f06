//! Recognising other disk-image formats by their signatures, so that a qcow2, VHDX,
//! VMDK or VDI file — or a VHD too damaged to open — is never taken for a raw image.

/// Bytes of a file's start [`identify`] looks at.
pub const SNIFF_BYTES: usize = 1024;

/// The disk-image format whose signature starts `head` (the first [`SNIFF_BYTES`] of a
/// file), other than VHD; `None` when nothing is recognised.
///
/// ```
/// use vhdkit_format::spec::sniff::identify;
/// assert_eq!(identify(b"QFI\xfb\0\0\0\x03"), Some("qcow2 (version 3)"));
/// assert_eq!(identify(b"vhdxfile"), Some("VHDX"));
/// assert_eq!(identify(&[0u8; 512]), None);
/// ```
pub fn identify(head: &[u8]) -> Option<&'static str> {
    let at = |off: usize, sig: &[u8]| head.get(off..off + sig.len()) == Some(sig);
    if at(0, b"QFI\xfb") {
        return Some(match head.get(4..8) {
            Some([0, 0, 0, 1]) => "qcow (version 1)",
            Some([0, 0, 0, 2]) => "qcow2 (version 2)",
            Some([0, 0, 0, 3]) => "qcow2 (version 3)",
            _ => "qcow",
        });
    }
    if at(0, b"vhdxfile") {
        return Some("VHDX");
    }
    if at(0, b"KDMV") {
        return Some("VMDK (sparse extent)");
    }
    if at(0, b"COWD") {
        return Some("VMDK (ESX sparse extent)");
    }
    if at(0, b"# Disk DescriptorFile") {
        return Some("VMDK (descriptor)");
    }
    // VirtualBox: a text banner, then the signature at 0x40 (little-endian 0xBEDA107F).
    if at(0x40, &[0x7F, 0x10, 0xDA, 0xBE]) {
        return Some("VDI (VirtualBox)");
    }
    if at(0, b"QED\0") {
        return Some("QED");
    }
    if at(0, b"conectix") || at(512, b"cxsparse") {
        return Some("a VHD whose footer is damaged");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_is_named() {
        let mut vdi = vec![0u8; 512];
        vdi[..40].copy_from_slice(b"<<< Oracle VM VirtualBox Disk Image >>>\n");
        vdi[0x40..0x44].copy_from_slice(&[0x7F, 0x10, 0xDA, 0xBE]);
        assert_eq!(identify(&vdi), Some("VDI (VirtualBox)"));
        assert_eq!(identify(b"KDMV\x01\0\0\0"), Some("VMDK (sparse extent)"));
        assert_eq!(
            identify(b"# Disk DescriptorFile\n"),
            Some("VMDK (descriptor)")
        );
        assert_eq!(identify(b"QFI\xfb\0\0\0\x01"), Some("qcow (version 1)"));
        let mut dyn_hdr = vec![0u8; 1024];
        dyn_hdr[512..520].copy_from_slice(b"cxsparse");
        assert_eq!(identify(&dyn_hdr), Some("a VHD whose footer is damaged"));
    }

    #[test]
    fn raw_bytes_are_not_a_format() {
        assert_eq!(identify(b""), None);
        assert_eq!(
            identify(&[0xEBu8, 0x3C, 0x90, b'M', b'S', b'D', b'O', b'S']),
            None
        );
    }
}
