//! What Azure requires of a VHD uploaded to it (a managed disk by direct upload, or a
//! page blob an image or disk is made from), as rules checked against the file's bytes.
//!
//! The rules and where Azure states them (`docs/format.md`, "Azure", has the quotes):
//!
//! - **footer**: the file ends with a VHD footer: cookie `conectix` in its last 512
//!   bytes (Azure's `InvalidVhd` error: "Disk is expected to have cookie value
//!   'conectix'").
//! - **checksum**: the footer's checksum is the one its content calls for.
//! - **fixed**: the disk is fixed: "The Hyper-V virtual hard disk (VHDX) format isn't
//!   supported in Azure, only fixed VHD" (dynamic and differencing VHDs are refused).
//! - **file-length**: the file is the virtual size plus the 512-byte footer, nothing
//!   else (Add-AzVhd: "in size N * MiB + 512 bytes"; direct upload takes the file's
//!   length "including the VHD footer").
//! - **size-mib**: "All VHDs on Azure must have a virtual size aligned to 1 MB (1024 ×
//!   1024 bytes)".
//! - **size-min** and **size-max**: a direct upload is "between 20972032 (20 MiB + 512
//!   bytes for the VHD footer) and 35183298347520 bytes (32 TiB + 512 bytes for the VHD
//!   footer)".
//! - **os-disk-size** (a warning, not a failure: a data disk may be larger): "The OS disk
//!   has a maximum capacity of 4,095 gibibytes (GiB)".
//!
//! The virtual size is the footer's current size, which is what Azure reads (qemu's
//! `force_size` option exists because Azure ignores the CHS geometry). The creator
//! application and host, the CHS geometry, the original size, the time stamp and the
//! unique id are not rules: a `qemu`/`qem2` footer whose geometry does not match its
//! size is fine when its current size is.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::open::{open_unlocked, Accept};
use crate::spec::{DiskType, Footer, FOOTER_SIZE};

/// Azure's alignment of the virtual size: 1 MiB.
pub const ALIGNMENT: u64 = 1 << 20;
/// The smallest virtual size a direct upload takes: 20 MiB.
pub const MIN_SIZE: u64 = 20 << 20;
/// The largest virtual size a direct upload takes: 32 TiB.
pub const MAX_SIZE: u64 = 32 << 40;
/// The largest OS disk: 4,095 GiB.
pub const MAX_OS_DISK_SIZE: u64 = 4095 << 30;

const FOOTER_LEN: u64 = FOOTER_SIZE as u64;

/// How a rule came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleStatus {
    /// The file meets the rule.
    Pass,
    /// The file breaks a rule Azure enforces: the upload (or the disk or image made from
    /// it) fails.
    Fail,
    /// Worth knowing, not a failure (an OS disk limit that a data disk may exceed).
    Warn,
}

impl RuleStatus {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            RuleStatus::Pass => "pass",
            RuleStatus::Fail => "fail",
            RuleStatus::Warn => "warn",
        }
    }
}

/// One rule and how the file fares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    /// The rule's name: `footer`, `checksum`, `fixed`, `file-length`, `size-mib`,
    /// `size-min`, `size-max`, `os-disk-size`.
    pub id: &'static str,
    /// The outcome.
    pub status: RuleStatus,
    /// What was found, in words (and how to fix it, when it fails).
    pub message: String,
    /// Where Azure states the rule.
    pub source: &'static str,
}

/// The rules checked against one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AzureReport {
    /// The file.
    pub path: PathBuf,
    /// Its length.
    pub file_size: u64,
    /// The footer's current size, when the file ends with a footer.
    pub virtual_size: Option<u64>,
    /// The footer's disk type (`fixed`, `dynamic`, `differencing`, …), when the file
    /// ends with a footer.
    pub disk_type: Option<String>,
    /// Every rule, in the order of the module documentation.
    pub rules: Vec<Rule>,
}

impl AzureReport {
    /// The rules the file fails.
    pub fn failed(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| r.status == RuleStatus::Fail)
    }

    /// Whether the file passes every rule Azure enforces (warnings allowed).
    pub fn conforms(&self) -> bool {
        self.failed().next().is_none()
    }
}

const SRC_COOKIE: &str = "https://learn.microsoft.com/troubleshoot/azure/virtual-machines/windows/vhd-not-supported-vm-azure";
const SRC_SPEC: &str =
    "Virtual Hard Disk Image Format Specification v1.0, hard disk footer: Checksum";
const SRC_FIXED: &str =
    "https://learn.microsoft.com/azure/virtual-machines/linux/create-upload-generic";
const SRC_LENGTH: &str = "https://learn.microsoft.com/powershell/module/az.compute/add-azvhd";
const SRC_UPLOAD: &str = "https://learn.microsoft.com/dotnet/api/azure.resourcemanager.compute.models.diskcreationdata.uploadsizebytes";
const SRC_OS: &str = "https://learn.microsoft.com/azure/virtual-machines/managed-disks-overview";

/// Checks the file at `path` against Azure's rules. Fails only when the file cannot be
/// read; every rule broken is in the report.
pub fn check_azure(path: impl AsRef<Path>) -> Result<AzureReport> {
    let path = path.as_ref();
    let mut file = open_unlocked(path, Accept::RegularOrBlock)?;
    let len = file
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::file(path, "finding the length of", e))?;
    let mut tail = vec![0u8; len.min(FOOTER_LEN) as usize];
    let at = len - tail.len() as u64;
    file.seek(SeekFrom::Start(at))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(|e| Error::io(path, "reading the footer", at, e))?;
    Ok(check_azure_bytes(path, len, &tail))
}

/// Checks a file of `file_len` bytes whose last bytes (up to 512) are `tail`.
pub fn check_azure_bytes(path: impl AsRef<Path>, file_len: u64, tail: &[u8]) -> AzureReport {
    let path = path.as_ref();
    let footer = Footer::decode(tail).ok();
    let mut rules = Vec::new();
    let mut rule = |id, status, message: String, source| {
        rules.push(Rule {
            id,
            status,
            message,
            source,
        })
    };
    let pass_or_fail = |ok: bool| {
        if ok {
            RuleStatus::Pass
        } else {
            RuleStatus::Fail
        }
    };
    let Some(f) = footer.filter(Footer::cookie_ok) else {
        let found = if file_len < FOOTER_LEN {
            format!("the file is {file_len} bytes: shorter than a footer")
        } else {
            format!(
                "the last 512 bytes are not a VHD footer (cookie {:?}, expected \"conectix\")",
                String::from_utf8_lossy(tail.get(..8).unwrap_or(tail))
            )
        };
        rule("footer", RuleStatus::Fail, found, SRC_COOKIE);
        let unknown = "cannot be judged: the file does not end with a VHD footer".to_owned();
        for (id, source) in [
            ("checksum", SRC_SPEC),
            ("fixed", SRC_FIXED),
            ("file-length", SRC_LENGTH),
            ("size-mib", SRC_FIXED),
            ("size-min", SRC_UPLOAD),
            ("size-max", SRC_UPLOAD),
        ] {
            rule(id, RuleStatus::Fail, unknown.clone(), source);
        }
        return AzureReport {
            path: path.to_owned(),
            file_size: file_len,
            virtual_size: None,
            disk_type: None,
            rules,
        };
    };
    let size = f.current_size;
    rule(
        "footer",
        RuleStatus::Pass,
        "the file ends with a VHD footer (cookie \"conectix\")".into(),
        SRC_COOKIE,
    );
    let computed = f.computed_checksum();
    rule(
        "checksum",
        pass_or_fail(f.checksum == computed),
        if f.checksum == computed {
            format!("the footer's checksum 0x{computed:08x} is right")
        } else {
            format!(
                "the footer's checksum is 0x{:08x}; its content calls for 0x{computed:08x}",
                f.checksum
            )
        },
        SRC_SPEC,
    );
    let fixed = f.disk_type == DiskType::Fixed;
    rule(
        "fixed",
        pass_or_fail(fixed),
        if fixed {
            "the disk is fixed".into()
        } else {
            format!(
                "the disk is {}: Azure takes fixed VHDs only (vhdkit convert --type fixed --align 1M)",
                f.disk_type
            )
        },
        SRC_FIXED,
    );
    let want = size.checked_add(FOOTER_LEN);
    rule(
        "file-length",
        pass_or_fail(want == Some(file_len)),
        match want {
            Some(w) if w == file_len => {
                format!("the file is the virtual size plus the 512-byte footer ({file_len} bytes)")
            }
            Some(w) => format!(
                "the file is {file_len} bytes; a fixed VHD of {size} bytes is {w}: the data, then the footer, nothing else"
            ),
            None => format!("the virtual size {size} is absurd"),
        },
        SRC_LENGTH,
    );
    let mib = size.is_multiple_of(ALIGNMENT);
    rule(
        "size-mib",
        pass_or_fail(mib),
        if mib {
            format!(
                "the virtual size {size} bytes is a whole number of MiB ({})",
                size / ALIGNMENT
            )
        } else {
            format!(
                "the virtual size {size} bytes is not a whole number of MiB (vhdkit convert --align 1M rounds it up to {})",
                size.div_ceil(ALIGNMENT).saturating_mul(ALIGNMENT)
            )
        },
        SRC_FIXED,
    );
    rule(
        "size-min",
        pass_or_fail(size >= MIN_SIZE),
        if size >= MIN_SIZE {
            format!("the virtual size is at least 20 MiB ({MIN_SIZE} bytes)")
        } else {
            format!("the virtual size {size} bytes is under the 20 MiB ({MIN_SIZE} bytes) an upload takes")
        },
        SRC_UPLOAD,
    );
    rule(
        "size-max",
        pass_or_fail(size <= MAX_SIZE),
        if size <= MAX_SIZE {
            format!("the virtual size is at most 32 TiB ({MAX_SIZE} bytes)")
        } else {
            format!("the virtual size {size} bytes is over the 32 TiB ({MAX_SIZE} bytes) an upload takes")
        },
        SRC_UPLOAD,
    );
    rule(
        "os-disk-size",
        if size <= MAX_OS_DISK_SIZE {
            RuleStatus::Pass
        } else {
            RuleStatus::Warn
        },
        if size <= MAX_OS_DISK_SIZE {
            "the virtual size is at most 4,095 GiB: it can be an OS disk".into()
        } else {
            "the virtual size is over 4,095 GiB: it can be a data disk, not an OS disk".into()
        },
        SRC_OS,
    );
    AzureReport {
        path: path.to_owned(),
        file_size: file_len,
        virtual_size: Some(size),
        disk_type: Some(f.disk_type.to_string()),
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed_footer(size: u64) -> [u8; FOOTER_SIZE] {
        Footer::new(DiskType::Fixed, size).encode()
    }

    fn statuses(r: &AzureReport) -> Vec<(&str, RuleStatus)> {
        r.rules.iter().map(|r| (r.id, r.status)).collect()
    }

    fn status(r: &AzureReport, id: &str) -> RuleStatus {
        r.rules
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.status)
            .unwrap_or_else(|| panic!("no rule {id}"))
    }

    #[test]
    fn an_aligned_fixed_disk_passes_every_rule() {
        let size = 32 << 20;
        let r = check_azure_bytes(Path::new("d"), size + 512, &fixed_footer(size));
        assert!(r.conforms(), "{:?}", statuses(&r));
        assert!(r.rules.iter().all(|r| r.status == RuleStatus::Pass));
        assert_eq!(r.rules.len(), 8);
    }

    #[test]
    fn each_rule_fails_alone() {
        let p = Path::new("d");
        // Not a whole number of MiB.
        let size = 5_000_704 + (20 << 20);
        let r = check_azure_bytes(p, size + 512, &fixed_footer(size));
        assert_eq!(r.failed().map(|r| r.id).collect::<Vec<_>>(), ["size-mib"]);
        // Too small, too large (the OS-disk limit only warns).
        let r = check_azure_bytes(p, (16 << 20) + 512, &fixed_footer(16 << 20));
        assert_eq!(r.failed().map(|r| r.id).collect::<Vec<_>>(), ["size-min"]);
        let big = (33u64 << 40) + 512;
        let r = check_azure_bytes(p, big, &fixed_footer(33 << 40));
        assert_eq!(r.failed().map(|r| r.id).collect::<Vec<_>>(), ["size-max"]);
        assert_eq!(status(&r, "os-disk-size"), RuleStatus::Warn);
        let r = check_azure_bytes(p, (5000u64 << 30) + 512, &fixed_footer(5000 << 30));
        assert!(r.conforms());
        assert_eq!(status(&r, "os-disk-size"), RuleStatus::Warn);
        // Padding after the data, or a file cut short.
        let size = 32 << 20;
        for len in [size + 1024, size] {
            let r = check_azure_bytes(p, len, &fixed_footer(size));
            assert_eq!(
                r.failed().map(|r| r.id).collect::<Vec<_>>(),
                ["file-length"]
            );
        }
        // A damaged checksum.
        let mut f = fixed_footer(size);
        f[100] ^= 1;
        let r = check_azure_bytes(p, size + 512, &f);
        assert_eq!(r.failed().map(|r| r.id).collect::<Vec<_>>(), ["checksum"]);
        // A dynamic disk's footer.
        let f = Footer::new(DiskType::Dynamic, size).encode();
        let r = check_azure_bytes(p, size + 512, &f);
        assert_eq!(r.failed().map(|r| r.id).collect::<Vec<_>>(), ["fixed"]);
    }

    #[test]
    fn a_file_without_a_footer_fails_every_rule_it_cannot_judge() {
        let r = check_azure_bytes(Path::new("raw"), 1 << 20, &[0u8; 512]);
        assert_eq!(r.failed().count(), 7);
        assert_eq!(r.virtual_size, None);
        let r = check_azure_bytes(Path::new("tiny"), 3, &[1, 2, 3]);
        assert!(r.rules[0].message.contains("shorter than a footer"));
        assert!(!r.conforms());
    }

    /// qemu-img's footers: creator `qemu` or `qem2`, a geometry that need not match the
    /// current size. Only the current size counts.
    #[test]
    fn creator_and_geometry_are_not_rules() {
        let size = 64 << 20;
        let mut f = Footer::new(DiskType::Fixed, size);
        f.creator_app = *b"qem2";
        f.creator_host_os = *b"Wi2k";
        f.geometry = crate::spec::Geometry::from_total_sectors(size / 512 - 1000);
        f.original_size = size - 4096;
        let r = check_azure_bytes(Path::new("q"), size + 512, &f.encode());
        assert!(r.conforms(), "{:?}", statuses(&r));
    }
}
