//! The text log format's fields: what a record's message and fields hold is written with every
//! control character escaped, so text from outside (an agent's host name or message, a client's
//! input quoted in an error) cannot start a forged log line with a newline or move the cursor
//! with an escape sequence (issue 26 item 15). The JSON log format escapes on its own.

use std::fmt::{self, Write};

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::FormatFields;

/// `DefaultFields`, then every control character (C0, DEL, C1), the Unicode line and paragraph
/// separators and the bidirectional overrides written as `\n`, `\r`, `\t` or `\u{..}`.
#[derive(Debug, Default)]
pub struct EscapedFields(DefaultFields);

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut raw = String::new();
        self.0.format_fields(Writer::new(&mut raw), fields)?;
        write_escaped(&mut writer, &raw)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Writes `s` with the characters of [`needs_escape`] escaped.
pub fn write_escaped(out: &mut impl Write, s: &str) -> fmt::Result {
    for c in s.chars() {
        match c {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if needs_escape(c) => write!(out, "\\u{{{:x}}}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// The tracing filter for the configured `log_level`: the level, and rustls's handshake
/// warnings only as errors unless the level names rustls itself. rustls warns once per TLS
/// connection whose client sends an IP address as the server name (wrk and some HTTP clients
/// do when given `https://10.0.0.5/`): a server reached by address would log a line per
/// connection that says nothing about Haechi.
pub fn filter_for(level: &str) -> String {
    if level.contains("rustls") {
        level.to_owned()
    } else {
        format!("{level},rustls::msgs::handshake=error")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_configured_level_quiets_rustls_handshake_warnings_unless_it_names_rustls() {
        assert_eq!(
            super::filter_for("info"),
            "info,rustls::msgs::handshake=error"
        );
        assert_eq!(
            super::filter_for("debug,rustls=trace"),
            "debug,rustls=trace"
        );
        for level in ["info", "warn", "haechi=debug,info"] {
            assert!(tracing_subscriber::EnvFilter::try_new(super::filter_for(level)).is_ok());
        }
    }

    use super::*;

    #[test]
    fn newlines_escapes_and_bidi_overrides_are_escaped() {
        let mut s = String::new();
        write_escaped(&mut s, "a\nb\r\tc\x1b[31md\u{85}e\u{202e}f ok é").unwrap();
        assert_eq!(s, "a\\nb\\r\\tc\\u{1b}[31md\\u{85}e\\u{202e}f ok é");
    }
}
