//! Secrets typed in statement text, removed before the text is stored in the audit.
//!
//! The text is lexed as its database lexes it (strings, quoted identifiers, comments, dollar
//! quotes, MySQL executable comments read as code) and a string literal is replaced by
//! `'***'` when it holds a secret:
//!
//! - the literal follows a word that names a password (`PASSWORD`, `ENCRYPTED PASSWORD`,
//!   `PASSWORD(...)`, `OLD_PASSWORD(...)`, `MASTER_PASSWORD =`, `SOURCE_PASSWORD =`,
//!   `IDENTIFIED WITH mysql_native_password BY`, an `OPTIONS (password '...')` key, ...), with
//!   only `=`, `(`, `,` or `BY`/`AS`/`USING` between them;
//! - after `IDENTIFIED` in a statement (MySQL `CREATE USER`/`ALTER USER`/`GRANT ...
//!   IDENTIFIED BY|AS|USING '...'`), the literal follows `BY`, `AS` or `USING`;
//! - in `SET PASSWORD [FOR ...] = ...`, every literal after the `=`;
//! - inside any literal, the value of a `password=`/`sslpassword=` connection-string key and
//!   the password of a `scheme://user:password@host` URI are replaced (`dblink_connect`,
//!   `CREATE SUBSCRIPTION ... CONNECTION`, `CREATE SERVER ... OPTIONS`).
//!
//! Text that does not lex (an unterminated literal) after such a word is cut there, and the
//! cut is marked. The rest of the statement is kept as it was typed.

use std::borrow::Cow;

/// Which database's lexical rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
}

/// What stands in for a secret.
pub const MASK: &str = "'***'";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// A word: keyword or identifier (quoted or not).
    Word,
    /// A string literal (the span includes its quotes and any prefix).
    Str,
    /// One punctuation character.
    Punct(u8),
    /// A literal that never ends: the rest of the text.
    Unterminated,
}

struct Token {
    kind: Tok,
    start: usize,
    end: usize,
}

/// `sql` with its secrets masked (borrowed when there were none).
pub fn redact(sql: &str, dialect: Dialect) -> Cow<'_, str> {
    let toks = lex(sql, dialect);
    let word = |t: &Token| sql[t.start..t.end].trim_matches(|c| c == '"' || c == '`');
    let upper = |t: &Token| word(t).to_ascii_uppercase();
    let mut masks: Vec<(usize, usize)> = Vec::new();
    let mut identified = false;
    let mut set_password_eq = false;
    let set_password = toks.len() >= 2
        && toks[0].kind == Tok::Word
        && toks[1].kind == Tok::Word
        && upper(&toks[0]) == "SET"
        && upper(&toks[1]) == "PASSWORD";
    for (i, t) in toks.iter().enumerate() {
        match t.kind {
            Tok::Word => {
                if upper(t) == "IDENTIFIED" {
                    identified = true;
                }
            }
            Tok::Punct(b'=') if set_password => set_password_eq = true,
            Tok::Punct(b';') => {
                identified = false;
                set_password_eq = false;
            }
            Tok::Str | Tok::Unterminated => {
                let secret = set_password_eq || follows_password(&toks[..i], sql, identified);
                if secret {
                    masks.push((t.start, t.end));
                }
            }
            Tok::Punct(_) => {}
        }
    }
    let mut out = String::new();
    let mut at = 0;
    let mut changed = false;
    for t in &toks {
        if !matches!(t.kind, Tok::Str | Tok::Unterminated) {
            continue;
        }
        let masked = masks.iter().any(|&(s, _)| s == t.start);
        let lit = &sql[t.start..t.end];
        let replacement: Option<Cow<'_, str>> = if masked {
            Some(if t.kind == Tok::Unterminated {
                Cow::Owned(format!("{MASK} [cut: the rest did not lex]"))
            } else {
                Cow::Borrowed(MASK)
            })
        } else {
            let inner = in_literal(lit);
            matches!(inner, Cow::Owned(_)).then_some(inner)
        };
        if let Some(r) = replacement {
            out.push_str(&sql[at..t.start]);
            out.push_str(&r);
            at = t.end;
            changed = true;
        }
    }
    if !changed {
        return Cow::Borrowed(sql);
    }
    out.push_str(&sql[at..]);
    Cow::Owned(out)
}

/// Whether the literal after `before` is a password by the words before it.
fn follows_password(before: &[Token], sql: &str, identified: bool) -> bool {
    for t in before.iter().rev().take(4) {
        match t.kind {
            Tok::Punct(b'=' | b'(' | b',') => continue,
            Tok::Word => {
                let w = sql[t.start..t.end]
                    .trim_matches(|c| c == '"' || c == '`')
                    .to_ascii_uppercase();
                if w.contains("PASSWORD") {
                    return true;
                }
                if matches!(w.as_str(), "BY" | "AS" | "USING") {
                    if identified {
                        return true;
                    }
                    continue;
                }
                return false;
            }
            _ => return false,
        }
    }
    false
}

/// A literal with connection-string and URI passwords inside it masked.
fn in_literal(lit: &str) -> Cow<'_, str> {
    let b = lit.as_bytes();
    let lower = lit.to_ascii_lowercase();
    // (start, end) of each secret value.
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(off) = lower[from..].find("password") {
        let at = from + off;
        from = at + "password".len();
        let word_start = if lower[..at].ends_with("ssl") {
            at - 3
        } else {
            at
        };
        if word_start > 0
            && (b[word_start - 1].is_ascii_alphanumeric() || b[word_start - 1] == b'_')
        {
            continue;
        }
        let mut i = from;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        if lit[i..].starts_with("''") {
            // A quoted value: its quotes are doubled inside the SQL literal.
            i += 2;
            while i < b.len() && !lit[i..].starts_with("''") {
                i += 1;
            }
            i = (i + 2).min(b.len());
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'\'' {
                i += 1;
            }
        }
        if i > start {
            spans.push((start, i));
        }
        from = i.max(from);
    }
    // scheme://user:password@host
    let mut from = 0;
    while let Some(off) = lit[from..].find("://") {
        let user_start = from + off + 3;
        from = user_start;
        let end = lit[user_start..]
            .find(|c: char| c == '/' || c == '\'' || c.is_whitespace())
            .map_or(lit.len(), |e| user_start + e);
        let Some(at) = lit[user_start..end].rfind('@') else {
            continue;
        };
        if let Some(colon) = lit[user_start..user_start + at].find(':') {
            spans.push((user_start + colon + 1, user_start + at));
        }
    }
    if spans.is_empty() {
        return Cow::Borrowed(lit);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(lit.len());
    let mut at = 0;
    for (s, e) in spans {
        if s < at {
            continue;
        }
        out.push_str(&lit[at..s]);
        out.push_str("***");
        at = e;
    }
    out.push_str(&lit[at..]);
    Cow::Owned(out)
}

/// Splits `sql` into the tokens redaction looks at (whitespace and comments are dropped;
/// MySQL executable comments are read as code).
fn lex(sql: &str, dialect: Dialect) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let my = dialect == Dialect::MySql;
    while i < b.len() {
        let c = b[i];
        let start = i;
        // Comments.
        if c == b'-'
            && b.get(i + 1) == Some(&b'-')
            && (!my || b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()))
        {
            i = skip_line(b, i);
            continue;
        }
        if my && c == b'#' {
            i = skip_line(b, i);
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            if my && matches!(b.get(i + 2), Some(b'!') | Some(b'M')) {
                // `/*!NNNNN ... */` and `/*M!NNNNN ... */`: the server runs what is inside.
                i += 2;
                if b.get(i) == Some(&b'M') {
                    i += 1;
                }
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                continue;
            }
            i = skip_block_comment(b, i + 2, !my);
            continue;
        }
        if my && c == b'*' && b.get(i + 1) == Some(&b'/') {
            // The end of an executable comment.
            i += 2;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // String literals (with an optional prefix).
        let quote_at = if matches!(c, b'E' | b'e' | b'B' | b'b' | b'X' | b'x' | b'N' | b'n')
            && b.get(i + 1) == Some(&b'\'')
        {
            Some((i + 1, !my && matches!(c, b'E' | b'e')))
        } else if !my
            && matches!(c, b'U' | b'u')
            && b.get(i + 1) == Some(&b'&')
            && b.get(i + 2) == Some(&b'\'')
        {
            Some((i + 2, false))
        } else if c == b'\'' {
            Some((i, my))
        } else if my && c == b'"' {
            Some((i, true))
        } else if my && c == b'_' {
            // A character set introducer: `_utf8mb4'...'`.
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            (b.get(j) == Some(&b'\'') || b.get(j) == Some(&b'"')).then_some((j, true))
        } else {
            None
        };
        if let Some((q, backslash)) = quote_at {
            i = push_literal(
                &mut toks,
                start,
                end_of_quoted(b, q, b[q], backslash),
                b.len(),
            );
            continue;
        }
        // Dollar quotes (PostgreSQL): `$tag$ ... $tag$`.
        if !my && c == b'$' {
            if let Some(tag_end) = dollar_tag(b, i) {
                let tag = &sql[i..tag_end];
                let end = sql[tag_end..]
                    .find(tag)
                    .map(|off| tag_end + off + tag.len());
                i = push_literal(&mut toks, start, end, b.len());
                continue;
            }
        }
        // Quoted identifiers.
        let ident_quote = if my { b'`' } else { b'"' };
        if c == ident_quote {
            let end = end_of_quoted(b, i, c, false).unwrap_or(b.len());
            toks.push(Token {
                kind: Tok::Word,
                start,
                end,
            });
            i = end;
            continue;
        }
        if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 || c == b'$' {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80 || b[i] == b'$')
            {
                i += 1;
            }
            toks.push(Token {
                kind: Tok::Word,
                start,
                end: i,
            });
            continue;
        }
        toks.push(Token {
            kind: Tok::Punct(c),
            start,
            end: i + 1,
        });
        i += 1;
    }
    toks
}

/// Adds the literal starting at `start` and ending at `end` (`None`: it never ends, so it runs
/// to `len`); where lexing goes on.
fn push_literal(toks: &mut Vec<Token>, start: usize, end: Option<usize>, len: usize) -> usize {
    let (kind, end) = match end {
        Some(end) => (Tok::Str, end),
        None => (Tok::Unterminated, len),
    };
    toks.push(Token { kind, start, end });
    end
}

fn skip_line(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    i
}

/// The end of a block comment whose text starts at `i` (PostgreSQL's nest).
fn skip_block_comment(b: &[u8], mut i: usize, nests: bool) -> usize {
    let mut depth = 1;
    while i < b.len() {
        if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
            continue;
        }
        if nests && b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
            continue;
        }
        i += 1;
    }
    b.len()
}

/// The end (past the closing quote) of the quoted text opening at `q`; `None` if it never
/// closes. A doubled quote stands for itself; with `backslash`, a backslash escapes.
fn end_of_quoted(b: &[u8], q: usize, quote: u8, backslash: bool) -> Option<usize> {
    let mut i = q + 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// The end of a dollar-quote tag starting at `i` (`$$` or `$tag$`), if one starts there.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
        return None;
    }
    let mut j = i + 1;
    if b.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(sql: &str) -> String {
        redact(sql, Dialect::Postgres).into_owned()
    }

    fn my(sql: &str) -> String {
        redact(sql, Dialect::MySql).into_owned()
    }

    #[test]
    fn postgres_password_forms_are_masked() {
        for (sql, want) in [
            (
                "ALTER ROLE bob PASSWORD 's3cret'",
                "ALTER ROLE bob PASSWORD '***'",
            ),
            (
                "alter user bob with encrypted password 's3cret' valid until '2030-01-01'",
                "alter user bob with encrypted password '***' valid until '2030-01-01'",
            ),
            (
                "CREATE ROLE bob LOGIN PASSWORD $$s3cret$$",
                "CREATE ROLE bob LOGIN PASSWORD '***'",
            ),
            (
                "CREATE USER bob PASSWORD $x$s3'cret$x$ CREATEDB",
                "CREATE USER bob PASSWORD '***' CREATEDB",
            ),
            (
                "CREATE ROLE bob PASSWORD E's3\\'cret'",
                "CREATE ROLE bob PASSWORD '***'",
            ),
            (
                "CREATE ROLE bob PASSWORD 'it''s'",
                "CREATE ROLE bob PASSWORD '***'",
            ),
            (
                "CREATE ROLE bob PASSWORD /* c */ 's3cret'",
                "CREATE ROLE bob PASSWORD /* c */ '***'",
            ),
            (
                "CREATE USER MAPPING FOR bob SERVER fs OPTIONS (user 'bob', password 's3cret')",
                "CREATE USER MAPPING FOR bob SERVER fs OPTIONS (user 'bob', password '***')",
            ),
            (
                "ALTER USER MAPPING FOR bob SERVER fs OPTIONS (SET password 's3cret')",
                "ALTER USER MAPPING FOR bob SERVER fs OPTIONS (SET password '***')",
            ),
            (
                "ALTER USER MAPPING FOR bob SERVER fs OPTIONS (ADD \"password\" 's3cret')",
                "ALTER USER MAPPING FOR bob SERVER fs OPTIONS (ADD \"password\" '***')",
            ),
            (
                "SELECT dblink_connect('c', 'host=h dbname=d user=u password=s3cret')",
                "SELECT dblink_connect('c', 'host=h dbname=d user=u password=***')",
            ),
            (
                "SELECT dblink('host=h password = ''s3 cret'' user=u', 'SELECT 1')",
                "SELECT dblink('host=h password = *** user=u', 'SELECT 1')",
            ),
            (
                "CREATE SUBSCRIPTION s CONNECTION 'postgresql://u:s3cret@h/d' PUBLICATION p",
                "CREATE SUBSCRIPTION s CONNECTION 'postgresql://u:***@h/d' PUBLICATION p",
            ),
            (
                "ALTER ROLE bob PASSWORD 'unterminated",
                "ALTER ROLE bob PASSWORD '***' [cut: the rest did not lex]",
            ),
        ] {
            assert_eq!(pg(sql), want, "{sql}");
            assert!(!pg(sql).contains("s3"), "{sql}");
        }
    }

    #[test]
    fn mysql_password_forms_are_masked() {
        for (sql, want) in [
            (
                "CREATE USER 'bob'@'%' IDENTIFIED BY 's3cret'",
                "CREATE USER 'bob'@'%' IDENTIFIED BY '***'",
            ),
            (
                "ALTER USER bob@'%' IDENTIFIED BY \"s3cret\"",
                "ALTER USER bob@'%' IDENTIFIED BY '***'",
            ),
            (
                "CREATE USER a IDENTIFIED BY 's3cret', b IDENTIFIED BY 's3cret2'",
                "CREATE USER a IDENTIFIED BY '***', b IDENTIFIED BY '***'",
            ),
            (
                "ALTER USER bob IDENTIFIED WITH mysql_native_password BY 's3cret'",
                "ALTER USER bob IDENTIFIED WITH mysql_native_password BY '***'",
            ),
            (
                "CREATE USER bob IDENTIFIED WITH 'caching_sha2_password' AS 's3cret-hash'",
                "CREATE USER bob IDENTIFIED WITH 'caching_sha2_password' AS '***'",
            ),
            (
                "CREATE USER bob IDENTIFIED BY PASSWORD '*s3cret'",
                "CREATE USER bob IDENTIFIED BY PASSWORD '***'",
            ),
            (
                "CREATE USER bob IDENTIFIED VIA ed25519 USING PASSWORD('s3cret')",
                "CREATE USER bob IDENTIFIED VIA ed25519 USING PASSWORD('***')",
            ),
            (
                "GRANT SELECT ON db.* TO bob IDENTIFIED BY 's3cret'",
                "GRANT SELECT ON db.* TO bob IDENTIFIED BY '***'",
            ),
            (
                "SET PASSWORD = PASSWORD('s3cret')",
                "SET PASSWORD = PASSWORD('***')",
            ),
            (
                "SET PASSWORD FOR 'bob'@'%' = 's3cret'",
                "SET PASSWORD FOR 'bob'@'%' = '***'",
            ),
            (
                "set password for bob = old_password('s3cret')",
                "set password for bob = old_password('***')",
            ),
            (
                "SELECT PASSWORD(_utf8mb4's3cret')",
                "SELECT PASSWORD('***')",
            ),
            (
                "CHANGE MASTER TO MASTER_USER='r', MASTER_PASSWORD='s3cret'",
                "CHANGE MASTER TO MASTER_USER='r', MASTER_PASSWORD='***'",
            ),
            (
                "CHANGE REPLICATION SOURCE TO SOURCE_PASSWORD = 's3cret'",
                "CHANGE REPLICATION SOURCE TO SOURCE_PASSWORD = '***'",
            ),
            (
                "CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (USER 'r', PASSWORD 's3cret')",
                "CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (USER 'r', PASSWORD '***')",
            ),
            (
                "CREATE USER bob IDENTIFIED BY /*!'s3cret'*/",
                "CREATE USER bob IDENTIFIED BY /*!'***'*/",
            ),
            (
                "CREATE USER bob IDENTIFIED BY 's3\\'cret'",
                "CREATE USER bob IDENTIFIED BY '***'",
            ),
        ] {
            assert_eq!(my(sql), want, "{sql}");
            assert!(!my(sql).contains("s3"), "{sql}");
        }
    }

    #[test]
    fn other_text_is_kept() {
        for sql in [
            "SELECT 'password' FROM t WHERE a = 'x'",
            "CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
            "SELECT a AS password FROM t",
            "UPDATE users SET name = 'bob' WHERE id = 1",
        ] {
            assert!(
                matches!(redact(sql, Dialect::Postgres), Cow::Borrowed(_)),
                "{sql}"
            );
            assert!(
                matches!(redact(sql, Dialect::MySql), Cow::Borrowed(_)),
                "{sql}"
            );
        }
    }
}
