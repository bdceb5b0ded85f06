//! The file type identifier: the first structure of every VHDX file (MS-VHDX 2.2.1).

use byteorder::{ByteOrder, LittleEndian};

use super::error::{need, Structure, VhdxError};

/// Offset of the file type identifier.
pub const IDENT_OFFSET: u64 = 0;
/// Space the identifier owns (the rest is reserved).
pub const IDENT_SIZE: usize = 64 * 1024;
/// Bytes of the identifier that carry meaning: the signature and the creator.
pub const IDENT_USED: usize = CREATOR_OFFSET + CREATOR_SIZE;
/// `vhdxfile`: the signature at offset 0 that names the format.
pub const IDENT_SIGNATURE: [u8; 8] = *b"vhdxfile";
/// Offset of the creator string inside the identifier.
pub const CREATOR_OFFSET: usize = 8;
/// Bytes of the creator field: 256 UTF-16LE code units, diagnostic only.
pub const CREATOR_SIZE: usize = 512;
/// The creator vhdkit writes.
pub const VHDKIT_CREATOR: &str = concat!("vhdkit ", env!("CARGO_PKG_VERSION"));

/// The identifier as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFileIdentifier {
    /// `vhdxfile` in a valid file.
    pub signature: [u8; 8],
    /// The creator field, UTF-16LE.
    pub creator: [u8; CREATOR_SIZE],
}

/// The validated identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentifier {
    /// The program that created the file, as it wrote itself (diagnostic only; decoded
    /// leniently, cut at the first NUL).
    pub creator: String,
}

impl RawFileIdentifier {
    /// Decodes the first [`IDENT_USED`] bytes of `bytes`; fails only when shorter.
    pub fn decode(bytes: &[u8]) -> Result<RawFileIdentifier, VhdxError> {
        need(bytes, IDENT_USED, Structure::FileIdentifier, IDENT_OFFSET)?;
        let mut signature = [0; 8];
        signature.copy_from_slice(&bytes[..8]);
        let mut creator = [0; CREATOR_SIZE];
        creator.copy_from_slice(&bytes[CREATOR_OFFSET..IDENT_USED]);
        Ok(RawFileIdentifier { signature, creator })
    }

    /// Checks the signature; the creator is free text.
    pub fn validate(&self) -> Result<FileIdentifier, VhdxError> {
        if self.signature != IDENT_SIGNATURE {
            return Err(VhdxError::signature(
                Structure::FileIdentifier,
                IDENT_OFFSET,
                &self.signature,
                "vhdxfile",
            ));
        }
        let units: Vec<u16> = self
            .creator
            .chunks_exact(2)
            .map(LittleEndian::read_u16)
            .take_while(|&u| u != 0)
            .collect();
        Ok(FileIdentifier {
            creator: String::from_utf16_lossy(&units),
        })
    }
}

impl FileIdentifier {
    /// The identifier vhdkit writes.
    pub fn vhdkit() -> FileIdentifier {
        FileIdentifier {
            creator: VHDKIT_CREATOR.to_string(),
        }
    }

    /// The whole 64 KiB identifier area. A creator longer than 255 UTF-16 units is cut
    /// after the last whole character that fits (one unit stays for the terminating
    /// NUL; a surrogate pair is never split).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; IDENT_SIZE];
        b[..8].copy_from_slice(&IDENT_SIGNATURE);
        let mut units: Vec<u16> = Vec::with_capacity(CREATOR_SIZE / 2);
        let mut buf = [0u16; 2];
        for c in self.creator.chars() {
            let enc = c.encode_utf16(&mut buf);
            if units.len() + enc.len() > CREATOR_SIZE / 2 - 1 {
                break;
            }
            units.extend_from_slice(enc);
        }
        for (i, u) in units.iter().enumerate() {
            let at = CREATOR_OFFSET + 2 * i;
            b[at..at + 2].copy_from_slice(&u.to_le_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_round_trips() {
        let id = FileIdentifier::vhdkit();
        let bytes = id.encode();
        assert_eq!(bytes.len(), IDENT_SIZE);
        let back = RawFileIdentifier::decode(&bytes)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn identifier_with_wrong_signature_is_rejected() {
        let mut bytes = FileIdentifier::vhdkit().encode();
        bytes[..8].copy_from_slice(b"conectix");
        let err = RawFileIdentifier::decode(&bytes)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            matches!(err, VhdxError::Signature { offset: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("conectix"));
    }

    #[test]
    fn short_identifier_is_truncated() {
        let err = RawFileIdentifier::decode(&[0; 100]).unwrap_err();
        assert!(matches!(
            err,
            VhdxError::Truncated {
                expected: 520,
                found: 100,
                ..
            }
        ));
    }

    #[test]
    fn creator_cut_never_splits_a_surrogate_pair() {
        // Found by the vhdx_header fuzz target: 254 units, then a character of two.
        let id = FileIdentifier {
            creator: format!("{}\u{1F600}tail", "a".repeat(254)),
        };
        let back = RawFileIdentifier::decode(&id.encode())
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(back.creator, "a".repeat(254));
        let again = RawFileIdentifier::decode(&back.clone().encode())
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(again, back);
    }

    #[test]
    fn overlong_creator_is_cut_with_room_for_nul() {
        let id = FileIdentifier {
            creator: "x".repeat(400),
        };
        let back = RawFileIdentifier::decode(&id.encode())
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(back.creator.len(), 255);
    }
}
