//! The JSON documents vhdkit prints (each described in `docs/json.md`): the schema
//! version they all carry and the one way they are written.

use std::io::Write;

use serde::Serialize;

use super::CliError;

/// The version of every JSON document vhdkit prints, in its `"schema"` field. It goes
/// up when a field changes meaning or disappears, not when one is added.
pub const SCHEMA: u32 = 1;

/// Serializes `v` on one line (`pretty`: indented), with every control character that
/// JSON allows raw in a string (DEL, C1) and every bidirectional-override character
/// escaped as `\uNNNN`: what a terminal shows of the document is what it says, whatever
/// names an image carries (see `terminal`).
pub fn to_string<T: Serialize + ?Sized>(v: &T, pretty: bool) -> Result<String, CliError> {
    let s = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    }
    .map_err(|e| CliError::Other(format!("encoding JSON: {e}")))?;
    Ok(escape_controls(&s))
}

/// Prints `v` as an indented JSON document on stdout.
pub fn print<T: Serialize + ?Sized>(v: &T) -> Result<(), CliError> {
    let s = to_string(v, true)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")
        .and_then(|_| out.flush())
        .map_err(|e| CliError::io("writing to stdout", e))
}

/// Prints `v` as one JSON line on stderr (progress events, errors). Errors are ignored:
/// there is nowhere left to report them.
pub fn eprint<T: Serialize + ?Sized>(v: &T) {
    if let Ok(s) = to_string(v, false) {
        let _ = writeln!(std::io::stderr().lock(), "{s}");
    }
}

/// `ParentNotFound` → `parent_not_found`: how a Rust enum variant's name is spelled as
/// a JSON value (error kinds, task results).
pub fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `s` (serialized JSON) with the characters serde_json leaves raw inside strings but a
/// terminal may act on escaped as `\uNNNN`. They can only occur inside strings (JSON's
/// own syntax is ASCII without control characters), where the escape means the same
/// character.
fn escape_controls(s: &str) -> String {
    let risky = |c: char| {
        (c.is_control() && c as u32 >= 0x7f)
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(risky) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if risky(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_of_variant_names() {
        assert_eq!(snake_case("Io"), "io");
        assert_eq!(snake_case("ParentNotFound"), "parent_not_found");
        assert_eq!(snake_case("DiskRelatedError"), "disk_related_error");
        assert_eq!(
            snake_case(&format!("{:?}", vhdkit_format::ErrorKind::DiskFull)),
            "disk_full"
        );
    }

    #[test]
    fn to_string_escapes_terminal_controls_and_stays_the_same_json() {
        let name = "a\u{1b}[2Jb\u{7f}c\u{9b}31md\u{202e}e";
        let s = to_string(&serde_json::json!({ "name": name }), false).expect("json");
        assert!(!s.chars().any(|c| c.is_control()), "{s}");
        assert!(s.contains("\\u009b") && s.contains("\\u202e"), "{s}");
        let back: serde_json::Value = serde_json::from_str(&s).expect("parses");
        assert_eq!(back["name"], name);
    }
}
