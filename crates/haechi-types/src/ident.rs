//! Names people type and other people read: user ids, role names, task, node, workflow, locker
//! and credential names. One rule for all of them, so a look-alike of an existing name cannot
//! be created through any API family (issue 18 item 11).
//!
//! - A name is already in Unicode NFKC form: `ａｄｍｉｎ` (fullwidth) or `ﬁle` (a ligature) is
//!   refused, with the form to use instead.
//! - It holds no control (Cc), format (Cf: zero-width spaces and joiners, right-to-left and other
//!   direction overrides, byte-order marks), line or paragraph separator (Zl, Zp), private-use
//!   (Co), surrogate (Cs) or unassigned (Cn) character.
//! - Whitespace: none at all, or (for display names such as role names) only U+0020 SPACE, one
//!   at a time, not first or last.
//! - [`fold`] gives the form two names are compared in when they must be unique: NFKC, then
//!   case-folded (upper- then lower-cased), then NFKC again, so `ADMIN` and `admin` are one name.
//!
//! Letters of different scripts that look alike (Latin `a`, Cyrillic `а`) are not caught: that
//! needs the Unicode confusables table, which this does not carry.

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::{Error, Result};

/// Whether a name may hold spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spaces {
    /// No whitespace at all (ids that travel in URLs, logins, file names).
    Refused,
    /// Single U+0020 spaces between other characters (display names).
    Inner,
    /// U+0020 spaces anywhere (names whose existing rules allowed them).
    Free,
}

/// Checks the name `value` of request field `field`: 1 to `max_chars` characters, under the
/// rules of this module. The error names the field and the first offending character.
pub fn check(field: &str, value: &str, max_chars: usize, spaces: Spaces) -> Result<()> {
    let n = value.chars().count();
    if n == 0 || n > max_chars {
        return Err(Error::field(
            field,
            format_args!("must be 1 to {max_chars} characters (got {n})"),
        ));
    }
    for (i, c) in value.chars().enumerate() {
        if let Some(what) = forbidden(c) {
            return Err(Error::field(
                field,
                format_args!(
                    "must not contain {} ({what}) at character {}",
                    Shown(c),
                    i + 1
                ),
            ));
        }
        if c.is_whitespace() {
            let ok = spaces != Spaces::Refused && c == ' ';
            if !ok {
                return Err(Error::field(
                    field,
                    format_args!("must not contain the white space {}", Shown(c)),
                ));
            }
        }
    }
    if spaces == Spaces::Inner
        && (value.starts_with(' ') || value.ends_with(' ') || value.contains("  "))
    {
        return Err(Error::field(
            field,
            "must not start or end with a space or hold two spaces in a row",
        ));
    }
    let nfkc: String = value.nfkc().collect();
    if nfkc != value {
        return Err(Error::field(
            field,
            format_args!(
                "must be written in its plain (Unicode NFKC) form: {nfkc:?} instead of {value:?}"
            ),
        ));
    }
    Ok(())
}

/// Refuses ASCII control characters (NUL, newline, ...) in `value` of `field`: for free text
/// that names something on a command line or in a file (a script name), where [`check`] would
/// be too strict.
pub fn check_no_control(field: &str, value: &str) -> Result<()> {
    match value.chars().find(|c| forbidden(*c).is_some()) {
        Some(c) => Err(Error::field(
            field,
            format_args!(
                "must not contain {} ({})",
                Shown(c),
                forbidden(c).unwrap_or("")
            ),
        )),
        None => Ok(()),
    }
}

/// Checks that `value` of `field` is a host: an IPv4 or IPv6 address, or a DNS name (labels of
/// ASCII letters, digits, `-` and `_`, 1 to 63 characters each, not starting or ending with `-`;
/// at most 253 characters; one trailing dot allowed). Paths such as `../../etc/passwd`, URLs,
/// ports and spaces are refused.
pub fn check_host(field: &str, value: &str) -> Result<()> {
    if value.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let bad = |why: &str| {
        Err(Error::field(
            field,
            format_args!("{value:?} is not an IP address or a host name: {why}"),
        ))
    };
    let name = value.strip_suffix('.').unwrap_or(value);
    if name.is_empty() || name.len() > 253 {
        return bad("must be 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated part must be 1 to 63 characters");
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return bad(&format!(
                "{} is not allowed (letters, digits, '-', '_' and '.')",
                Shown(c)
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a part must not start or end with '-'");
        }
    }
    Ok(())
}

/// The form in which two names are the same name: NFKC, case-folded, NFKC.
pub fn fold(value: &str) -> String {
    let nfkc: String = value.nfkc().collect();
    nfkc.to_uppercase().to_lowercase().nfkc().collect()
}

fn forbidden(c: char) -> Option<&'static str> {
    Some(match c.general_category() {
        GeneralCategory::Control => "a control character",
        GeneralCategory::Format => "an invisible format character",
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => "a line separator",
        GeneralCategory::PrivateUse => "a private-use character",
        GeneralCategory::Surrogate => "a surrogate",
        GeneralCategory::Unassigned => "an unassigned code point",
        _ => return None,
    })
}

/// A character as an error message shows it: printable ones as themselves, others as `U+XXXX`.
struct Shown(char);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        if forbidden(c).is_some() || c.is_whitespace() {
            write!(f, "U+{:04X}", c as u32)
        } else {
            write!(f, "'{c}'")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(value: &str, spaces: Spaces) -> String {
        check("name", value, 64, spaces)
            .err()
            .unwrap_or_else(|| panic!("{value:?} must be refused"))
            .message
    }

    #[test]
    fn look_alikes_are_refused() {
        assert!(refused("ａｄｍｉｎ", Spaces::Refused).contains("\"admin\""));
        assert!(refused("ad\u{200B}min", Spaces::Refused).contains("U+200B"));
        assert!(refused("admin\u{202E}", Spaces::Refused).contains("U+202E"));
        assert!(refused("\u{FEFF}admin", Spaces::Refused).contains("U+FEFF"));
        assert!(refused("ad\u{0}min", Spaces::Refused).contains("U+0000"));
        assert!(refused("ad\nmin", Spaces::Refused).contains("U+000A"));
        assert!(refused("ad min", Spaces::Refused).contains("U+0020"));
        assert!(refused("ad\u{3000}min", Spaces::Inner).contains("U+3000"));
        assert!(refused("\u{E000}", Spaces::Refused).contains("private-use"));
        assert!(refused("\u{0378}", Spaces::Refused).contains("unassigned"));
        assert!(refused("ﬁle", Spaces::Refused).contains("\"file\""));
        assert!(refused(" Ops", Spaces::Inner).contains("space"));
        assert!(refused("Ops  Team", Spaces::Inner).contains("space"));
        assert!(refused("", Spaces::Inner).contains("1 to 64"));
        assert!(refused(&"a".repeat(65), Spaces::Inner).contains("1 to 64"));
    }

    #[test]
    fn ordinary_names_pass() {
        for v in ["admin", "kim.minjun", "김민준", "user_01-x", "Ünïcödé"] {
            check("name", v, 64, Spaces::Refused).unwrap();
        }
        for v in ["System Admin", "DB 정책 관리자"] {
            check("name", v, 64, Spaces::Inner).unwrap();
        }
    }

    #[test]
    fn fold_makes_case_and_width_variants_one_name() {
        assert_eq!(fold("ADMIN"), fold("admin"));
        assert_eq!(fold("Admin"), "admin");
        assert_eq!(fold("ａｄｍｉｎ"), "admin");
        assert_eq!(fold("STRASSE"), fold("straße"));
        assert_ne!(fold("admin"), fold("admins"));
    }

    #[test]
    fn hosts() {
        for ok in [
            "127.0.0.1",
            "::1",
            "db-1.example.com",
            "db_primary",
            "orders.",
            "10.0.0.5",
        ] {
            check_host("serverAddress", ok).unwrap();
        }
        for bad in [
            "../../../../etc/passwd",
            "/var/run/postgresql",
            "db host",
            "-db",
            "db..example",
            "http://db",
            "db:5432",
            "",
            "ｄｂ",
            "db\u{0}",
        ] {
            assert!(check_host("serverAddress", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn control_characters_in_free_text() {
        assert!(check_no_control("scriptName", "backup.sh").is_ok());
        assert!(check_no_control("scriptName", "백업 스크립트.sh").is_ok());
        let e = check_no_control("scriptName", "a\u{0}b").unwrap_err();
        assert!(e.message.contains("U+0000"), "{}", e.message);
        assert!(check_no_control("scriptName", "a\u{202E}b").is_err());
    }
}
