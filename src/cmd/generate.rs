//! `vhdkit completions SHELL` and `vhdkit man`: generated from the clap definition
//! (clap_complete, clap_mangen), so they never drift from the options the binary takes.

use std::io::Write;

use clap::{Args, CommandFactory};

use super::{Cli, CliError, EXIT_OK};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell. bash: `source <(vhdkit completions bash)`; zsh: write it as `_vhdkit`
    /// in a directory of `$fpath`; fish: `vhdkit completions fish | source`.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {}

/// The exit codes (as `main.rs` states them) and where the JSON documents are described.
const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
.B 0
Success.
.TP
.B 1
\fBcompare\fR found a difference, or \fBcheck\fR found problems (with
\fB\-\-for azure\fR: a rule failed).
.TP
.B 2
A usage mistake.
.TP
.B 3
The operation failed: one line on standard error, or with \fB\-\-json\fR one JSON
object.
.TP
.B 130, 143, 129
An operation cancelled by SIGINT, SIGTERM or SIGHUP (what it left is said).
.SH "JSON OUTPUT"
With \fB\-\-json\fR every command prints JSON documents carrying a \fBschema\fR
version; docs/json.md in the source describes each.
"#;

pub fn completions(a: CompletionsArgs) -> Result<u8, CliError> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "vhdkit", &mut script);
    write_stdout(&script)
}

/// The manual page: the command, its options, and a section per subcommand.
pub fn man(_: ManArgs) -> Result<u8, CliError> {
    let cmd = Cli::command();
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut page)
        .and_then(|_| man.render_name_section(&mut page))
        .and_then(|_| man.render_synopsis_section(&mut page))
        .and_then(|_| man.render_description_section(&mut page))
        .and_then(|_| man.render_options_section(&mut page))
        .map_err(|e| CliError::io("rendering the manual page", e))?;
    // clap_mangen's own subcommand section lists names only: give each its synopsis
    // and options, as `git help` pages do.
    page.extend_from_slice(b".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("vhdkit {}", sub.get_name());
        let man = clap_mangen::Man::new(sub.clone().bin_name(&name));
        page.extend_from_slice(format!(".SS {name}\n").as_bytes());
        let mut body = Vec::new();
        man.render_synopsis_section(&mut body)
            .and_then(|_| man.render_description_section(&mut body))
            .and_then(|_| man.render_options_section(&mut body))
            .map_err(|e| CliError::io("rendering the manual page", e))?;
        // Inside COMMANDS a subcommand's sections become paragraphs: its synopsis, its
        // description, then its options (clap_mangen's `.TP` items).
        for line in String::from_utf8_lossy(&body).lines() {
            match line {
                ".SH SYNOPSIS" | ".SH DESCRIPTION" => page.extend_from_slice(b".PP\n"),
                ".SH OPTIONS" => page.extend_from_slice(b".PP\nOptions:\n"),
                _ => {
                    page.extend_from_slice(line.as_bytes());
                    page.push(b'\n');
                }
            }
        }
    }
    page.extend_from_slice(EXIT_STATUS.as_bytes());
    man.render_version_section(&mut page)
        .map_err(|e| CliError::io("rendering the manual page", e))?;
    write_stdout(&page)
}

fn write_stdout(bytes: &[u8]) -> Result<u8, CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(|e| CliError::io("writing to stdout", e))?;
    Ok(EXIT_OK)
}
