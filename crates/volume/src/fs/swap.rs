//! Linux swap (version 1): everything but the header page is free, except the pages the
//! header lists as bad. A swap area holding a hibernation image has another signature and
//! is left alone as not clean.

use crate::bytes::{has, le32};
use crate::error::{corrupt, unsupported, Fail, Reason};
use crate::fs::FsReport;
use crate::ranges::Runs;
use crate::region::Region;
use crate::ReadAt;

/// The page sizes whose header layout is tried (the signature ends each header page).
pub const PAGE_SIZES: [u64; 4] = [4096, 8192, 16384, 65536];
/// Signature of a version-1 swap area, in the last 10 bytes of the header page.
pub const SWAP_MAGIC: &[u8; 10] = b"SWAPSPACE2";
/// Signatures left in that place by hibernation (swsusp, uswsusp, tuxonice) or an old
/// version-0 area.
pub const OTHER_MAGICS: [&[u8]; 6] = [
    b"S1SUSPEND",
    b"S2SUSPEND",
    b"ULSUSPEND",
    b"LINHIB0001",
    b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c",
    b"SWAP-SPACE",
];
/// Byte offset of `version` in the header page (after 1024 bytes of boot bits).
const HDR_VERSION: usize = 1024;
const HDR_LAST_PAGE: usize = 1028;
const HDR_NR_BADPAGES: usize = 1032;
/// `badpages[]` follows the version, last page, count, uuid, label and 117 padding words.
const HDR_BADPAGES: usize = 1536;

/// Which page size's signature slot holds something swap-like: (page size, is v1).
fn find(head: &[u8]) -> Option<(u64, bool)> {
    for ps in PAGE_SIZES {
        let at = (ps - 10) as usize;
        if has(head, at, SWAP_MAGIC) {
            return Some((ps, true));
        }
        for m in OTHER_MAGICS {
            if has(head, at, m) {
                return Some((ps, false));
            }
        }
    }
    None
}

pub(crate) fn detect(head: &[u8]) -> bool {
    find(head).is_some()
}

pub(crate) fn analyse<R: ReadAt + ?Sized>(
    region: &Region<'_, R>,
    rep: &mut FsReport,
) -> Result<Runs, Fail> {
    let head = region.read_vec(0, region.len.min(65536), "swap header")?;
    let (ps, v1) = find(&head).ok_or_else(|| corrupt("no swap signature"))?;
    rep.unit = Some(ps);
    if !v1 {
        return Err(Fail::Left(Reason::NotClean(
            "swap area holds a hibernation image or is an old version-0 area".into(),
        )));
    }
    let hdr = &head[..ps as usize];
    // The header is in the byte order of the machine that wrote it.
    let le = le32(hdr, HDR_VERSION);
    let swapped = match le {
        1 => false,
        0x0100_0000 => true,
        v => return Err(unsupported(format!("swap header version {v:#x}"))),
    };
    let field = |off: usize| {
        let v = le32(hdr, off);
        if swapped {
            v.swap_bytes()
        } else {
            v
        }
    };
    let last_page = u64::from(field(HDR_LAST_PAGE));
    let size = (last_page + 1) * ps;
    rep.size = Some(size);
    if size > region.len {
        return Err(Fail::Left(Reason::SizeMismatch {
            fs_size: size,
            partition_size: region.len,
        }));
    }
    let nr_bad = u64::from(field(HDR_NR_BADPAGES));
    let max_bad = (ps - HDR_BADPAGES as u64) / 4;
    if nr_bad > max_bad {
        return Err(corrupt(format!("{nr_bad} bad pages listed")));
    }
    let mut bad: Vec<u64> = (0..nr_bad as usize)
        .map(|i| u64::from(field(HDR_BADPAGES + 4 * i)))
        .collect();
    bad.sort_unstable();
    let mut runs = Runs::default();
    let mut page = 1u64;
    for b in bad.into_iter().filter(|&b| b >= 1 && b <= last_page) {
        runs.push(page * ps, b * ps);
        page = page.max(b + 1);
    }
    runs.push(page * ps, (last_page + 1) * ps);
    Ok(runs)
}
