//! What the CLI prints: every line goes through here, so that (1) text taken from an
//! image (a parent name, a locator path, a device path) cannot reach the terminal as
//! control characters — a crafted name could otherwise move the cursor, recolour or
//! rewrite what was printed — and (2) a closed stdout (`vhdkit info X | head -1`) ends
//! the command quietly instead of panicking.

use std::fmt::Display;
use std::io::Write;

use super::CliError;

/// `s` with every control character (C0, DEL, C1) and every bidirectional-override
/// character escaped as `\xNN` or `\u{NNNN}`: what a terminal shows is what the text is.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            if (c as u32) < 0x80 {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints one line on stdout, escaped. A closed pipe is returned as an error that
/// `main` turns into a quiet exit.
pub fn line(text: impl Display) -> Result<(), CliError> {
    let s = escape(&text.to_string());
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}").map_err(|e| CliError::io("writing to stdout", e))
}

/// Prints one line on stderr, escaped. Errors are ignored: there is nowhere left to
/// report them.
pub fn eline(text: impl Display) {
    let s = escape(&text.to_string());
    let _ = writeln!(std::io::stderr().lock(), "{s}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_plain_text_alone() {
        assert_eq!(escape("disk ünïcode.vhd"), "disk ünïcode.vhd");
    }

    #[test]
    fn escape_neutralises_terminal_sequences() {
        let fake = "x.vhd\u{1b}[2K\r\u{1b}[32mno problems found\u{1b}[0m\n\u{9b}31m\u{202e}";
        let e = escape(fake);
        assert!(!e.chars().any(|c| c.is_control()), "{e}");
        assert!(e.contains("\\x1b[2K\\x0d"), "{e}");
        assert!(e.contains("\\u{009b}") && e.contains("\\u{202e}"), "{e}");
    }
}
