//! Differential: what `VhdFile` opens strictly (footer at the end) `check_file` must not
//! call an error, and what `check_file` finds no error in must open.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vhdkit_format::check::check_file;
use vhdkit_format::image::{Backend, FooterSource, MemBackend};
use vhdkit_format::spec::Severity;
use vhdkit_format::{DiskKind, OpenOptions, VhdFile};
use vhdkit_fuzz::path_of;

fuzz_target!(|data: &[u8]| {
    let problems = check_file(&MemBackend::new(data.to_vec())).expect("memory never fails");
    let errors: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| p.to_string())
        .collect();
    let backend: Arc<dyn Backend> = Arc::new(MemBackend::new(data.to_vec()));
    let opts = OpenOptions::new().strict(true).no_parents(true);
    match VhdFile::from_backend(path_of(0), backend, &opts) {
        Ok(f) => {
            if f.kind() != DiskKind::HostDrive && f.footer_source() != FooterSource::Copy {
                assert!(
                    errors.is_empty(),
                    "opened strictly, but check finds {errors:#?}"
                );
            }
        }
        Err(e) => {
            let backend: Arc<dyn Backend> = Arc::new(MemBackend::new(data.to_vec()));
            let lenient =
                VhdFile::from_backend(path_of(0), backend, &OpenOptions::new().no_parents(true));
            if errors.is_empty()
                && !matches!(
                    e,
                    vhdkit_format::Error::HostDriveNotFound { .. }
                        | vhdkit_format::Error::Unsupported { .. }
                        // A policy refusal (host-drive links need an explicit opt-in),
                        // not a format error: check has nothing to report about it.
                        | vhdkit_format::Error::NotAllowed { .. }
                )
            {
                assert!(
                    lenient.is_ok(),
                    "check finds no error, but open fails: {e} / {:?}",
                    lenient.err()
                );
            }
        }
    }
});
