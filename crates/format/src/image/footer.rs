//! Choosing the footer an image is opened with: the one at the end, the 511-byte one of
//! old Virtual PC, or the copy at offset 0 when the end is damaged — and naming what a
//! file is when it has no usable footer at all.

use std::path::Path;

use crate::error::{Error, Result};
use crate::spec::footer::POISON_COOKIE;
use crate::spec::{Footer, FOOTER_COOKIE, FOOTER_SIZE};

use super::backend::Backend;
use super::OpenOptions;

/// Which footer copy an image was opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FooterSource {
    /// The footer at the end of the file (the normal case).
    End,
    /// The 511-byte footer of Virtual PC before 2004.
    ShortEnd,
    /// The copy at offset 0, because the footer at the end is damaged.
    Copy,
}

/// The format another tool's image (or a damaged VHD) starts with, by its signature.
pub(crate) fn other_format(b: &dyn Backend) -> Option<&'static str> {
    let len = b.len().ok()?;
    let mut head = vec![0u8; (len.min(crate::spec::sniff::SNIFF_BYTES as u64)) as usize];
    b.read_exact_at(&mut head, 0).ok()?;
    crate::spec::sniff::identify(&head)
}

/// Whether the backend has a `conectix` cookie at its end or at offset 0.
pub(crate) fn looks_like_vhd(b: &dyn Backend) -> bool {
    let Ok(len) = b.len() else { return false };
    let mut cookie = [0u8; 8];
    let at = |off: u64, c: &mut [u8; 8]| b.read_exact_at(c, off).is_ok() && *c == FOOTER_COOKIE;
    (len >= 512 && at(len - 512, &mut cookie))
        || (len >= 511 && len % 512 == 511 && at(len - 511, &mut cookie))
        || (len >= 512 && at(0, &mut cookie))
}

/// File name endings that promise a virtual disk of Microsoft's formats: a file named so
/// is never taken for raw bytes unless asked (`--source-format raw`).
const VHD_EXTENSIONS: [&str; 4] = ["vhd", "avhd", "vhdx", "avhdx"];

/// Whether `path`'s name ends in `.vhd`, `.avhd`, `.vhdx` or `.avhdx` (any case).
pub(crate) fn named_like_vhd(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VHD_EXTENSIONS.iter().any(|v| e.eq_ignore_ascii_case(v)))
}

fn read_footer_at(b: &dyn Backend, at: u64, short: bool) -> Option<Footer> {
    let mut buf = [0u8; FOOTER_SIZE];
    let n = if short { FOOTER_SIZE - 1 } else { FOOTER_SIZE };
    b.read_exact_at(&mut buf[..n], at).ok()?;
    Footer::decode(&buf).ok()
}

/// Picks the footer: the one at the end, the 511-byte one of old Virtual PC, or the copy
/// at offset 0 when the end is damaged. Returns it, where it came from, and where the
/// trailing footer sits (the offset where disk data must end).
pub(crate) fn read_footer(
    path: &Path,
    b: &dyn Backend,
    len: u64,
    opts: &OpenOptions,
    warnings: &mut Vec<String>,
) -> Result<(Footer, FooterSource, u64)> {
    if len < FOOTER_SIZE as u64 {
        return Err(Error::NotVhd {
            path: path.to_owned(),
            detail: format!("the file is {len} bytes, too short to hold a 512-byte footer"),
        });
    }
    let end = read_footer_at(b, len - 512, false);
    let short = if len % 512 == 511 {
        read_footer_at(b, len - 511, true)
    } else {
        None
    };
    let copy = read_footer_at(b, 0, false).filter(|f| f.cookie_ok() && f.disk_type.is_sparse());
    let good = |f: &Option<Footer>| f.as_ref().is_some_and(|f| f.cookie_ok() && f.checksum_ok());
    if good(&end) {
        return Ok((end.expect("checked"), FooterSource::End, len - 512));
    }
    if good(&short) {
        return Ok((short.expect("checked"), FooterSource::ShortEnd, len - 511));
    }
    if end.as_ref().is_some_and(|f| f.cookie == POISON_COOKIE) {
        return Err(Error::Unsupported {
            path: path.to_owned(),
            detail:
                "the footer cookie is `v_poison`: the disk was disabled on purpose by XenServer"
                    .into(),
        });
    }
    let end_state = match &end {
        Some(f) if f.cookie_ok() => format!(
            "the footer at {:#x} has a bad checksum (stored {:#010x}, computed {:#010x})",
            len - 512,
            f.checksum,
            f.computed_checksum()
        ),
        _ => format!("there is no footer at {:#x}", len - 512),
    };
    if let Some(c) = copy.as_ref().filter(|c| c.checksum_ok()) {
        warnings.push(format!(
            "{end_state}; using the footer copy at offset 0 (check --repair restores it)"
        ));
        // Blocks may reach the end of the file when the trailing footer was lost.
        let footer_at = if end.as_ref().is_some_and(|f| f.cookie_ok()) {
            len - 512
        } else {
            len
        };
        return Ok((c.clone(), FooterSource::Copy, footer_at));
    }
    // A footer with the right cookie but a bad checksum, and no better copy: libvhdi and
    // VirtualBox read such files; vhdkit does too unless asked to be strict, and says so.
    for (cand, source, at) in [
        (&end, FooterSource::End, len - 512),
        (&short, FooterSource::ShortEnd, len.saturating_sub(511)),
    ] {
        if let Some(f) = cand.as_ref().filter(|f| f.cookie_ok()) {
            if opts.strict {
                return Err(Error::corrupt(
                    path,
                    "footer",
                    at,
                    format!(
                        "checksum stored {:#010x}, computed {:#010x}",
                        f.checksum,
                        f.computed_checksum()
                    ),
                )
                .with_field("checksum"));
            }
            warnings.push(format!(
                "footer checksum is wrong (stored {:#010x}, computed {:#010x}); reading anyway",
                f.checksum,
                f.computed_checksum()
            ));
            return Ok((f.clone(), source, at));
        }
    }
    if let Some(c) = copy {
        if !opts.strict {
            warnings.push(format!(
                "{end_state}; the footer copy at offset 0 has a bad checksum too; reading it anyway"
            ));
            return Ok((c, FooterSource::Copy, len));
        }
    }
    let what = other_format(b)
        .map(|f| format!("; it is {f}"))
        .unwrap_or_default();
    Err(Error::NotVhd {
        path: path.to_owned(),
        detail: format!(
            "no `conectix` footer at the end ({:#x}) or at offset 0{what}",
            len - 512
        ),
    })
}
