//! NTFS: the boot sector, MFT records (with their update-sequence fixups), data runs, and
//! the `$Bitmap` file (MFT record 6), one bit per cluster, set = used.
//!
//! Before the map is trusted: `$Volume` (record 3) must not carry the dirty or
//! chkdsk-underway flags, and `$LogFile` (record 2) must be clean (empty, or a restart
//! area saying the volume is clean or has no client), which is what Windows leaves after
//! a full shutdown and not after hibernation or fast startup.
//!
//! `$Bitmap` must be unnamed `$DATA`, non-resident (or resident on tiny volumes), neither
//! compressed, encrypted nor sparse, with no sparse run, in one record (no attribute list),
//! and its valid data must cover every cluster. Clusters past the bitmap, and the backup
//! boot sector after the last cluster, count as used.

use crate::bytes::{has, le16, le32, le64, u8_at};
use crate::error::{corrupt, unsupported, Fail, Reason};
use crate::fs::FsReport;
use crate::ranges::{bitmap_free, Runs};
use crate::region::Region;
use crate::ReadAt;

/// OEM id at offset 3 of an NTFS boot sector.
pub const NTFS_OEM: &[u8; 8] = b"NTFS    ";
const BPB_BYTES_PER_SEC: usize = 0x0B;
const BPB_SEC_PER_CLUS: usize = 0x0D;
const BPB_TOTAL_SECTORS: usize = 0x28;
const BPB_MFT_LCN: usize = 0x30;
const BPB_CLUSTERS_PER_RECORD: usize = 0x40;

/// Update sequence arrays protect every 512-byte stride of a multi-sector record.
const FIXUP_STRIDE: usize = 512;
/// The largest cluster NTFS allows (2 MiB).
const MAX_CLUSTER: u64 = 2 << 20;

const REC_LOGFILE: u64 = 2;
const REC_VOLUME: u64 = 3;
const REC_BITMAP: u64 = 6;

const ATTR_LIST: u32 = 0x20;
const ATTR_VOLUME_INFORMATION: u32 = 0x70;
const ATTR_DATA: u32 = 0x80;
const ATTR_END: u32 = 0xFFFF_FFFF;
/// Attribute flags: compressed, encrypted, sparse.
const ATTR_FLAGS_UNREADABLE: u16 = 0x0001 | 0x4000 | 0x8000;

/// `$VOLUME_INFORMATION` flags that make the map untrustworthy: dirty, chkdsk underway.
const VOLUME_DIRTY: u16 = 0x0001;
const VOLUME_CHKDSK_UNDERWAY: u16 = 0x4000;

/// MFT record header flag: in use.
const RECORD_IN_USE: u16 = 0x0001;

/// `$LogFile` restart area: `RESTART_VOLUME_IS_CLEAN`.
const RESTART_CLEAN: u16 = 0x0002;
/// `$LogFile` restart area: no client in use.
const LOGFILE_NO_CLIENT: u16 = 0xFFFF;

/// The validated geometry of an NTFS volume.
#[derive(Debug, Clone, Copy)]
struct Boot {
    size: u64,
    cluster: u64,
    clusters: u64,
    mft_offset: u64,
    record_size: u64,
}

pub(crate) fn detect(head: &[u8]) -> bool {
    has(head, 3, NTFS_OEM) && has(head, 510, &[0x55, 0xAA])
}

fn parse_boot(b: &[u8]) -> Result<Boot, String> {
    if !has(b, 3, NTFS_OEM) {
        return Err("no NTFS OEM id".into());
    }
    let bps = u64::from(le16(b, BPB_BYTES_PER_SEC));
    if !matches!(bps, 256 | 512 | 1024 | 2048 | 4096) {
        return Err(format!("{bps} bytes per sector"));
    }
    let spc_raw = u8_at(b, BPB_SEC_PER_CLUS);
    let spc: u64 = if spc_raw <= 0x80 {
        u64::from(spc_raw)
    } else {
        let shift = 256 - u32::from(spc_raw);
        if shift > 20 {
            return Err(format!("sectors per cluster code {spc_raw:#x}"));
        }
        1u64 << shift
    };
    if spc == 0 || !spc.is_power_of_two() {
        return Err(format!("{spc} sectors per cluster"));
    }
    let cluster = spc * bps;
    if cluster > MAX_CLUSTER {
        return Err(format!("{cluster}-byte clusters"));
    }
    let total_sectors = le64(b, BPB_TOTAL_SECTORS);
    let size = total_sectors
        .checked_mul(bps)
        .ok_or("total sectors overflow")?;
    let clusters = size / cluster;
    if clusters == 0 {
        return Err("no clusters".into());
    }
    let cpr = u8_at(b, BPB_CLUSTERS_PER_RECORD) as i8;
    let record_size: u64 = if cpr > 0 {
        u64::from(cpr as u8) * cluster
    } else {
        let shift = u32::from(cpr.unsigned_abs());
        if !(8..=16).contains(&shift) {
            return Err(format!("MFT record size code {cpr}"));
        }
        1u64 << shift
    };
    if !(512..=65536).contains(&record_size) || !record_size.is_power_of_two() {
        return Err(format!("{record_size}-byte MFT records"));
    }
    let mft_lcn = le64(b, BPB_MFT_LCN);
    if mft_lcn >= clusters {
        return Err(format!("MFT at cluster {mft_lcn} past the volume"));
    }
    Ok(Boot {
        size,
        cluster,
        clusters,
        mft_offset: mft_lcn * cluster,
        record_size,
    })
}

/// Applies the update-sequence fixups of a multi-sector record in place.
pub(crate) fn apply_fixups(rec: &mut [u8], magic: &[u8; 4]) -> Result<(), String> {
    if !has(rec, 0, magic) {
        return Err(format!("no {} magic", String::from_utf8_lossy(magic)));
    }
    let usa_ofs = usize::from(le16(rec, 4));
    let usa_count = usize::from(le16(rec, 6));
    if !rec.len().is_multiple_of(FIXUP_STRIDE) || usa_count != rec.len() / FIXUP_STRIDE + 1 {
        return Err(format!(
            "{usa_count} update sequence entries for {} bytes",
            rec.len()
        ));
    }
    if usa_ofs % 2 != 0 || usa_ofs + usa_count * 2 > FIXUP_STRIDE - 2 {
        return Err(format!("update sequence array at {usa_ofs}"));
    }
    let usn = le16(rec, usa_ofs);
    for i in 1..usa_count {
        let end = i * FIXUP_STRIDE - 2;
        if le16(rec, end) != usn {
            return Err(format!(
                "torn record (stride {i} lacks the update sequence number)"
            ));
        }
        let fix = [u8_at(rec, usa_ofs + 2 * i), u8_at(rec, usa_ofs + 2 * i + 1)];
        rec[end..end + 2].copy_from_slice(&fix);
    }
    Ok(())
}

/// One attribute of a record: type, flags, and its resident value or non-resident header.
struct Attr<'a> {
    ty: u32,
    name_len: u8,
    flags: u16,
    body: &'a [u8],
    resident: bool,
}

/// The attributes of a fixed-up MFT record (bounded by the record).
fn attributes(rec: &[u8]) -> Result<Vec<Attr<'_>>, String> {
    let used = (le32(rec, 0x18) as usize).min(rec.len());
    let mut off = usize::from(le16(rec, 0x14));
    let mut out = Vec::new();
    while off + 8 <= used {
        let ty = le32(rec, off);
        if ty == ATTR_END {
            return Ok(out);
        }
        let len = le32(rec, off + 4) as usize;
        if len < 0x18 || !len.is_multiple_of(8) || off + len > used {
            return Err(format!("attribute {ty:#x} of {len} bytes at {off}"));
        }
        let body = &rec[off..off + len];
        out.push(Attr {
            ty,
            name_len: u8_at(body, 9),
            flags: le16(body, 0x0C),
            resident: u8_at(body, 8) == 0,
            body,
        });
        off += len;
    }
    Err("attribute list not terminated".into())
}

fn resident_value<'a>(a: &Attr<'a>) -> Result<&'a [u8], String> {
    let len = le32(a.body, 0x10) as usize;
    let off = usize::from(le16(a.body, 0x14));
    off.checked_add(len)
        .and_then(|end| a.body.get(off..end))
        .ok_or_else(|| format!("resident value of {len} bytes at {off}"))
}

/// A decoded data run: `len` clusters at `lcn` (`None` = sparse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) lcn: Option<u64>,
    pub(crate) len: u64,
}

/// Decodes a mapping-pairs array; every run must lie in `0..clusters`.
pub(crate) fn decode_runs(mut b: &[u8], clusters: u64) -> Result<Vec<Run>, String> {
    let mut out = Vec::new();
    let mut lcn: i64 = 0;
    loop {
        let Some((&head, rest)) = b.split_first() else {
            return Err("mapping pairs not terminated".into());
        };
        if head == 0 {
            return Ok(out);
        }
        let len_n = usize::from(head & 0x0F);
        let off_n = usize::from(head >> 4);
        if len_n == 0 || len_n > 8 || off_n > 8 || rest.len() < len_n + off_n {
            return Err(format!("mapping pair header {head:#x}"));
        }
        let mut len: u64 = 0;
        for (i, &byte) in rest[..len_n].iter().enumerate() {
            len |= u64::from(byte) << (8 * i);
        }
        if len == 0 || len > clusters {
            return Err(format!("run of {len} clusters"));
        }
        let run_lcn = if off_n == 0 {
            None
        } else {
            let bytes = &rest[len_n..len_n + off_n];
            let mut delta: i64 = 0;
            for (i, &byte) in bytes.iter().enumerate() {
                delta |= i64::from(byte) << (8 * i);
            }
            if off_n < 8 && bytes[off_n - 1] & 0x80 != 0 {
                delta |= -1i64 << (8 * off_n);
            }
            lcn = lcn.checked_add(delta).ok_or("run offset overflow")?;
            let start = u64::try_from(lcn).map_err(|_| "negative cluster number")?;
            if start.checked_add(len).is_none_or(|e| e > clusters) {
                return Err(format!("run of {len} clusters at {start} past the volume"));
            }
            Some(start)
        };
        out.push(Run { lcn: run_lcn, len });
        b = &rest[len_n + off_n..];
    }
}

/// Reads `buf.len()` bytes at byte `pos` of a stream described by `runs`.
fn read_stream<R: ReadAt + ?Sized>(
    region: &Region<'_, R>,
    boot: &Boot,
    runs: &[Run],
    mut pos: u64,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), Fail> {
    let mut done = 0usize;
    while done < buf.len() {
        let vcn = pos / boot.cluster;
        let mut first = 0u64;
        let mut found = None;
        for r in runs {
            if vcn < first.saturating_add(r.len) {
                found = Some((r, vcn - first));
                break;
            }
            first = first.saturating_add(r.len);
        }
        let (run, into) = found.ok_or_else(|| corrupt(format!("{what}: byte {pos} not mapped")))?;
        let lcn = run
            .lcn
            .ok_or_else(|| unsupported(format!("{what}: sparse run")))?;
        let in_cluster = pos % boot.cluster;
        let avail = (run.len - into) * boot.cluster - in_cluster;
        let n = (buf.len() - done).min(usize::try_from(avail).unwrap_or(usize::MAX));
        let disk = (lcn + into) * boot.cluster + in_cluster;
        region.read(disk, &mut buf[done..done + n], what)?;
        done += n;
        pos += n as u64;
    }
    Ok(())
}

/// The non-resident unnamed `$DATA` of a record: its runs and its valid data length.
fn data_runs(rec: &[u8], clusters: u64) -> Result<(Vec<Run>, u64, u64), Fail> {
    let attrs = attributes(rec).map_err(corrupt)?;
    if attrs.iter().any(|a| a.ty == ATTR_LIST) {
        return Err(unsupported("attribute list (fragmented system file)"));
    }
    let data = attrs
        .iter()
        .find(|a| a.ty == ATTR_DATA && a.name_len == 0)
        .ok_or_else(|| corrupt("no $DATA"))?;
    if data.flags & ATTR_FLAGS_UNREADABLE != 0 {
        return Err(unsupported("compressed, encrypted or sparse system file"));
    }
    if data.resident {
        return Err(corrupt("resident $DATA where runs were expected"));
    }
    if le64(data.body, 0x10) != 0 {
        return Err(corrupt("$DATA does not start at VCN 0"));
    }
    let mp = usize::from(le16(data.body, 0x20));
    let pairs = data
        .body
        .get(mp..)
        .ok_or_else(|| corrupt("mapping pairs offset"))?;
    let runs = decode_runs(pairs, clusters).map_err(corrupt)?;
    let data_size = le64(data.body, 0x30);
    let valid = le64(data.body, 0x38);
    Ok((runs, data_size, valid))
}

/// Reads and fixes up MFT record `n`, located through `$MFT`'s own runs.
fn record<R: ReadAt + ?Sized>(
    region: &Region<'_, R>,
    boot: &Boot,
    mft_runs: &[Run],
    n: u64,
) -> Result<Vec<u8>, Fail> {
    let mut rec = vec![0u8; boot.record_size as usize];
    read_stream(
        region,
        boot,
        mft_runs,
        n * boot.record_size,
        &mut rec,
        "MFT record",
    )?;
    apply_fixups(&mut rec, b"FILE").map_err(|e| corrupt(format!("MFT record {n}: {e}")))?;
    if le16(&rec, 0x16) & RECORD_IN_USE == 0 {
        return Err(corrupt(format!("MFT record {n} not in use")));
    }
    if le64(&rec, 0x20) != 0 {
        return Err(corrupt(format!("MFT record {n} is an extension record")));
    }
    Ok(rec)
}

/// Whether the first restart page of `$LogFile` says the volume is clean.
fn logfile_clean(page: &mut [u8]) -> Result<bool, String> {
    if page.iter().all(|&b| b == 0xFF) {
        return Ok(true); // emptied by chkdsk or ntfs-3g: nothing to replay
    }
    apply_fixups(page, b"RSTR")?;
    let ra = usize::from(le16(page, 0x18));
    if ra + 16 > page.len() {
        return Err(format!("restart area at {ra}"));
    }
    let in_use = le16(page, ra + 12);
    let flags = le16(page, ra + 14);
    Ok(in_use == LOGFILE_NO_CLIENT || flags & RESTART_CLEAN != 0)
}

pub(crate) fn analyse<R: ReadAt + ?Sized>(
    region: &Region<'_, R>,
    rep: &mut FsReport,
) -> Result<Runs, Fail> {
    let mut bs = [0u8; 512];
    region.read(0, &mut bs, "NTFS boot sector")?;
    let boot = parse_boot(&bs).map_err(corrupt)?;
    rep.unit = Some(boot.cluster);
    rep.size = Some(boot.size);
    if boot.size > region.len {
        return Err(Fail::Left(Reason::SizeMismatch {
            fs_size: boot.size,
            partition_size: region.len,
        }));
    }
    // $MFT's record 0 gives the runs of the MFT itself.
    let mut rec0 = vec![0u8; boot.record_size as usize];
    region.read(boot.mft_offset, &mut rec0, "MFT record 0")?;
    apply_fixups(&mut rec0, b"FILE").map_err(|e| corrupt(format!("MFT record 0: {e}")))?;
    let (mft_runs, _, _) = data_runs(&rec0, boot.clusters)?;

    // $Volume: dirty or chkdsk underway?
    let vol = record(region, &boot, &mft_runs, REC_VOLUME)?;
    let attrs = attributes(&vol).map_err(corrupt)?;
    let info = attrs
        .iter()
        .find(|a| a.ty == ATTR_VOLUME_INFORMATION && a.resident)
        .ok_or_else(|| corrupt("$Volume has no volume information"))?;
    let value = resident_value(info).map_err(corrupt)?;
    if value.len() < 12 {
        return Err(corrupt("short volume information"));
    }
    let flags = le16(value, 10);
    if flags & VOLUME_DIRTY != 0 {
        return Err(Fail::Left(Reason::NotClean("volume dirty flag set".into())));
    }
    if flags & VOLUME_CHKDSK_UNDERWAY != 0 {
        return Err(Fail::Left(Reason::NotClean("chkdsk underway".into())));
    }

    // $LogFile: a restart area that is not clean means Windows hibernated or crashed.
    let log = record(region, &boot, &mft_runs, REC_LOGFILE)?;
    let (log_runs, log_size, _) = data_runs(&log, boot.clusters)?;
    if log_size < 4096 {
        return Err(corrupt("$LogFile too small"));
    }
    let mut page = vec![0u8; 4096];
    read_stream(
        region,
        &boot,
        &log_runs,
        0,
        &mut page,
        "$LogFile restart page",
    )?;
    match logfile_clean(&mut page) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Fail::Left(Reason::NotClean(
                "$LogFile has unreplayed changes (hibernated, fast startup or crash)".into(),
            )))
        }
        Err(e) => return Err(corrupt(format!("$LogFile restart page: {e}"))),
    }

    // $Bitmap.
    let bm_rec = record(region, &boot, &mft_runs, REC_BITMAP)?;
    let need = boot.clusters.div_ceil(8);
    let attrs = attributes(&bm_rec).map_err(corrupt)?;
    let resident = attrs
        .iter()
        .find(|a| a.ty == ATTR_DATA && a.name_len == 0)
        .filter(|a| a.resident);
    let bitmap = if let Some(a) = resident {
        let v = resident_value(a).map_err(corrupt)?;
        if (v.len() as u64) < need {
            return Err(corrupt("resident $Bitmap shorter than the volume"));
        }
        v.to_vec()
    } else {
        let (runs, size, valid) = data_runs(&bm_rec, boot.clusters)?;
        if size < need || valid < need {
            return Err(corrupt(format!(
                "$Bitmap holds {size} bytes ({valid} valid) for {need} needed"
            )));
        }
        let mut bitmap = vec![0u8; usize::try_from(need).map_err(|_| corrupt("bitmap size"))?];
        read_stream(region, &boot, &runs, 0, &mut bitmap, "$Bitmap")?;
        bitmap
    };
    let mut runs = Runs::default();
    bitmap_free(&bitmap, boot.clusters, boot.cluster, 0, &mut runs);
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_decode_negative_offsets_and_sparse() {
        // 0x11: 1-byte len 4, 1-byte offset +0x20; 0x11 len 2, offset -0x10; 0x01 sparse len 3.
        let pairs = [0x11, 4, 0x20, 0x11, 2, 0xF0, 0x01, 3, 0];
        let runs = decode_runs(&pairs, 100).unwrap();
        assert_eq!(
            runs,
            vec![
                Run {
                    lcn: Some(0x20),
                    len: 4
                },
                Run {
                    lcn: Some(0x10),
                    len: 2
                },
                Run { lcn: None, len: 3 },
            ]
        );
    }

    /// A 4 KiB `$LogFile` restart page with its fixups, `in_use` and `flags` in its
    /// restart area.
    fn restart_page(in_use: u16, flags: u16) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        p[..4].copy_from_slice(b"RSTR");
        p[4..6].copy_from_slice(&0x1Eu16.to_le_bytes());
        p[6..8].copy_from_slice(&9u16.to_le_bytes());
        p[0x18..0x1A].copy_from_slice(&0x30u16.to_le_bytes());
        p[0x1E..0x20].copy_from_slice(&7u16.to_le_bytes()); // update sequence number
        p[0x30 + 12..0x30 + 14].copy_from_slice(&in_use.to_le_bytes());
        p[0x30 + 14..0x30 + 16].copy_from_slice(&flags.to_le_bytes());
        for i in 1..9 {
            p[i * 512 - 2..i * 512].copy_from_slice(&7u16.to_le_bytes());
        }
        p
    }

    #[test]
    fn logfile_with_a_client_and_no_clean_flag_is_not_clean() {
        assert_eq!(logfile_clean(&mut restart_page(0, 0)), Ok(false));
    }

    #[test]
    fn logfile_clean_flag_or_no_client_is_clean() {
        assert_eq!(logfile_clean(&mut restart_page(0, RESTART_CLEAN)), Ok(true));
        assert_eq!(
            logfile_clean(&mut restart_page(LOGFILE_NO_CLIENT, 0)),
            Ok(true)
        );
        assert_eq!(logfile_clean(&mut vec![0xFF; 4096]), Ok(true));
    }

    #[test]
    fn torn_restart_page_is_an_error() {
        let mut p = restart_page(0, RESTART_CLEAN);
        p[1022] = 9;
        assert!(logfile_clean(&mut p).is_err());
    }

    #[test]
    fn runs_past_the_volume_are_rejected() {
        assert!(decode_runs(&[0x11, 4, 99, 0], 100).is_err());
    }
}
