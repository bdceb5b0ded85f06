//! Parent locator entries of the dynamic header, and the paths they carry.

use byteorder::{BigEndian, ByteOrder, LittleEndian};

use super::{Problem, Severity, SECTOR_SIZE};

/// Number of locator slots in the dynamic header.
pub const LOCATOR_COUNT: usize = 8;
/// Size of one locator entry.
pub const LOCATOR_ENTRY_SIZE: usize = 24;
/// Largest locator payload vhdkit reads: 64 KiB, far more than any path needs.
pub const MAX_LOCATOR_DATA: u32 = 64 * 1024;

/// The platform code of a locator: what kind of path its payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlatformCode {
    /// 0: unused slot.
    None,
    /// `Wi2r`: relative Windows path, 8-bit (deprecated).
    Wi2r,
    /// `Wi2k`: absolute Windows path, 8-bit (deprecated).
    Wi2k,
    /// `W2ru`: relative Windows path, UTF-16LE.
    W2ru,
    /// `W2ku`: absolute Windows path, UTF-16LE.
    W2ku,
    /// `Mac `: a classic Mac OS alias record (vhdkit reads the file name in it).
    Mac,
    /// `MacX`: file URL, UTF-8.
    MacX,
    /// Anything else.
    Unknown(u32),
}

impl PlatformCode {
    /// Decodes the big-endian code.
    pub fn from_code(code: u32) -> PlatformCode {
        match &code.to_be_bytes() {
            [0, 0, 0, 0] => PlatformCode::None,
            b"Wi2r" => PlatformCode::Wi2r,
            b"Wi2k" => PlatformCode::Wi2k,
            b"W2ru" => PlatformCode::W2ru,
            b"W2ku" => PlatformCode::W2ku,
            b"Mac " => PlatformCode::Mac,
            b"MacX" => PlatformCode::MacX,
            _ => PlatformCode::Unknown(code),
        }
    }

    /// The on-disk code.
    pub fn code(self) -> u32 {
        let b: &[u8; 4] = match self {
            PlatformCode::None => return 0,
            PlatformCode::Unknown(c) => return c,
            PlatformCode::Wi2r => b"Wi2r",
            PlatformCode::Wi2k => b"Wi2k",
            PlatformCode::W2ru => b"W2ru",
            PlatformCode::W2ku => b"W2ku",
            PlatformCode::Mac => b"Mac ",
            PlatformCode::MacX => b"MacX",
        };
        BigEndian::read_u32(b)
    }

    /// Whether the path is relative to the child's directory (a `Mac ` alias gives the
    /// parent's file name, looked for beside the child).
    pub fn is_relative(self) -> bool {
        matches!(
            self,
            PlatformCode::Wi2r | PlatformCode::W2ru | PlatformCode::Mac
        )
    }
}

impl std::fmt::Display for PlatformCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlatformCode::None => write!(f, "none"),
            PlatformCode::Unknown(c) => write!(f, "{}", super::fourcc_to_string(c.to_be_bytes())),
            other => write!(f, "{}", super::fourcc_to_string(other.code().to_be_bytes())),
        }
    }
}

/// One 24-byte parent locator entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParentLocator {
    /// Platform code.
    pub code: PlatformCode,
    /// Platform data space as stored: sectors per the specification, bytes in practice.
    pub data_space: u32,
    /// Bytes of payload actually used.
    pub data_length: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Absolute file offset of the payload.
    pub data_offset: u64,
}

/// A path decoded from a locator payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatorPath {
    /// The platform code it came from.
    pub code: PlatformCode,
    /// The path with Windows separators turned into `/` and a drive letter removed.
    pub path: String,
    /// The path exactly as stored (decoded to text).
    pub raw: String,
    /// Whether it is relative to the child's directory.
    pub relative: bool,
}

impl ParentLocator {
    /// The unused slot.
    pub const EMPTY: ParentLocator = ParentLocator {
        code: PlatformCode::None,
        data_space: 0,
        data_length: 0,
        reserved: 0,
        data_offset: 0,
    };

    /// Decodes one entry. `bytes` must be 24 bytes long.
    pub fn decode(bytes: &[u8]) -> Result<ParentLocator, super::LengthError> {
        let b: &[u8; LOCATOR_ENTRY_SIZE] = super::fixed(bytes, "parent locator")?;
        Ok(ParentLocator {
            code: PlatformCode::from_code(BigEndian::read_u32(&b[0..])),
            data_space: BigEndian::read_u32(&b[4..]),
            data_length: BigEndian::read_u32(&b[8..]),
            reserved: BigEndian::read_u32(&b[12..]),
            data_offset: BigEndian::read_u64(&b[16..]),
        })
    }

    /// Encodes the entry.
    pub fn encode(&self) -> [u8; LOCATOR_ENTRY_SIZE] {
        let mut b = [0u8; LOCATOR_ENTRY_SIZE];
        BigEndian::write_u32(&mut b[0..], self.code.code());
        BigEndian::write_u32(&mut b[4..], self.data_space);
        BigEndian::write_u32(&mut b[8..], self.data_length);
        BigEndian::write_u32(&mut b[12..], self.reserved);
        BigEndian::write_u64(&mut b[16..], self.data_offset);
        b
    }

    /// Whether the slot is in use.
    pub fn is_used(&self) -> bool {
        self.code != PlatformCode::None
    }

    /// Bytes reserved for the payload. The specification counts sectors, every real
    /// writer stores bytes: a value below 512 is taken as sectors, anything else as bytes
    /// (blktap's rule).
    pub fn data_space_bytes(&self) -> u64 {
        if u64::from(self.data_space) < SECTOR_SIZE {
            u64::from(self.data_space) * SECTOR_SIZE
        } else {
            u64::from(self.data_space)
        }
    }

    /// Problems with the entry itself (not its payload). `file_len` bounds the payload.
    pub fn validate(&self, slot: usize, file_len: Option<u64>) -> Vec<Problem> {
        let mut p = Vec::new();
        let s = "parent locator";
        match self.code {
            PlatformCode::None => {
                if *self != ParentLocator::EMPTY {
                    p.push(Problem::new(
                        Severity::Warning,
                        s,
                        "entry",
                        format!("slot {slot} is unused but not all zero"),
                    ));
                }
                return p;
            }
            PlatformCode::Unknown(c) => p.push(Problem::new(
                Severity::Warning,
                s,
                "platform code",
                format!("slot {slot} has unknown code {c:#010x}"),
            )),
            _ => {}
        }
        if self.data_length > MAX_LOCATOR_DATA {
            p.push(Problem::new(
                Severity::Warning,
                s,
                "data length",
                format!(
                    "slot {slot}: {} bytes is more than the {MAX_LOCATOR_DATA} vhdkit reads",
                    self.data_length
                ),
            ));
        }
        if u64::from(self.data_length) > self.data_space_bytes() {
            p.push(Problem::new(
                Severity::Warning,
                s,
                "data length",
                format!(
                    "slot {slot}: {} bytes do not fit its data space of {} bytes",
                    self.data_length,
                    self.data_space_bytes()
                ),
            ));
        }
        if let Some(len) = file_len {
            let end = self.data_offset.saturating_add(u64::from(self.data_length));
            if end > len {
                p.push(Problem::new(
                    Severity::Warning,
                    s,
                    "data offset",
                    format!(
                        "slot {slot}: payload {:#x}..{end:#x} runs past the end of the file ({len:#x})",
                        self.data_offset
                    ),
                ));
            }
        }
        if self.reserved != 0 {
            p.push(Problem::new(
                Severity::Warning,
                s,
                "reserved",
                format!("slot {slot}: reserved field is {:#x}", self.reserved),
            ));
        }
        p
    }

    /// Decodes a payload (`data_length` bytes read from `data_offset`) into a path.
    /// Returns `None` for codes that carry no usable path or payloads that do not decode.
    pub fn decode_path(&self, payload: &[u8]) -> Option<LocatorPath> {
        let raw = match self.code {
            PlatformCode::W2ku | PlatformCode::W2ru => decode_utf16_path(payload)?,
            PlatformCode::Wi2k | PlatformCode::Wi2r => {
                let end = payload
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(payload.len());
                match std::str::from_utf8(&payload[..end]) {
                    Ok(s) => s.to_owned(),
                    Err(_) => payload[..end].iter().map(|&b| b as char).collect(),
                }
            }
            PlatformCode::MacX => {
                let end = payload
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(payload.len());
                String::from_utf8(payload[..end].to_vec()).ok()?
            }
            PlatformCode::Mac => alias_file_name(payload)?,
            _ => return None,
        };
        let raw = raw.trim_end_matches('\0').to_owned();
        if raw.is_empty() {
            return None;
        }
        let (path, relative) = match self.code {
            PlatformCode::MacX => {
                let (p, rel) = parse_file_url(&raw)?;
                (p, rel)
            }
            // The file name of an alias record, beside the child (a name, no folders).
            PlatformCode::Mac if !raw.contains(['/', '\\', ':']) => (raw.clone(), true),
            PlatformCode::Mac => return None,
            code => {
                // Native: `C:\VMs\base.vhd` on Windows, `/VMs/base.vhd` elsewhere.
                let p = vhdkit_platform::path_from_windows(&raw);
                let relative = code.is_relative() && !std::path::Path::new(&p).has_root();
                (p, relative)
            }
        };
        Some(LocatorPath {
            code: self.code,
            path,
            raw,
            relative,
        })
    }
}

/// The target's file name in a classic Mac OS alias record (`Mac ` locators of Virtual
/// PC for Mac): a Pascal string (length byte, then up to 63 bytes of Mac Roman) at
/// offset 50, after the record's type, size, version, kind, volume name, volume date,
/// signature, type and parent folder id. Bytes above 0x7F are taken as Latin-1.
fn alias_file_name(payload: &[u8]) -> Option<String> {
    let len = usize::from(*payload.get(50)?);
    let name = payload
        .get(51..51 + len)
        .filter(|_| (1..=63).contains(&len))?;
    Some(name.iter().map(|&b| b as char).collect())
}

/// Decodes a UTF-16 path: little-endian as every real writer stores it, big-endian when
/// a byte-order mark says so or little-endian yields nonsense.
pub fn decode_utf16_path(payload: &[u8]) -> Option<String> {
    let units_le: Vec<u16> = payload
        .chunks_exact(2)
        .map(LittleEndian::read_u16)
        .collect();
    let units_be: Vec<u16> = payload.chunks_exact(2).map(BigEndian::read_u16).collect();
    let take = |units: &[u16]| -> Option<String> {
        let units = match units.first() {
            Some(0xFEFF) => &units[1..],
            _ => units,
        };
        let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
        String::from_utf16(&units[..end]).ok()
    };
    if units_le.first() == Some(&0xFFFE) {
        return take(&units_be);
    }
    let plausible = |s: &String| !s.is_empty() && s.chars().all(|c| !c.is_control());
    match take(&units_le) {
        Some(s) if plausible(&s) => Some(s),
        other => take(&units_be).filter(plausible).or(other),
    }
}

/// Turns a Windows path into a Unix-style one: `\` → `/`, a leading `X:` dropped.
pub fn windows_to_unix(p: &str) -> String {
    let mut s = p.replace('\\', "/");
    let bytes = s.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        s = s[2..].to_owned();
    }
    s
}

/// Parses a `MacX` file URL: `file://localhost/abs`, `file:///abs`, or blktap's
/// `file://relative`. Returns the path and whether it is relative.
fn parse_file_url(url: &str) -> Option<(String, bool)> {
    let rest = url.strip_prefix("file://")?;
    let (path, relative) = if let Some(p) = rest.strip_prefix("localhost/") {
        (format!("/{p}"), false)
    } else if rest.starts_with('/') {
        (rest.to_owned(), false)
    } else {
        (rest.to_owned(), true)
    };
    Some((percent_decode(&path), relative))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes a path as a UTF-16LE locator payload.
pub fn encode_utf16le(path: &str) -> Vec<u8> {
    path.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locator_entry_round_trips_through_bytes() {
        let l = ParentLocator {
            code: PlatformCode::W2ru,
            data_space: 1024,
            data_length: 32,
            reserved: 0,
            data_offset: 0x1000,
        };
        assert_eq!(ParentLocator::decode(&l.encode()).expect("len"), l);
    }

    #[test]
    fn w2ru_payload_decodes_as_relative_utf16le() {
        let l = ParentLocator {
            code: PlatformCode::W2ru,
            ..ParentLocator::EMPTY
        };
        let p = l
            .decode_path(&encode_utf16le(".\\fat-parent.vhd"))
            .expect("path");
        let native = if cfg!(windows) {
            ".\\fat-parent.vhd"
        } else {
            "./fat-parent.vhd"
        };
        assert_eq!(p.path, native);
        assert!(p.relative);
    }

    #[test]
    fn w2ku_payload_is_a_native_absolute_path() {
        let l = ParentLocator {
            code: PlatformCode::W2ku,
            ..ParentLocator::EMPTY
        };
        let p = l
            .decode_path(&encode_utf16le("C:\\Projects\\dfvfs\\fat-parent.vhd"))
            .expect("path");
        // On Windows as Windows wrote it; elsewhere without the drive letter.
        let native = if cfg!(windows) {
            "C:\\Projects\\dfvfs\\fat-parent.vhd"
        } else {
            "/Projects/dfvfs/fat-parent.vhd"
        };
        assert_eq!(p.path, native);
        assert!(!p.relative);
    }

    #[test]
    fn mac_alias_record_gives_the_parent_file_name_beside_the_child() {
        let l = ParentLocator {
            code: PlatformCode::Mac,
            ..ParentLocator::EMPTY
        };
        // An alias record: type, size, version 2, kind, volume name "Macintosh HD",
        // dates and ids, then the file name as a Pascal string at offset 50.
        let mut alias = vec![0u8; 150];
        alias[4..6].copy_from_slice(&150u16.to_be_bytes());
        alias[6..8].copy_from_slice(&2u16.to_be_bytes());
        alias[10] = 12;
        alias[11..23].copy_from_slice(b"Macintosh HD");
        alias[50] = 13;
        alias[51..64].copy_from_slice(b"Base Disk.vhd");
        let p = l.decode_path(&alias).expect("a name");
        assert_eq!((p.path.as_str(), p.relative), ("Base Disk.vhd", true));
        // No name, a name that is a path, a record cut short: nothing.
        alias[50] = 0;
        assert!(l.decode_path(&alias).is_none());
        alias[50] = 5;
        alias[51..56].copy_from_slice(b"a:b/c");
        assert!(l.decode_path(&alias).is_none());
        assert!(l.decode_path(&alias[..40]).is_none());
    }

    #[test]
    fn macx_urls_of_every_known_form_decode() {
        let l = ParentLocator {
            code: PlatformCode::MacX,
            ..ParentLocator::EMPTY
        };
        let abs = l.decode_path(b"file://localhost/dir/a%20b.vhd").expect("p");
        assert_eq!((abs.path.as_str(), abs.relative), ("/dir/a b.vhd", false));
        let abs2 = l.decode_path(b"file:///dir/p.vhd").expect("p");
        assert_eq!((abs2.path.as_str(), abs2.relative), ("/dir/p.vhd", false));
        let rel = l.decode_path(b"file://./p.vhd\0\0").expect("p");
        assert_eq!((rel.path.as_str(), rel.relative), ("./p.vhd", true));
    }

    #[test]
    fn data_space_below_512_counts_sectors() {
        let mut l = ParentLocator {
            code: PlatformCode::W2ku,
            data_space: 2,
            ..ParentLocator::EMPTY
        };
        assert_eq!(l.data_space_bytes(), 1024);
        l.data_space = 4096;
        assert_eq!(l.data_space_bytes(), 4096);
    }

    #[test]
    fn garbage_payload_decodes_to_none_or_text_without_panic() {
        let l = ParentLocator {
            code: PlatformCode::W2ku,
            ..ParentLocator::EMPTY
        };
        for payload in [&[][..], &[0xff], &[0xd8, 0x00, 0x00, 0xd8], &[0, 0, 0, 0]] {
            let _ = l.decode_path(payload);
        }
    }

    #[test]
    fn unused_slot_with_data_is_flagged() {
        let l = ParentLocator {
            data_offset: 5,
            ..ParentLocator::EMPTY
        };
        assert_eq!(l.validate(3, None).len(), 1);
    }
}
