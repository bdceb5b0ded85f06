//! The JSON documents vhdkit prints (each described in `docs/json.md`): the schema
//! version they all carry and the one way they are written.

use std::io::Write;

use serde::Serialize;

use super::CliError;

/// The version of every JSON document vhdkit prints, in its `"schema"` field. It goes
/// up when a field changes meaning or disappears, not when one is added.
pub const SCHEMA: u32 = 1;

/// A JSON document as vhdkit prints it: `"schema"` ([`SCHEMA`]) first, then the fields
/// of `T` (each document type describes only its own fields).
#[derive(Debug, Serialize)]
pub struct Doc<T> {
    schema: u32,
    #[serde(flatten)]
    body: T,
}

impl<T: Serialize> Doc<T> {
    /// `body` as a document of the current schema.
    pub fn new(body: T) -> Doc<T> {
        Doc {
            schema: SCHEMA,
            body,
        }
    }
}

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

    /// The JSON string a value serializes to.
    fn name<T: Serialize>(v: T) -> String {
        serde_json::to_value(v)
            .expect("json")
            .as_str()
            .expect("a string")
            .to_owned()
    }

    #[test]
    fn error_kinds_and_task_results_serialize_in_snake_case() {
        use vhdkit_format::{ErrorKind, VMTaskResult};
        assert_eq!(name(ErrorKind::Io), "io");
        assert_eq!(name(ErrorKind::ParentNotFound), "parent_not_found");
        assert_eq!(name(ErrorKind::DiskFull), "disk_full");
        let results: Vec<String> = VMTaskResult::ALL.into_iter().map(name).collect();
        assert_eq!(
            results,
            [
                "success",
                "cancelled",
                "unexpected_error",
                "out_of_memory_error",
                "disk_related_error",
                "incompatible_saved_state_error",
                "time_out_error",
                "illegal_value_error",
                "thread_crash_error"
            ]
        );
    }

    #[test]
    fn doc_puts_the_schema_first_then_the_body_fields_in_order() {
        #[derive(Serialize)]
        struct Body<'a> {
            b: u32,
            a: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            none: Option<u8>,
        }
        let body = Body {
            b: 2,
            a: "x",
            none: None,
        };
        let doc = Doc::new(&body);
        assert_eq!(
            to_string(&doc, false).expect("json"),
            r#"{"schema":1,"b":2,"a":"x"}"#
        );
        assert_eq!(
            to_string(&doc, true).expect("json"),
            "{\n  \"schema\": 1,\n  \"b\": 2,\n  \"a\": \"x\"\n}"
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
