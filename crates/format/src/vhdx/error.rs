//! The one error type of the VHDX format layer: which structure, at which file offset,
//! what was found and what was expected.

use std::fmt;

use uuid::Uuid;

/// The on-disk structure a [`VhdxError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Structure {
    /// The file type identifier at offset 0.
    FileIdentifier,
    /// Header 1 (at 64 KiB) or 2 (at 128 KiB).
    Header(u8),
    /// Neither header: choosing the current one.
    Headers,
    /// Region table 1 (at 192 KiB) or 2 (at 256 KiB).
    RegionTable(u8),
    /// The metadata table at the start of the metadata region.
    MetadataTable,
    /// A metadata item, named.
    MetadataItem(&'static str),
    /// The parent locator metadata item.
    ParentLocator,
    /// The block allocation table.
    Bat,
    /// The log as a whole (its place in the file, the active sequence).
    Log,
    /// One log entry's header.
    LogEntry,
    /// A descriptor of a log entry.
    LogDescriptor,
    /// A data sector of a log entry.
    LogDataSector,
    /// A write the log asks for.
    LogWrite,
    /// The layout of the file's regions (overlaps, bounds).
    Layout,
}

impl Structure {
    /// The structure's name, as `check` and the container's errors print it.
    pub fn name(self) -> &'static str {
        match self {
            Structure::FileIdentifier => "VHDX file identifier",
            Structure::Header(1) => "VHDX header 1",
            Structure::Header(_) => "VHDX header 2",
            Structure::Headers => "VHDX headers",
            Structure::RegionTable(1) => "VHDX region table 1",
            Structure::RegionTable(_) => "VHDX region table 2",
            Structure::MetadataTable => "VHDX metadata table",
            Structure::MetadataItem(name) => name,
            Structure::ParentLocator => "VHDX parent locator",
            Structure::Bat => "VHDX BAT",
            Structure::Log => "VHDX log",
            Structure::LogEntry => "VHDX log entry",
            Structure::LogDescriptor => "VHDX log descriptor",
            Structure::LogDataSector => "VHDX log data sector",
            Structure::LogWrite => "VHDX log write",
            Structure::Layout => "VHDX layout",
        }
    }
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something wrong with a VHDX structure. Every variant names the structure and the
/// absolute file offset of the structure or field (offsets inside the log are file
/// offsets too: the log's place plus the position in it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VhdxError {
    /// Fewer bytes than the structure needs (a short file or slice).
    #[error("{structure} at offset {offset:#x}: needs {expected} bytes, {found} available")]
    Truncated {
        /// The structure.
        structure: Structure,
        /// Where it starts.
        offset: u64,
        /// Bytes needed.
        expected: u64,
        /// Bytes there.
        found: u64,
    },
    /// A signature (magic) is wrong.
    #[error("{structure} at offset {offset:#x}: signature {found:?}, expected {expected:?}")]
    Signature {
        /// The structure.
        structure: Structure,
        /// Where it starts.
        offset: u64,
        /// The bytes found, printable characters as is.
        found: String,
        /// The signature the format asks for.
        expected: &'static str,
    },
    /// A CRC-32C does not match.
    #[error("{structure} at offset {offset:#x}: CRC-32C stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The structure.
        structure: Structure,
        /// Where it starts.
        offset: u64,
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the content.
        computed: u32,
    },
    /// A field holds a value the format does not allow.
    #[error("{structure} at offset {offset:#x}: {field} is {found}, expected {expected}")]
    Field {
        /// The structure.
        structure: Structure,
        /// Offset of the field.
        offset: u64,
        /// The field's name.
        field: &'static str,
        /// The value found.
        found: String,
        /// What the format allows.
        expected: String,
    },
    /// A region or metadata item marked required that this implementation does not
    /// know: the specification forbids opening the file.
    #[error("{structure} at offset {offset:#x}: unknown required {what} {guid}")]
    UnknownRequired {
        /// The table holding the entry.
        structure: Structure,
        /// Offset of the entry.
        offset: u64,
        /// `region` or `metadata item`.
        what: &'static str,
        /// The entry's GUID.
        guid: Uuid,
    },
    /// Something the format requires is absent.
    #[error("{structure} at offset {offset:#x}: no {what}")]
    Missing {
        /// The structure that should hold it.
        structure: Structure,
        /// Offset of that structure.
        offset: u64,
        /// What is missing.
        what: &'static str,
    },
    /// Two byte ranges that must be apart overlap, or a range lies where it must not.
    #[error("{structure} at offset {offset:#x}: {detail}")]
    Placement {
        /// The structure placed wrongly.
        structure: Structure,
        /// Where it starts.
        offset: u64,
        /// What it overlaps or exceeds.
        detail: String,
    },
    /// Both headers are unusable.
    #[error("no valid VHDX header: header 1: {first}; header 2: {second}")]
    NoHeader {
        /// Why header 1 is unusable.
        first: Box<VhdxError>,
        /// Why header 2 is unusable.
        second: Box<VhdxError>,
    },
    /// Both region tables are unusable.
    #[error("no valid VHDX region table: table 1: {first}; table 2: {second}")]
    NoRegionTable {
        /// Why table 1 is unusable.
        first: Box<VhdxError>,
        /// Why table 2 is unusable.
        second: Box<VhdxError>,
    },
}

impl VhdxError {
    /// The structure the error is about.
    pub fn structure(&self) -> Structure {
        match self {
            VhdxError::Truncated { structure, .. }
            | VhdxError::Signature { structure, .. }
            | VhdxError::Checksum { structure, .. }
            | VhdxError::Field { structure, .. }
            | VhdxError::UnknownRequired { structure, .. }
            | VhdxError::Missing { structure, .. }
            | VhdxError::Placement { structure, .. } => *structure,
            VhdxError::NoHeader { .. } => Structure::Headers,
            VhdxError::NoRegionTable { first, .. } => first.structure(),
        }
    }

    /// The absolute file offset the error is about.
    pub fn offset(&self) -> u64 {
        match self {
            VhdxError::Truncated { offset, .. }
            | VhdxError::Signature { offset, .. }
            | VhdxError::Checksum { offset, .. }
            | VhdxError::Field { offset, .. }
            | VhdxError::UnknownRequired { offset, .. }
            | VhdxError::Missing { offset, .. }
            | VhdxError::Placement { offset, .. } => *offset,
            VhdxError::NoHeader { first, .. } | VhdxError::NoRegionTable { first, .. } => {
                first.offset()
            }
        }
    }

    pub(crate) fn field(
        structure: Structure,
        offset: u64,
        field: &'static str,
        found: impl fmt::Display,
        expected: impl Into<String>,
    ) -> VhdxError {
        VhdxError::Field {
            structure,
            offset,
            field,
            found: found.to_string(),
            expected: expected.into(),
        }
    }

    pub(crate) fn placement(
        structure: Structure,
        offset: u64,
        detail: impl Into<String>,
    ) -> VhdxError {
        VhdxError::Placement {
            structure,
            offset,
            detail: detail.into(),
        }
    }

    pub(crate) fn signature(
        structure: Structure,
        offset: u64,
        found: &[u8],
        expected: &'static str,
    ) -> VhdxError {
        VhdxError::Signature {
            structure,
            offset,
            found: printable(found),
            expected,
        }
    }
}

/// Printable ASCII as is, anything else as `\xNN`.
fn printable(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if (0x20..0x7f).contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// Checks that `bytes` holds at least `need` bytes for `structure` at `offset`.
pub(crate) fn need(
    bytes: &[u8],
    need: usize,
    structure: Structure,
    offset: u64,
) -> Result<(), VhdxError> {
    if bytes.len() < need {
        return Err(VhdxError::Truncated {
            structure,
            offset,
            expected: need as u64,
            found: bytes.len() as u64,
        });
    }
    Ok(())
}

/// The first problem of a list, or `Ok(())`.
pub(crate) fn first(problems: Vec<VhdxError>) -> Result<(), VhdxError> {
    match problems.into_iter().next() {
        Some(p) => Err(p),
        None => Ok(()),
    }
}
