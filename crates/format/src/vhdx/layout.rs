//! Where everything of a VHDX file lies, in one place.
//!
//! - [`FileAreas`]: the areas of an existing file that hold metadata — the header
//!   section (first MiB), the log, the BAT and metadata regions and any other region —
//!   and the file's length. The BAT validation, the log replay and (later) the
//!   container's block allocator all ask it.
//! - [`NewVhdx`] → [`VhdxLayout`]: the layout vhdkit gives a new file. Header section
//!   as the specification fixes it (identifier at 0, headers at 64 KiB and 128 KiB,
//!   region tables at 192 KiB and 256 KiB), then, each on a 1 MiB boundary:
//!
//!   | what | where | length |
//!   |---|---|---|
//!   | log | 1 MiB | 1 MiB (Hyper-V's and qemu-img's default) |
//!   | metadata region | after the log | 1 MiB: table and items |
//!   | BAT region | after the metadata | the table rounded up to 1 MiB |
//!   | payload | after the BAT | blocks, 1 MiB aligned (fixed: all of them, in order) |
//!
//!   qemu-img puts the BAT before the metadata region; vhdkit puts it last so that the
//!   table can grow in place while no block follows it. Both are valid: readers go by
//!   the region table.

use uuid::Uuid;

use super::bat::{Bat, BatEntry, BatGeometry, PayloadState, SECTOR_BITMAP_BLOCK_SIZE};
use super::error::{Structure, VhdxError};
use super::header::{Header, DEFAULT_LOG_LENGTH, HEADER_1_OFFSET, HEADER_2_OFFSET};
use super::ident::{FileIdentifier, IDENT_OFFSET};
use super::locator::ParentLocator;
use super::metadata::{FileParameters, Metadata, DEFAULT_BLOCK_SIZE};
use super::region::{Region, RegionTable, REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET};
use super::{round_up, HEADER_SECTION_SIZE, MIB};

/// Bytes of the metadata region vhdkit creates (the table plus items fit easily).
pub const METADATA_REGION_LENGTH: u32 = MIB as u32;
/// Hyper-V's default logical sector size.
pub const DEFAULT_LOGICAL_SECTOR_SIZE: u32 = 512;
/// Hyper-V's default physical sector size for new VHDX files (qemu-img writes 512).
pub const DEFAULT_PHYSICAL_SECTOR_SIZE: u32 = 4096;

/// The metadata areas of an existing file and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAreas {
    /// The file's length.
    pub file_len: u64,
    /// The log, `[start, end)` (empty when the log length is 0).
    pub log: (u64, u64),
    /// Every region `[start, end)` with its name.
    pub regions: Vec<(u64, u64, &'static str)>,
}

impl FileAreas {
    /// The areas named by the current header and region table of a file of `file_len`
    /// bytes. Refuses a log or region past the end of the file, or two that overlap.
    pub fn new(
        header: &Header,
        table: &RegionTable,
        file_len: u64,
    ) -> Result<FileAreas, VhdxError> {
        let log = (
            header.log_offset,
            header
                .log_offset
                .saturating_add(u64::from(header.log_length)),
        );
        let mut regions = vec![
            (table.bat.offset, table.bat.end(), "BAT region"),
            (
                table.metadata.offset,
                table.metadata.end(),
                "metadata region",
            ),
        ];
        regions.extend(
            table
                .optional
                .iter()
                .map(|(_, r)| (r.offset, r.end(), "optional region")),
        );
        let areas = FileAreas {
            file_len,
            log,
            regions,
        };
        let mut all: Vec<(u64, u64, &'static str)> = areas.regions.clone();
        if log.1 > log.0 {
            all.push((log.0, log.1, "log"));
        }
        for (i, &(s, e, name)) in all.iter().enumerate() {
            if e > file_len {
                return Err(VhdxError::placement(
                    Structure::Layout,
                    s,
                    format!(
                        "the {name} ({s:#x}..{e:#x}) ends past the end of the file ({file_len:#x})"
                    ),
                ));
            }
            if let Some(&(os, oe, other)) = all[..i].iter().find(|&&(os, oe, _)| s < oe && os < e) {
                return Err(VhdxError::placement(
                    Structure::Layout,
                    s,
                    format!("the {name} ({s:#x}..{e:#x}) overlaps the {other} ({os:#x}..{oe:#x})"),
                ));
            }
        }
        Ok(areas)
    }

    /// The metadata area `[start, end)` overlaps, if any: header section, log, region.
    pub fn metadata_overlap(&self, start: u64, end: u64) -> Option<&'static str> {
        if start < HEADER_SECTION_SIZE {
            return Some("header section");
        }
        if start < self.log.1 && self.log.0 < end {
            return Some("log");
        }
        self.regions
            .iter()
            .find(|&&(s, e, _)| start < e && s < end)
            .map(|&(_, _, name)| name)
    }

    /// The first byte past every metadata area: where blocks may start.
    pub fn metadata_end(&self) -> u64 {
        self.regions
            .iter()
            .map(|r| r.1)
            .chain([self.log.1, HEADER_SECTION_SIZE])
            .max()
            .unwrap_or(HEADER_SECTION_SIZE)
    }
}

/// The kind of disk a new file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskType {
    /// Every block allocated at creation, in order; `leave_blocks_allocated` set.
    Fixed,
    /// Blocks allocated on first write.
    Dynamic,
    /// Blocks allocated on first write; the rest read from a parent.
    Differencing,
}

/// What a new file should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVhdx {
    /// Fixed, dynamic or differencing.
    pub disk_type: DiskType,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Payload block size (default 32 MiB, Hyper-V's).
    pub block_size: u32,
    /// Logical sector size, 512 (default) or 4096.
    pub logical_sector_size: u32,
    /// Physical sector size, 4096 (default, Hyper-V's) or 512.
    pub physical_sector_size: u32,
    /// Log length (default 1 MiB).
    pub log_length: u32,
}

impl NewVhdx {
    /// A disk of `disk_type` and `virtual_size` with Hyper-V's defaults.
    pub fn new(disk_type: DiskType, virtual_size: u64) -> NewVhdx {
        NewVhdx {
            disk_type,
            virtual_size,
            block_size: DEFAULT_BLOCK_SIZE,
            logical_sector_size: DEFAULT_LOGICAL_SECTOR_SIZE,
            physical_sector_size: DEFAULT_PHYSICAL_SECTOR_SIZE,
            log_length: DEFAULT_LOG_LENGTH,
        }
    }

    /// The layout of the file, or why these parameters cannot make one.
    pub fn layout(&self) -> Result<VhdxLayout, VhdxError> {
        let s = Structure::Layout;
        let geometry = BatGeometry::new(
            self.virtual_size,
            self.block_size,
            self.logical_sector_size,
            self.disk_type == DiskType::Differencing,
        )
        .map_err(|e| match e {
            VhdxError::Field {
                field,
                found,
                expected,
                ..
            } => VhdxError::Field {
                structure: s,
                offset: 0,
                field,
                found,
                expected,
            },
            other => other,
        })?;
        if self.physical_sector_size != 512 && self.physical_sector_size != 4096 {
            return Err(VhdxError::field(
                s,
                0,
                "physical sector size",
                self.physical_sector_size,
                "512 or 4096",
            ));
        }
        if self.log_length == 0 || !u64::from(self.log_length).is_multiple_of(MIB) {
            return Err(VhdxError::field(
                s,
                0,
                "log length",
                self.log_length,
                "a non-zero multiple of 1 MiB",
            ));
        }
        let log = Region {
            offset: HEADER_SECTION_SIZE,
            length: self.log_length,
            required: true,
        };
        let metadata = Region {
            offset: log.end(),
            length: METADATA_REGION_LENGTH,
            required: true,
        };
        let bat_len = round_up(geometry.bat_bytes(), MIB)
            .and_then(|l| u32::try_from(l).ok())
            .ok_or_else(|| {
                VhdxError::field(s, 0, "BAT length", geometry.bat_bytes(), "at most 4 GiB")
            })?;
        let bat = Region {
            offset: metadata.end(),
            length: bat_len,
            required: true,
        };
        let first_payload = bat.end();
        let file_len = match self.disk_type {
            DiskType::Fixed => first_payload + geometry.data_blocks * u64::from(self.block_size),
            DiskType::Dynamic | DiskType::Differencing => first_payload,
        };
        Ok(VhdxLayout {
            new: self.clone(),
            log,
            metadata,
            bat,
            first_payload,
            file_len,
            geometry,
        })
    }
}

/// Where the parts of a new file lie (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdxLayout {
    /// What the file is.
    pub new: NewVhdx,
    /// The log.
    pub log: Region,
    /// The metadata region.
    pub metadata: Region,
    /// The BAT region.
    pub bat: Region,
    /// Offset of the first payload block (fixed) or where new blocks start (others).
    pub first_payload: u64,
    /// Length of the new file.
    pub file_len: u64,
    /// The BAT's shape.
    pub geometry: BatGeometry,
}

impl VhdxLayout {
    /// The region table of the new file.
    pub fn region_table(&self) -> RegionTable {
        RegionTable {
            bat: self.bat,
            metadata: self.metadata,
            optional: vec![],
        }
    }

    /// The header of the new file (fresh write GUIDs, no log to replay).
    pub fn header(&self) -> Header {
        Header::new(self.log.offset, self.log.length)
    }

    /// The areas of the new file.
    pub fn areas(&self) -> FileAreas {
        FileAreas::new(&self.header(), &self.region_table(), self.file_len)
            .expect("a new layout's areas lie inside the file and apart")
    }

    /// The metadata of the new file; `parent` is the locator of a differencing file.
    pub fn metadata(&self, page83: Uuid, parent: Option<ParentLocator>) -> Metadata {
        Metadata {
            file_parameters: FileParameters {
                block_size: self.new.block_size,
                leave_blocks_allocated: self.new.disk_type == DiskType::Fixed,
                has_parent: self.new.disk_type == DiskType::Differencing,
            },
            virtual_size: self.new.virtual_size,
            page83,
            logical_sector_size: self.new.logical_sector_size,
            physical_sector_size: self.new.physical_sector_size,
            parent_locator: parent,
            other_items: vec![],
        }
    }

    /// The BAT of the new file: a fixed file's blocks fully present in order from
    /// [`first_payload`](Self::first_payload), every other block not present.
    pub fn initial_bat(&self) -> Bat {
        let mut bat = Bat::filled(self.geometry, BatEntry::default());
        if self.new.disk_type == DiskType::Fixed {
            for b in 0..self.geometry.data_blocks {
                let off = self.first_payload + b * u64::from(self.new.block_size);
                bat.set_payload(b, PayloadState::FullyPresent, off);
            }
        }
        bat
    }

    /// Everything a new file holds outside its payload, as `(offset, bytes)` writes
    /// into a file of [`file_len`](Self::file_len) zero bytes: the identifier, header 1
    /// with `header`'s sequence number and header 2 with the next (so both are valid
    /// and header 2 current), both region table copies, the metadata region and the
    /// BAT of [`initial_bat`](Self::initial_bat). Where a fixed file's payload is
    /// already zeros (a new file), nothing else is needed.
    pub fn initial_writes(&self, header: &Header, metadata: &Metadata) -> Vec<(u64, Vec<u8>)> {
        let second = Header {
            sequence_number: header.sequence_number.wrapping_add(1),
            ..*header
        };
        let table = self.region_table().encode();
        vec![
            (IDENT_OFFSET, FileIdentifier::vhdkit().encode()),
            (HEADER_1_OFFSET, header.encode().to_vec()),
            (HEADER_2_OFFSET, second.encode().to_vec()),
            (REGION_TABLE_1_OFFSET, table.clone()),
            (REGION_TABLE_2_OFFSET, table),
            (self.metadata.offset, metadata.encode()),
            (self.bat.offset, self.initial_bat().encode()),
        ]
    }

    /// Where the next new block goes in a file of `file_len` bytes: the end of the file
    /// rounded up to 1 MiB, never inside the metadata. A sector-bitmap block is placed
    /// the same way ([`SECTOR_BITMAP_BLOCK_SIZE`] bytes).
    pub fn next_block_offset(areas: &FileAreas) -> Option<u64> {
        round_up(areas.file_len.max(areas.metadata_end()), MIB)
    }

    /// Bytes of the sector-bitmap block a differencing file adds per chunk.
    pub fn sector_bitmap_size(&self) -> u64 {
        SECTOR_BITMAP_BLOCK_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_layout_places_log_metadata_bat_payload() {
        let l = NewVhdx::new(DiskType::Dynamic, 100 * MIB).layout().unwrap();
        assert_eq!((l.log.offset, l.log.length), (MIB, MIB as u32));
        assert_eq!(l.metadata.offset, 2 * MIB);
        assert_eq!((l.bat.offset, l.bat.length), (3 * MIB, MIB as u32));
        assert_eq!((l.first_payload, l.file_len), (4 * MIB, 4 * MIB));
        assert_eq!(l.geometry.entries, 4, "100 MiB in 32 MiB blocks");
        assert_eq!(VhdxLayout::next_block_offset(&l.areas()), Some(4 * MIB));
    }

    #[test]
    fn fixed_layout_allocates_every_block_in_order() {
        let l = NewVhdx::new(DiskType::Fixed, 100 * MIB).layout().unwrap();
        assert_eq!(l.file_len, 4 * MIB + 4 * 32 * MIB);
        let bat = l.initial_bat();
        for b in 0..4 {
            let p = bat.payload(b).unwrap();
            assert_eq!(p.file_offset, Some(4 * MIB + b * 32 * MIB));
        }
        assert!(bat.problems(&l.areas(), l.bat.offset).is_empty());
    }

    #[test]
    fn large_bat_is_rounded_to_mib() {
        let mut n = NewVhdx::new(DiskType::Differencing, 4 << 40);
        n.block_size = MIB as u32;
        let l = n.layout().unwrap();
        assert_eq!(l.geometry.entries, 1024 * 4097);
        assert_eq!(
            u64::from(l.bat.length),
            round_up(1024 * 4097 * 8, MIB).unwrap()
        );
        assert!(l.first_payload.is_multiple_of(MIB));
    }

    #[test]
    fn bad_parameters_are_refused_with_their_field() {
        let mut n = NewVhdx::new(DiskType::Dynamic, 100 * MIB);
        n.physical_sector_size = 1024;
        assert!(matches!(
            n.layout(),
            Err(VhdxError::Field {
                field: "physical sector size",
                ..
            })
        ));
        let mut n = NewVhdx::new(DiskType::Dynamic, 100 * MIB);
        n.log_length = 4096;
        assert!(n.layout().is_err());
        let mut n = NewVhdx::new(DiskType::Dynamic, 100 * MIB + 512);
        n.logical_sector_size = 4096;
        assert!(matches!(
            n.layout(),
            Err(VhdxError::Field {
                structure: Structure::Layout,
                field: "virtual size",
                ..
            })
        ));
    }

    fn image(l: &VhdxLayout, parent: Option<ParentLocator>) -> Vec<u8> {
        let mut b = vec![0u8; l.file_len as usize];
        let md = l.metadata(Uuid::from_u128(83), parent);
        for (at, bytes) in l.initial_writes(&l.header(), &md) {
            b[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        b
    }

    #[test]
    fn new_files_decode_as_described() {
        for t in [DiskType::Fixed, DiskType::Dynamic, DiskType::Differencing] {
            let mut n = NewVhdx::new(t, 40 * MIB);
            n.block_size = 2 * MIB as u32;
            n.logical_sector_size = 4096;
            let l = n.layout().unwrap();
            let parent = (t == DiskType::Differencing)
                .then(|| ParentLocator::new(Uuid::from_u128(5), Some("base.vhdx"), None, None));
            let p = crate::vhdx::ParsedVhdx::decode(&image(&l, parent.clone())).unwrap();
            assert_eq!(p.header.slot, crate::vhdx::HeaderSlot::Second);
            assert_eq!(p.regions, l.region_table());
            assert!(p.regions_agree);
            assert_eq!(p.metadata, l.metadata(Uuid::from_u128(83), parent));
            assert_eq!(p.bat, l.initial_bat());
            assert_eq!(p.ident.creator, crate::vhdx::ident::VHDKIT_CREATOR);
            assert!(p.replay.is_none());
        }
    }

    #[test]
    fn areas_refuse_regions_past_eof_or_overlapping() {
        let l = NewVhdx::new(DiskType::Dynamic, 100 * MIB).layout().unwrap();
        let h = l.header();
        let t = l.region_table();
        assert!(FileAreas::new(&h, &t, l.file_len - 1).is_err());
        let mut t2 = t.clone();
        t2.bat.offset = h.log_offset;
        let err = FileAreas::new(&h, &t2, l.file_len).unwrap_err();
        assert!(err.to_string().contains("overlaps the"), "{err}");
    }

    #[test]
    fn metadata_overlap_names_the_area() {
        let a = NewVhdx::new(DiskType::Dynamic, 100 * MIB)
            .layout()
            .unwrap()
            .areas();
        assert_eq!(a.metadata_overlap(0, 10), Some("header section"));
        assert_eq!(a.metadata_overlap(MIB, MIB + 1), Some("log"));
        assert_eq!(
            a.metadata_overlap(2 * MIB, 3 * MIB),
            Some("metadata region")
        );
        assert_eq!(
            a.metadata_overlap(3 * MIB + 5, 3 * MIB + 6),
            Some("BAT region")
        );
        assert_eq!(a.metadata_overlap(4 * MIB, 5 * MIB), None);
    }
}
