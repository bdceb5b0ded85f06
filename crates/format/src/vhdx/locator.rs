//! The parent locator metadata item of a differencing file (MS-VHDX 2.6.2.6): a type
//! GUID and key-value pairs, keys and values UTF-16LE without terminator. The VHDX
//! locator type knows `parent_linkage` (the parent's data write GUID, as text),
//! `parent_linkage2`, `relative_path`, `volume_path` and `absolute_win32_path`.

use byteorder::{ByteOrder, LittleEndian};
use uuid::Uuid;

use super::error::{need, Structure, VhdxError};
use super::{guid_at, put_guid, put_u16, put_u32, u16_at, u32_at};

/// The locator type of a VHDX parent: the only one defined.
pub const LOCATOR_TYPE_VHDX: Uuid = Uuid::from_u128(0xb04aefb7_d19e_4a81_b789_25b8e9445913);
/// Bytes of the locator header: type GUID, reserved, key-value count.
pub const LOCATOR_HEADER_SIZE: usize = 20;
/// Offset of the key-value count in the header.
pub const LOCATOR_COUNT_OFFSET: usize = 18;
/// Bytes of one key-value entry: key offset, value offset, key length, value length.
pub const LOCATOR_ENTRY_SIZE: usize = 12;
/// Key: the parent's data write GUID, `{…}`, which the child must match.
pub const KEY_PARENT_LINKAGE: &str = "parent_linkage";
/// Key: a second accepted linkage GUID (the parent's previous data write GUID).
pub const KEY_PARENT_LINKAGE2: &str = "parent_linkage2";
/// Key: the parent's path relative to the child's folder.
pub const KEY_RELATIVE_PATH: &str = "relative_path";
/// Key: the parent's path through its volume GUID (`\\?\Volume{…}\…`).
pub const KEY_VOLUME_PATH: &str = "volume_path";
/// Key: the parent's absolute Win32 path.
pub const KEY_ABSOLUTE_WIN32_PATH: &str = "absolute_win32_path";

/// One key-value entry as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLocatorEntry {
    /// Offset of the key from the item's start.
    pub key_offset: u32,
    /// Offset of the value from the item's start.
    pub value_offset: u32,
    /// Bytes of the key.
    pub key_length: u16,
    /// Bytes of the value.
    pub value_length: u16,
}

/// The parent locator as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawParentLocator {
    /// The locator type.
    pub locator_type: Uuid,
    /// The key-value count as stored.
    pub count: u16,
    /// The entries.
    pub entries: Vec<RawLocatorEntry>,
}

/// A valid parent locator: its key-value pairs in stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentLocator {
    /// The pairs, keys distinct.
    pub entries: Vec<(String, String)>,
}

impl RawParentLocator {
    /// Decodes the header and entries of the item `bytes`; fails only when the item is
    /// too short for the count it claims. `at` is the item's file offset.
    pub fn decode(bytes: &[u8], at: u64) -> Result<RawParentLocator, VhdxError> {
        need(bytes, LOCATOR_HEADER_SIZE, Structure::ParentLocator, at)?;
        let count = u16_at(bytes, LOCATOR_COUNT_OFFSET);
        need(
            bytes,
            LOCATOR_HEADER_SIZE + usize::from(count) * LOCATOR_ENTRY_SIZE,
            Structure::ParentLocator,
            at,
        )?;
        let entries = (0..usize::from(count))
            .map(|i| {
                let e = LOCATOR_HEADER_SIZE + i * LOCATOR_ENTRY_SIZE;
                RawLocatorEntry {
                    key_offset: u32_at(bytes, e),
                    value_offset: u32_at(bytes, e + 4),
                    key_length: u16_at(bytes, e + 8),
                    value_length: u16_at(bytes, e + 10),
                }
            })
            .collect();
        Ok(RawParentLocator {
            locator_type: guid_at(bytes, 0),
            count,
            entries,
        })
    }

    /// The valid locator from the item `bytes` at file offset `at`: known type, every
    /// string inside the item and well-formed UTF-16LE, keys distinct, a
    /// `parent_linkage` that is a GUID.
    pub fn validate(&self, bytes: &[u8], at: u64) -> Result<ParentLocator, VhdxError> {
        let s = Structure::ParentLocator;
        if self.locator_type != LOCATOR_TYPE_VHDX {
            return Err(VhdxError::field(
                s,
                at,
                "locator type",
                self.locator_type,
                LOCATOR_TYPE_VHDX.to_string(),
            ));
        }
        let table_end = LOCATOR_HEADER_SIZE + self.entries.len() * LOCATOR_ENTRY_SIZE;
        let string = |off: u32, len: u16, i: usize, what: &'static str| {
            let eat = at + (LOCATOR_HEADER_SIZE + i * LOCATOR_ENTRY_SIZE) as u64;
            let start = off as usize;
            let end = start + usize::from(len);
            if len == 0 || !len.is_multiple_of(2) || start < table_end || end > bytes.len() {
                return Err(VhdxError::field(
                    s,
                    eat,
                    what,
                    format_args!("{len} bytes at {off:#x}"),
                    format!(
                        "a non-empty even length inside the item, past its entries ({table_end:#x}..{:#x})",
                        bytes.len()
                    ),
                ));
            }
            let units: Vec<u16> = bytes[start..end]
                .chunks_exact(2)
                .map(LittleEndian::read_u16)
                .collect();
            String::from_utf16(&units).map_err(|_| {
                VhdxError::field(
                    s,
                    at + u64::from(off),
                    what,
                    "ill-formed UTF-16",
                    "UTF-16LE",
                )
            })
        };
        let mut entries: Vec<(String, String)> = Vec::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            let key = string(e.key_offset, e.key_length, i, "key")?;
            let value = string(e.value_offset, e.value_length, i, "value")?;
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(VhdxError::field(s, at, "key", key, "each key once"));
            }
            entries.push((key, value));
        }
        let l = ParentLocator { entries };
        match l.get(KEY_PARENT_LINKAGE) {
            None => {
                return Err(VhdxError::Missing {
                    structure: s,
                    offset: at,
                    what: "parent_linkage",
                })
            }
            Some(v) if parse_guid(v).is_none() => {
                return Err(VhdxError::field(s, at, "parent_linkage", v, "a GUID"))
            }
            Some(_) => {}
        }
        Ok(l)
    }
}

/// A GUID written as text, with or without braces.
fn parse_guid(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s.trim()).ok()
}

impl ParentLocator {
    /// A locator for a parent whose data write GUID is `linkage`, with the paths given.
    pub fn new(
        linkage: Uuid,
        relative_path: Option<&str>,
        volume_path: Option<&str>,
        absolute_win32_path: Option<&str>,
    ) -> ParentLocator {
        let mut entries = vec![(KEY_PARENT_LINKAGE.to_string(), format!("{{{linkage}}}"))];
        for (k, v) in [
            (KEY_RELATIVE_PATH, relative_path),
            (KEY_VOLUME_PATH, volume_path),
            (KEY_ABSOLUTE_WIN32_PATH, absolute_win32_path),
        ] {
            if let Some(v) = v {
                entries.push((k.to_string(), v.to_string()));
            }
        }
        ParentLocator { entries }
    }

    /// Decodes and validates the item `bytes` found at file offset `at`.
    pub fn decode(bytes: &[u8], at: u64) -> Result<ParentLocator, VhdxError> {
        RawParentLocator::decode(bytes, at)?.validate(bytes, at)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The parent's data write GUID the child was made against.
    pub fn parent_linkage(&self) -> Option<Uuid> {
        self.get(KEY_PARENT_LINKAGE).and_then(parse_guid)
    }

    /// The second accepted linkage GUID, if any.
    pub fn parent_linkage2(&self) -> Option<Uuid> {
        self.get(KEY_PARENT_LINKAGE2).and_then(parse_guid)
    }

    /// The parent's path relative to the child.
    pub fn relative_path(&self) -> Option<&str> {
        self.get(KEY_RELATIVE_PATH)
    }

    /// The parent's volume path.
    pub fn volume_path(&self) -> Option<&str> {
        self.get(KEY_VOLUME_PATH)
    }

    /// The parent's absolute Win32 path.
    pub fn absolute_win32_path(&self) -> Option<&str> {
        self.get(KEY_ABSOLUTE_WIN32_PATH)
    }

    /// The item: header, entries, then each key and value in order.
    pub fn encode(&self) -> Vec<u8> {
        let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
        let strings: Vec<(Vec<u8>, Vec<u8>)> = self
            .entries
            .iter()
            .map(|(k, v)| (utf16(k), utf16(v)))
            .collect();
        let mut b = vec![0u8; LOCATOR_HEADER_SIZE + strings.len() * LOCATOR_ENTRY_SIZE];
        put_guid(&mut b, 0, &LOCATOR_TYPE_VHDX);
        put_u16(&mut b, LOCATOR_COUNT_OFFSET, strings.len() as u16);
        for (i, (k, v)) in strings.iter().enumerate() {
            let e = LOCATOR_HEADER_SIZE + i * LOCATOR_ENTRY_SIZE;
            let ko = b.len();
            b.extend_from_slice(k);
            let vo = b.len();
            b.extend_from_slice(v);
            put_u32(&mut b, e, ko as u32);
            put_u32(&mut b, e + 4, vo as u32);
            put_u16(&mut b, e + 8, k.len() as u16);
            put_u16(&mut b, e + 10, v.len() as u16);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ParentLocator {
        ParentLocator::new(
            Uuid::from_u128(0xabcdef),
            Some(r"..\base.vhdx"),
            Some(r"\\?\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\vms\base.vhdx"),
            Some(r"C:\vms\base.vhdx"),
        )
    }

    #[test]
    fn locator_round_trips_with_every_key() {
        let l = sample();
        let back = ParentLocator::decode(&l.encode(), 0).unwrap();
        assert_eq!(back, l);
        assert_eq!(back.parent_linkage(), Some(Uuid::from_u128(0xabcdef)));
        assert_eq!(back.relative_path(), Some(r"..\base.vhdx"));
        assert!(back.volume_path().unwrap().starts_with(r"\\?\Volume{"));
        assert_eq!(back.absolute_win32_path(), Some(r"C:\vms\base.vhdx"));
        assert_eq!(back.parent_linkage2(), None);
    }

    #[test]
    fn linkage_is_written_braced_and_read_in_any_case() {
        let l = sample();
        assert_eq!(
            l.get(KEY_PARENT_LINKAGE),
            Some("{00000000-0000-0000-0000-000000abcdef}")
        );
        let upper = ParentLocator {
            entries: vec![
                (
                    KEY_PARENT_LINKAGE.into(),
                    "{00000000-0000-0000-0000-000000ABCDEF}".into(),
                ),
                (
                    KEY_PARENT_LINKAGE2.into(),
                    "00000000-0000-0000-0000-000000000001".into(),
                ),
            ],
        };
        let back = ParentLocator::decode(&upper.encode(), 0).unwrap();
        assert_eq!(back.parent_linkage(), Some(Uuid::from_u128(0xabcdef)));
        assert_eq!(back.parent_linkage2(), Some(Uuid::from_u128(1)));
    }

    #[test]
    fn locator_without_linkage_is_refused() {
        let l = ParentLocator {
            entries: vec![(KEY_RELATIVE_PATH.into(), "base.vhdx".into())],
        };
        let err = ParentLocator::decode(&l.encode(), 0x300000).unwrap_err();
        assert!(
            matches!(
                err,
                VhdxError::Missing {
                    offset: 0x300000,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn string_outside_the_item_is_refused() {
        let mut b = sample().encode();
        put_u32(&mut b, LOCATOR_HEADER_SIZE + 4, 0xffff_0000);
        let err = ParentLocator::decode(&b, 0).unwrap_err();
        assert!(
            matches!(err, VhdxError::Field { field: "value", .. }),
            "{err}"
        );
    }

    #[test]
    fn odd_length_string_is_refused() {
        let mut b = sample().encode();
        put_u16(&mut b, LOCATOR_HEADER_SIZE + 8, 3);
        assert!(ParentLocator::decode(&b, 0).is_err());
    }

    #[test]
    fn unpaired_surrogate_is_refused() {
        let mut b = sample().encode();
        let ko = u32_at(&b, LOCATOR_HEADER_SIZE) as usize;
        b[ko..ko + 2].copy_from_slice(&0xd800u16.to_le_bytes());
        let err = ParentLocator::decode(&b, 0).unwrap_err();
        assert!(err.to_string().contains("UTF-16"), "{err}");
    }

    #[test]
    fn duplicate_key_is_refused() {
        let mut l = sample();
        l.entries.push((KEY_RELATIVE_PATH.into(), "other".into()));
        assert!(ParentLocator::decode(&l.encode(), 0).is_err());
    }

    #[test]
    fn count_larger_than_item_is_truncated() {
        let mut b = sample().encode();
        put_u16(&mut b, LOCATOR_COUNT_OFFSET, u16::MAX);
        let err = RawParentLocator::decode(&b, 0).unwrap_err();
        assert!(matches!(err, VhdxError::Truncated { .. }));
    }

    #[test]
    fn unknown_locator_type_is_refused() {
        let mut b = sample().encode();
        b[0] ^= 1;
        assert!(matches!(
            ParentLocator::decode(&b, 0).unwrap_err(),
            VhdxError::Field {
                field: "locator type",
                ..
            }
        ));
    }
}
