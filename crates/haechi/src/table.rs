//! What the CLI prints for lists: aligned tables with local times (`--json` prints the server's
//! JSON instead, for scripts).

use serde_json::Value;

/// Columns on a terminal a character takes: 2 for East Asian wide and fullwidth characters
/// (Hangul, CJK), 0 for combining marks, 1 otherwise.
fn width(s: &str) -> usize {
    s.chars()
        .map(|c| match c as u32 {
            0x0300..=0x036F | 0x200B..=0x200F => 0,
            0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

/// Control characters (a name someone typed, output of a script) are shown escaped, so a value
/// can never move the cursor or change the terminal.
fn printable(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect::<String>()
}

/// A table: a header row and rows of cells, printed with columns padded to their widest cell.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| printable(c)).collect());
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(width(c));
                }
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, c) in cells.enumerate() {
                let last = i + 1 == widths.len();
                out.push_str(c);
                if !last {
                    out.push_str(&" ".repeat(widths[i].saturating_sub(width(c)) + 2));
                }
            }
            out.trim_end().to_owned() + "\n"
        };
        let mut out = line(&mut self.header.iter().copied());
        for r in &self.rows {
            out.push_str(&line(&mut r.iter().map(String::as_str)));
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// A unix-millisecond instant as local time `YYYY-MM-DD HH:mm:ss` with the zone's abbreviation;
/// `-` when absent.
pub fn local_time(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "-".to_owned();
    };
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        Err(_) => ms.to_string(),
    }
}

/// A JSON field as text for a cell: strings bare, null/absent as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_with_korean_text_and_escape_controls() {
        let mut t = Table::new(&["NAME", "STATUS"]);
        t.row(vec!["재해복구".into(), "RUNNING".into()]);
        t.row(vec!["dr\u{1b}[2J".into(), "END".into()]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "NAME         STATUS");
        assert_eq!(lines[1], "재해복구     RUNNING");
        assert_eq!(lines[2], "dr\\u{1b}[2J  END");
    }

    #[test]
    fn times_are_local_with_the_zone() {
        assert_eq!(local_time(None), "-");
        let t = local_time(Some(1_700_000_000_000));
        assert!(t.len() >= 19, "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[13..14], ":");
    }
}
