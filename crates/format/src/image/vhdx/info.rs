//! What `info` shows of a VHDX file beyond the footer made up for it: the container's
//! own facts, as one plain value.

use serde::Serialize;

use super::Vhdx;

/// A VHDX file's own facts ([`crate::VhdFile::vhdx_info`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VhdxInfo {
    /// The creator string of the file type identifier (e.g. `QEMU v10.0.0`).
    pub creator: String,
    /// Payload block size in bytes.
    pub block_size: u64,
    /// Logical sector size: 512 or 4096.
    pub logical_sector_size: u32,
    /// Physical sector size: 512 or 4096.
    pub physical_sector_size: u32,
    /// The leave-blocks-allocated flag (a fixed file).
    pub leave_blocks_allocated: bool,
    /// The has-parent flag (a differencing file).
    pub has_parent: bool,
    /// Payload blocks covering the disk.
    pub blocks: u64,
    /// Payload blocks stored in the file (fully or partially present).
    pub allocated_blocks: u64,
    /// The current header's sequence number.
    pub header_sequence: u64,
    /// Which header slot is current: 1 or 2.
    pub header_slot: u8,
    /// The file write GUID.
    pub file_write_guid: String,
    /// The data write GUID (what a child's `parent_linkage` names).
    pub data_write_guid: String,
    /// The page 83 identifier.
    pub page83: String,
    /// The log: `clean` (no log GUID), `empty` (a log GUID, nothing to replay),
    /// `replayed-in-memory` (a read-only open), `replayed-on-disk` (a writable open).
    pub log: &'static str,
    /// The log's offset and length in the file.
    pub log_offset: u64,
    /// The log's length.
    pub log_length: u32,
    /// Entries of the log's active sequence that were replayed (0 when clean).
    pub log_entries_replayed: usize,
    /// Whether the two region tables are identical.
    pub region_tables_agree: bool,
    /// The parent locator's key-value pairs (differencing files), in file order.
    pub parent_locator: Vec<LocatorEntry>,
}

/// One key-value pair of a parent locator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocatorEntry {
    /// The key (`parent_linkage`, `relative_path`, …).
    pub key: String,
    /// The value.
    pub value: String,
}

impl Vhdx {
    /// The facts `info` shows.
    pub(crate) fn info(&self) -> VhdxInfo {
        use super::LogState;
        let h = &self.header.header;
        let p = &self.metadata.file_parameters;
        let replayed = match self.log {
            LogState::ReplayedInMemory { entries, .. }
            | LogState::ReplayedOnDisk { entries, .. } => entries,
            _ => 0,
        };
        VhdxInfo {
            creator: self.ident.creator.clone(),
            block_size: self.block_size(),
            logical_sector_size: self.metadata.logical_sector_size,
            physical_sector_size: self.metadata.physical_sector_size,
            leave_blocks_allocated: p.leave_blocks_allocated,
            has_parent: p.has_parent,
            blocks: self.bat().geometry.data_blocks,
            allocated_blocks: self.allocated().len() as u64,
            header_sequence: h.sequence_number,
            header_slot: match self.header.slot {
                crate::vhdx::HeaderSlot::First => 1,
                crate::vhdx::HeaderSlot::Second => 2,
            },
            file_write_guid: h.file_write_guid.to_string(),
            data_write_guid: h.data_write_guid.to_string(),
            page83: self.metadata.page83.to_string(),
            log: self.log.name(),
            log_offset: h.log_offset,
            log_length: h.log_length,
            log_entries_replayed: replayed,
            region_tables_agree: self.regions_agree,
            parent_locator: self
                .parent_locator()
                .map(|l| {
                    l.entries
                        .iter()
                        .map(|(key, value)| LocatorEntry {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}
