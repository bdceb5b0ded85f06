//! A whole VHDX file held in memory, decoded in one call: identifier, current header,
//! region table, file areas, log replay (applied to a copy, never to the input),
//! metadata and BAT. The container reads the same structures piece by piece from a
//! file; this is for tests, fuzz targets and checking small images, and shows the order
//! the pieces depend on each other in.

use super::bat::{Bat, BatGeometry};
use super::error::{need, Structure, VhdxError};
use super::header::{CurrentHeader, HEADER_1_OFFSET, HEADER_2_OFFSET, HEADER_SIZE};
use super::ident::{FileIdentifier, RawFileIdentifier};
use super::layout::FileAreas;
use super::log::{replay, LogWrite, ReplayPlan};
use super::metadata::Metadata;
use super::region::{RegionTable, REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET, REGION_TABLE_SIZE};
use super::MIB;

/// Most bytes a replay may add to the in-memory copy (the file's own growth bound,
/// [`super::log::replay::MAX_REPLAY_GROWTH`], is larger: this copy is for small files).
pub const MAX_IN_MEMORY_GROWTH: u64 = 64 * MIB;

/// Every structure of a valid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedVhdx {
    /// The file type identifier.
    pub ident: FileIdentifier,
    /// The current header and its slot.
    pub header: CurrentHeader,
    /// The region table in use, and whether both copies agree.
    pub regions: RegionTable,
    /// Whether the two region table copies are identical.
    pub regions_agree: bool,
    /// The file's metadata areas (after replay: its length is the replayed one).
    pub areas: FileAreas,
    /// The replay the log called for, if any (already applied to what follows).
    pub replay: Option<ReplayPlan>,
    /// The metadata.
    pub metadata: Metadata,
    /// The BAT.
    pub bat: Bat,
}

fn slice(file: &[u8], at: u64, len: usize, structure: Structure) -> Result<&[u8], VhdxError> {
    let start = usize::try_from(at).unwrap_or(usize::MAX).min(file.len());
    let s = &file[start..];
    need(s, len, structure, at)?;
    Ok(&s[..len])
}

impl ParsedVhdx {
    /// Decodes and validates the whole file `file`.
    pub fn decode(file: &[u8]) -> Result<ParsedVhdx, VhdxError> {
        let ident = RawFileIdentifier::decode(file)?.validate()?;
        let header = CurrentHeader::choose(
            slice(file, HEADER_1_OFFSET, HEADER_SIZE, Structure::Header(1)).unwrap_or(&[]),
            slice(file, HEADER_2_OFFSET, HEADER_SIZE, Structure::Header(2)).unwrap_or(&[]),
        )?;
        let (regions, regions_agree) = RegionTable::choose(
            slice(
                file,
                REGION_TABLE_1_OFFSET,
                REGION_TABLE_SIZE,
                Structure::RegionTable(1),
            )
            .unwrap_or(&[]),
            slice(
                file,
                REGION_TABLE_2_OFFSET,
                REGION_TABLE_SIZE,
                Structure::RegionTable(2),
            )
            .unwrap_or(&[]),
        )?;
        let h = header.header;
        let areas = FileAreas::new(&h, &regions, file.len() as u64)?;
        let replay = if h.has_log() {
            let log = slice(file, h.log_offset, h.log_length as usize, Structure::Log)?;
            replay(log, &h, &areas)?
        } else {
            None
        };
        let owned;
        let image: &[u8] = match &replay {
            Some(plan) => {
                owned = apply(file, plan)?;
                &owned
            }
            None => file,
        };
        let areas = FileAreas {
            file_len: image.len() as u64,
            ..areas
        };
        let md = &regions.metadata;
        let metadata = Metadata::decode(
            slice(
                image,
                md.offset,
                md.length as usize,
                Structure::MetadataTable,
            )?,
            md.offset,
        )?;
        let geometry = BatGeometry::from_metadata(&metadata)?;
        let b = &regions.bat;
        if geometry.bat_bytes() > u64::from(b.length) {
            return Err(VhdxError::field(
                Structure::Bat,
                b.offset,
                "region length",
                b.length,
                format!("at least the table's {} bytes", geometry.bat_bytes()),
            ));
        }
        let bat = Bat::decode(
            slice(image, b.offset, b.length as usize, Structure::Bat)?,
            geometry,
            b.offset,
        )?;
        if let Some(p) = bat.problems(&areas, b.offset).into_iter().next() {
            return Err(p);
        }
        Ok(ParsedVhdx {
            ident,
            header,
            regions,
            regions_agree,
            areas,
            replay,
            metadata,
            bat,
        })
    }
}

/// A copy of `file` with the replay applied and its length set.
pub fn apply(file: &[u8], plan: &ReplayPlan) -> Result<Vec<u8>, VhdxError> {
    if plan.new_file_len > file.len() as u64 + MAX_IN_MEMORY_GROWTH {
        return Err(VhdxError::field(
            Structure::Log,
            0,
            "replayed length",
            plan.new_file_len,
            format!("at most {MAX_IN_MEMORY_GROWTH} bytes past the file for an in-memory replay"),
        ));
    }
    let mut out = file.to_vec();
    out.resize(plan.new_file_len.max(file.len() as u64) as usize, 0);
    for w in &plan.writes {
        let at = w.offset() as usize;
        match w {
            LogWrite::Data { bytes, .. } => out[at..at + bytes.len()].copy_from_slice(bytes),
            LogWrite::Zero { length, .. } => out[at..at + *length as usize].fill(0),
        }
    }
    Ok(out)
}

/// Whether `prefix` (a file's first bytes) starts with the VHDX signature.
pub fn is_vhdx(prefix: &[u8]) -> bool {
    prefix.len() >= 8 && prefix[..8] == super::ident::IDENT_SIGNATURE
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::vhdx::bat::PayloadState;
    use crate::vhdx::header::HeaderSlot;
    use crate::vhdx::log::LogCursor;
    use crate::vhdx::{DiskType, NewVhdx, VhdxLayout};

    fn new_file(disk_type: DiskType) -> (VhdxLayout, Vec<u8>) {
        let mut n = NewVhdx::new(disk_type, 16 * MIB);
        n.block_size = MIB as u32;
        let l = n.layout().unwrap();
        let mut b = vec![0u8; l.file_len as usize];
        for (at, bytes) in l.initial_writes(&l.header(), &l.metadata(Uuid::nil(), None)) {
            b[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        (l, b)
    }

    #[test]
    fn vhdx_signature_is_recognised() {
        let (_, b) = new_file(DiskType::Dynamic);
        assert!(is_vhdx(&b[..8]));
        assert!(!is_vhdx(b"conectix"));
        assert!(!is_vhdx(b"vhdx"));
    }

    #[test]
    fn damaged_current_header_falls_back_to_the_other() {
        let (_, mut b) = new_file(DiskType::Dynamic);
        let p = ParsedVhdx::decode(&b).unwrap();
        assert_eq!(p.header.slot, HeaderSlot::Second);
        b[HEADER_2_OFFSET as usize + 200] ^= 1;
        let p = ParsedVhdx::decode(&b).unwrap();
        assert_eq!(
            (p.header.slot, p.header.other_valid),
            (HeaderSlot::First, false)
        );
    }

    #[test]
    fn file_cut_inside_a_region_is_refused_with_the_region() {
        let (l, b) = new_file(DiskType::Fixed);
        let err = ParsedVhdx::decode(&b[..(l.bat.offset + 100) as usize]).unwrap_err();
        assert!(err.to_string().contains("BAT region"), "{err}");
        let err = ParsedVhdx::decode(&b[..100_000]).unwrap_err();
        assert!(matches!(err, VhdxError::NoRegionTable { .. }), "{err}");
        let err = ParsedVhdx::decode(&b[..10_000]).unwrap_err();
        assert!(matches!(err, VhdxError::NoHeader { .. }), "{err}");
    }

    #[test]
    fn pending_log_is_replayed_before_metadata_and_bat_are_read() {
        let (l, mut b) = new_file(DiskType::Dynamic);
        // A block at the end of the file, and the BAT sector naming it, in the log.
        let end = b.len() as u64;
        let mut bat = l.initial_bat();
        bat.set_payload(3, PayloadState::FullyPresent, end);
        let mut sector = bat.encode();
        sector.resize(4096, 0);
        let guid = Uuid::from_u128(0x106);
        let placed = LogCursor::new(u64::from(l.log.length))
            .append(
                guid,
                end,
                end + MIB,
                &[LogWrite::Data {
                    offset: l.bat.offset,
                    bytes: sector,
                }],
            )
            .unwrap();
        let log = l.log.offset as usize..l.log.end() as usize;
        placed.write_into(&mut b[log]);
        let mut h = l.header();
        h.sequence_number = 9;
        h.log_guid = guid;
        b[HEADER_1_OFFSET as usize..HEADER_1_OFFSET as usize + HEADER_SIZE]
            .copy_from_slice(&h.encode());
        let before = b.clone();
        let p = ParsedVhdx::decode(&b).unwrap();
        assert_eq!(b, before, "the input is never written");
        assert_eq!(p.bat.payload(3).unwrap().file_offset, Some(end));
        assert_eq!(p.areas.file_len, end + MIB);
        assert_eq!(p.replay.unwrap().writes.len(), 1);
    }

    #[test]
    fn in_memory_replay_growth_is_bounded() {
        let plan = ReplayPlan {
            sequence: crate::vhdx::log::ActiveSequence {
                entries: vec![],
                log_length: MIB,
            },
            writes: vec![],
            new_file_len: 10 + MAX_IN_MEMORY_GROWTH + 1,
        };
        assert!(apply(&[0; 10], &plan).is_err());
    }
}
