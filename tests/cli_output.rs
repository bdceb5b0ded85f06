//! What people read: `info` sizes as `qemu-img info` writes them (`1 GiB (1073741824
//! bytes)`), the real file size of an image missing its end footer, `1 block` in the
//! singular, a warning that says "warning" once, a missing folder called a missing
//! directory; shell completions and the manual page generated from the command
//! definition.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn info_text(disk: &Path) -> String {
    vhdkit(["info".as_ref(), disk.as_os_str()])
        .ok()
        .stdout_str()
}

/// The value of `label:` in `info`'s text.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(|v| v.trim_start_matches(':').trim())
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
}

// --- messages --------------------------------------------------------------------------

#[test]
fn an_opening_warning_states_its_severity_once() {
    let dir = tempdir();
    let disk = dir.path().join("d.vhd");
    create(&disk, &["--type", "dynamic", "--size", "8M"]);
    // A wrong dynamic header checksum: read anyway, with a warning.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .expect("open");
    vhdkit_platform::FileExt::write_all_at(&f, &[0x5a; 4], 512 + 36).expect("write");

    let text = info_text(&disk);
    let doc = info(&disk);

    let line = text
        .lines()
        .find(|l| l.starts_with("warning:"))
        .unwrap_or_else(|| panic!("no warning in:\n{text}"));
    assert!(line.contains("dynamic header checksum"), "{line}");
    assert!(!line.contains("error:"), "{line}");
    let warnings = doc["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{doc}");
    let w = warnings[0].as_str().expect("string");
    assert!(!w.contains("error:") && !w.contains("warning:"), "{w}");
}

#[test]
fn a_missing_folder_is_no_such_directory() {
    let dir = tempdir();
    let disk = dir.path().join("d.vhd");
    create(&disk, &["--type", "dynamic", "--size", "8M"]);
    let child = dir.path().join("c.vhd");
    create(&child, &["--type", "differencing", "--parent", "d.vhd"]);
    let missing = dir.path().join("gone");
    let inside = missing.join("x.vhd");
    for args in [
        vec![
            OsStr::new("read"),
            disk.as_os_str(),
            "--output".as_ref(),
            inside.as_os_str(),
        ],
        vec![
            OsStr::new("convert"),
            disk.as_os_str(),
            inside.as_os_str(),
            "--type".as_ref(),
            "fixed".as_ref(),
        ],
        vec![
            OsStr::new("create"),
            inside.as_os_str(),
            "--type".as_ref(),
            "dynamic".as_ref(),
            "--size".as_ref(),
            "8M".as_ref(),
        ],
        vec![
            OsStr::new("set-parent"),
            child.as_os_str(),
            "--search".as_ref(),
            missing.as_os_str(),
            dir.path().as_os_str(),
        ],
    ] {
        let r = vhdkit(&args);

        let line = assert_failed_one_line(&r);
        assert!(
            line.ends_with(&format!("{}: no such directory", missing.display())),
            "{args:?}: {line}"
        );
    }
}

// --- info ------------------------------------------------------------------------------

#[test]
fn info_text_shows_sizes_human_readable_beside_the_bytes() {
    let dir = tempdir();
    let disk = dir.path().join("d.vhd");
    create(&disk, &["--type", "dynamic", "--size", "1G"]);

    let text = info_text(&disk);

    assert_eq!(field(&text, "virtual size"), "1 GiB (1073741824 bytes)");
    assert_eq!(field(&text, "block size"), "2 MiB (2097152 bytes)");
    let file = std::fs::metadata(&disk).expect("meta").len();
    assert_eq!(
        field(&text, "file size"),
        format!("{} KiB ({file} bytes)", file / 1024)
    );
    assert!(
        field(&text, "geometry (CHS)").ends_with("(1073479680 bytes)"),
        "{text}"
    );
}

#[test]
fn info_text_uses_qemu_img_rounding_for_odd_sizes() {
    let disk = fixture("vhdkit/vhdkit-dynamic-5000704.vhd");

    let text = info_text(&disk);

    assert_eq!(field(&text, "virtual size"), "4.77 MiB (5000704 bytes)");
}

#[test]
fn info_of_an_image_missing_its_end_footer_shows_the_real_file_size() {
    let disk = fixture("malformed/footer-missing.vhd");
    let real = std::fs::metadata(&disk).expect("meta").len();

    let text = info_text(&disk);
    let json = info(&disk);

    assert_eq!(field(&text, "footer used"), "copy", "{text}");
    assert!(
        field(&text, "file size").ends_with(&format!("({real} bytes)")),
        "{text}"
    );
    assert_eq!(json["file_size"], real, "{json}");
    assert_eq!(json["chain"][0]["file_size"], real, "{json}");
}

#[test]
fn info_chain_says_1_block_in_the_singular() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "8M"]);
    write_at(&base, 0, b"one block", &[]);
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", "base.vhd"]);

    let text = info_text(&child);

    assert!(text.contains("(dynamic, 1 block allocated)"), "{text}");
    assert!(
        text.contains("(differencing, 0 blocks allocated)"),
        "{text}"
    );
}

#[test]
fn operation_summary_says_1_block_in_the_singular_and_human_sizes() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "8M"]);
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", "base.vhd"]);
    write_at(&child, 0, &pattern(2, 1024), &[]);

    let r = vhdkit([
        "merge".as_ref(),
        child.as_os_str(),
        "--progress".as_ref(),
        OsStr::new("none"),
    ])
    .ok();

    let line = r.stdout_str();
    assert!(line.contains(": 1 block, "), "{line}");
    // However many bytes the merge moved (whole sectors or granules), in both forms.
    let (human, rest) = line
        .split_once(": 1 block, ")
        .map(|(_, r)| r.split_once(" (").expect("a size and its bytes"))
        .expect("1 block");
    assert!(human.ends_with("B"), "{line}");
    assert!(rest.contains(" bytes) merged into the parent"), "{line}");
}

// --- completions and man ---------------------------------------------------------------

/// The subcommands `vhdkit --help` lists.
fn subcommands() -> Vec<String> {
    let help = vhdkit(["--help"]).ok().stdout_str();
    let list = help
        .split("Commands:")
        .nth(1)
        .expect("a Commands: section")
        .split("\n\n")
        .next()
        .expect("its lines");
    let names: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 14, "{names:?}");
    names
}

#[test]
fn bash_completion_mentions_every_subcommand() {
    let script = vhdkit(["completions", "bash"]).ok().stdout_str();

    assert!(script.contains("complete -F _vhdkit"), "a bash completion");
    let top_level = script
        .lines()
        .find(|l| l.trim_start().starts_with("opts=\"-h -V"))
        .expect("the top-level word list");
    for name in subcommands() {
        assert!(
            top_level
                .split_whitespace()
                .any(|w| w.trim_matches('"') == name),
            "bash completion does not offer {name}: {top_level}"
        );
        assert!(
            script.contains(&format!("vhdkit,{name})")),
            "bash completion has no case for {name}"
        );
    }
    assert!(script.contains("--json"), "options too");
}

#[test]
fn bash_completion_script_is_valid_bash() {
    let script = vhdkit(["completions", "bash"]).ok().stdout;
    let Ok(mut bash) = Command::new("bash")
        .args(["-n", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    else {
        panic!("bash is missing");
    };
    use std::io::Write;
    bash.stdin
        .take()
        .expect("stdin")
        .write_all(&script)
        .expect("feed bash");
    let o = bash.wait_with_output().expect("bash -n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn zsh_and_fish_completions_name_the_subcommands() {
    for shell in ["zsh", "fish"] {
        let script = vhdkit(["completions", shell]).ok().stdout_str();
        for name in subcommands() {
            assert!(script.contains(&name), "{shell} completion lacks {name}");
        }
    }
}

#[test]
fn completions_for_an_unknown_shell_is_a_usage_error() {
    let r = vhdkit(["completions", "tcsh"]);

    assert_eq!(r.code, EXIT_USAGE, "{}", r.stderr);
}

#[test]
fn man_page_is_roff_with_a_title_and_every_subcommand() {
    let page = vhdkit(["man"]).ok().stdout_str();

    // The first request after clap_mangen's string definitions is the title.
    let first = page
        .lines()
        .find(|l| !l.starts_with(".ie") && !l.starts_with(".el"))
        .expect("a line");
    assert!(first.starts_with(".TH vhdkit 1"), "{first}");
    for section in ["NAME", "SYNOPSIS", "COMMANDS", "\"EXIT STATUS\""] {
        assert!(page.contains(&format!("\n.SH {section}\n")), "{section}");
    }
    for name in subcommands() {
        assert!(
            page.contains(&format!("\n.SS vhdkit {name}\n")),
            "the page lacks a section for {name}"
        );
    }
}

#[test]
fn man_page_renders_with_man_when_it_is_installed() {
    let page = vhdkit(["man"]).ok().stdout;
    let Ok(mut man) = Command::new("man")
        .args(["-l", "-"])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("note: man is missing; the roff text was checked alone");
        return;
    };
    use std::io::Write;
    man.stdin
        .take()
        .expect("stdin")
        .write_all(&page)
        .expect("feed man");
    let o = man.wait_with_output().expect("man -l -");
    let text = String::from_utf8_lossy(&o.stdout);

    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("EXIT STATUS"), "{text}");
    assert!(text.contains("vhdkit merge-to"), "{text}");
}
