//! The workflow definition editor (issue 21 item 3): the definition as YAML (or JSON) in a
//! text area, saved as a new version through the engine call of `PUT /api/v1/workflows/{id}`
//! (the same parsing, checks, edit lock and audit event). An error is shown at its line: a
//! syntax error carries its line from the parser; a checking error names its field
//! (`steps[1].timeout_secs`) as the API does, and [`locate`] finds that field's line in the
//! text the user typed. Nothing is saved on error. Versions: a line diff between any two
//! (`similar`, as task revisions), and restore (the engine call of
//! `POST /api/v1/workflows/{id}/versions/{n}/restore`).

use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use haechi_identity::Permission;
use haechi_types::{Code, Error};
use haechi_workflow::definition::yaml_to_value;
use serde_json::Value;

use super::pages::DiffLine;
use super::{q, see_other, Result, Session};
use crate::AppState;

/// One segment of a field path as the engine names fields: `steps[2].nodes[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.to_owned()));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(n) = rest[1..end].parse() {
                out.push(Seg::Index(n));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

/// The line (from 1) of the field `path` in `text` (YAML, or JSON when `json`), or of the
/// nearest enclosing field found; `None` when not even the first segment is there.
pub fn locate(text: &str, json: bool, path: &str) -> Option<usize> {
    let want = parse_path(path);
    let found = if json {
        let mut j = JsonScan {
            b: text.as_bytes(),
            i: 0,
            line: 1,
            out: Vec::new(),
        };
        let mut p = Vec::new();
        j.value(&mut p);
        j.out
    } else {
        yaml_lines(text)
    };
    (1..=want.len()).rev().find_map(|n| {
        found
            .iter()
            .find(|(p, _)| p.as_slice() == &want[..n])
            .map(|(_, line)| *line)
    })
}

/// Where each member and element of a JSON text starts (a tolerant scan: it stops at the
/// first thing that is not JSON, keeping what it found).
struct JsonScan<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
    out: Vec<(Vec<Seg>, usize)>,
}

impl JsonScan<'_> {
    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.i) {
            match c {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => break,
            }
            self.i += 1;
        }
    }

    fn string(&mut self) -> Option<String> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i;
        self.i += 1;
        loop {
            match self.b.get(self.i)? {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    break;
                }
                _ => self.i += 1,
            }
        }
        let raw = std::str::from_utf8(self.b.get(start..self.i)?).ok()?;
        serde_json::from_str(raw).ok()
    }

    fn value(&mut self, path: &mut Vec<Seg>) -> Option<()> {
        self.ws();
        match *self.b.get(self.i)? {
            b'{' => {
                self.i += 1;
                loop {
                    self.ws();
                    if self.b.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Some(());
                    }
                    let line = self.line;
                    let key = self.string()?;
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return None;
                    }
                    self.i += 1;
                    path.push(Seg::Key(key));
                    self.out.push((path.clone(), line));
                    let r = self.value(path);
                    path.pop();
                    r?;
                    self.ws();
                    match self.b.get(self.i)? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut n = 0;
                loop {
                    self.ws();
                    if self.b.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Some(());
                    }
                    path.push(Seg::Index(n));
                    self.out.push((path.clone(), self.line));
                    let r = self.value(path);
                    path.pop();
                    r?;
                    n += 1;
                    self.ws();
                    match self.b.get(self.i)? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            _ => {
                while let Some(c) = self.b.get(self.i) {
                    if matches!(c, b',' | b']' | b'}') || c.is_ascii_whitespace() {
                        break;
                    }
                    self.i += 1;
                }
                Some(())
            }
        }
    }
}

/// A YAML key at the start of `s` (`name:`, `"a b":`), and what follows the colon.
fn yaml_key(s: &str) -> Option<(String, &str)> {
    let (key, after) = if let Some(q) = s.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = s[1..].find(q)? + 1;
        (s[1..end].to_owned(), s[end + 1..].trim_start())
    } else {
        let mut at = None;
        for (i, c) in s.char_indices() {
            if c == '#' && (i == 0 || s[..i].ends_with(' ')) {
                return None;
            }
            if c == ':' {
                let next = s[i + 1..].chars().next();
                if next.is_none() || next.is_some_and(char::is_whitespace) {
                    at = Some(i);
                    break;
                }
            }
        }
        let i = at?;
        (s[..i].trim_end().to_owned(), &s[i..])
    };
    let value = after.strip_prefix(':')?;
    if key.is_empty() || key.starts_with(['[', '{', '-']) {
        return None;
    }
    Some((key, value.trim()))
}

struct Ctx {
    indent: usize,
    path: Vec<Seg>,
    seq: bool,
    count: usize,
}

/// Where each key and list item of a block-style YAML text starts. Flow collections
/// (`[a, b]`) count as one value on their line; block scalars (`|`, `>`) are skipped.
fn yaml_lines(text: &str) -> Vec<(Vec<Seg>, usize)> {
    let mut out = Vec::new();
    let mut stack: Vec<Ctx> = Vec::new();
    let mut pending: Option<(usize, Vec<Seg>)> = None;
    let mut block: Option<usize> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let content = raw.trim_start_matches(' ');
        let mut col = raw.len() - content.len();
        if content.trim().is_empty() || content.starts_with('#') {
            continue;
        }
        if let Some(b) = block {
            if col > b {
                continue;
            }
            block = None;
        }
        if content.starts_with("---") || content.starts_with("...") {
            continue;
        }
        let mut rest = content;
        loop {
            let is_item = rest == "-" || rest.starts_with("- ");
            if let Some((pi, pp)) = pending.take() {
                if (is_item && col >= pi) || (!is_item && col > pi) {
                    stack.push(Ctx {
                        indent: col,
                        path: pp,
                        seq: is_item,
                        count: 0,
                    });
                }
            }
            while stack
                .last()
                .is_some_and(|t| t.indent > col || (t.indent == col && t.seq != is_item))
            {
                stack.pop();
            }
            if stack.is_empty() && !is_item {
                stack.push(Ctx {
                    indent: col,
                    path: Vec::new(),
                    seq: false,
                    count: 0,
                });
            }
            let Some(top) = stack.last_mut().filter(|t| t.indent == col) else {
                break;
            };
            if is_item {
                if !top.seq {
                    break;
                }
                let mut item = top.path.clone();
                item.push(Seg::Index(top.count));
                top.count += 1;
                out.push((item.clone(), line));
                let after = rest[1..].trim_start_matches(' ');
                if after.is_empty() || after.starts_with('#') {
                    pending = Some((col, item));
                    break;
                }
                let new_col = col + (rest.len() - after.len());
                let nested_item = after == "-" || after.starts_with("- ");
                if nested_item || yaml_key(after).is_some() {
                    stack.push(Ctx {
                        indent: new_col,
                        path: item,
                        seq: nested_item,
                        count: 0,
                    });
                    col = new_col;
                    rest = after;
                    continue;
                }
                break;
            }
            let Some((key, value)) = yaml_key(rest) else {
                break;
            };
            let mut path = top.path.clone();
            path.push(Seg::Key(key));
            out.push((path.clone(), line));
            if value.is_empty() || value.starts_with('#') {
                pending = Some((col, path));
            } else if value.starts_with('|') || value.starts_with('>') {
                block = Some(col);
            }
            break;
        }
    }
    out
}

/// The line of a syntax error as the parsers word it: `... (line 7, column 3)`.
fn syntax_line(message: &str) -> Option<usize> {
    let at = message.rfind("(line ")?;
    message[at + 6..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// An editor's content and, after a failed save, the error and its line.
pub struct Editor {
    pub yaml: bool,
    pub text: String,
    pub error: String,
    pub error_line: Option<usize>,
    /// The text's lines, numbered, for the error view.
    pub lines: Vec<EditorLine>,
}

/// One line of the submitted text in the error view.
pub struct EditorLine {
    pub n: usize,
    pub text: String,
    /// The line the error is about.
    pub marked: bool,
}

impl Editor {
    /// The editor holding version `def` of a workflow as YAML.
    pub fn of(def: &haechi_workflow::Definition) -> Editor {
        Editor {
            yaml: true,
            text: definition_yaml(def),
            error: String::new(),
            error_line: None,
            lines: Vec::new(),
        }
    }

    fn failed(yaml: bool, text: String, e: &Error) -> Editor {
        let json = !yaml;
        let line = syntax_line(&e.message).or_else(|| {
            let field = e
                .field
                .clone()
                .or_else(|| e.message.split(':').next().map(str::to_owned))?;
            locate(&text, json, &field)
        });
        Editor {
            yaml,
            lines: text
                .lines()
                .enumerate()
                .map(|(i, l)| EditorLine {
                    n: i + 1,
                    text: l.to_owned(),
                    marked: line == Some(i + 1),
                })
                .collect(),
            text,
            error: e.message.clone(),
            error_line: line,
        }
    }
}

/// A definition as YAML text (what the editor shows and the version diff compares).
pub fn definition_yaml(def: &haechi_workflow::Definition) -> String {
    serde_json::to_value(def)
        .ok()
        .and_then(|v| serde_yaml_ng::to_string(&v).ok())
        .unwrap_or_default()
}

/// A line diff of two texts (`similar`, the diff of task revisions).
pub fn text_diff(a: &str, b: &str) -> Vec<DiffLine> {
    similar::TextDiff::from_lines(a, b)
        .iter_all_changes()
        .map(|c| {
            let (op, class) = match c.tag() {
                similar::ChangeTag::Delete => ('-', "del"),
                similar::ChangeTag::Insert => ('+', "ins"),
                similar::ChangeTag::Equal => (' ', "same"),
            };
            DiffLine {
                op,
                class,
                text: c.value().trim_end_matches(['\n', '\r']).to_owned(),
            }
        })
        .collect()
}

/// Errors the editor shows beside the text (the input, or the edit lock), not as a page.
fn shown_in_editor(e: &Error) -> bool {
    matches!(
        e.code,
        Code::InvalidRequest | Code::MalformedBody | Code::Conflict | Code::Locked
    )
}

/// `POST /console/workflows/{id}/definition` (`workflow.manage`, as
/// `PUT /api/v1/workflows/{id}`): `format` = `yaml` | `json`, `definition` = the text.
pub async fn save(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let form = s.form(&body)?;
    s.require(Permission::WorkflowManage)?;
    let yaml = match form.get("format").map(String::as_str) {
        None | Some("yaml") => true,
        Some("json") => false,
        Some(other) => {
            return Err(Error::field(
                "format",
                format_args!("must be yaml or json (got {other:?})"),
            )
            .into())
        }
    };
    let text = form.get("definition").cloned().unwrap_or_default();
    let parsed: haechi_types::Result<Value> = if yaml {
        yaml_to_value(text.as_bytes())
    } else {
        crate::extract::parse_json::<Value>(text.as_bytes())
    };
    let saved = match parsed {
        Ok(value) => {
            state
                .workflows
                .update_workflow(&s.caller, &id, &value)
                .await
        }
        Err(e) => Err(e),
    };
    match saved {
        Ok(created) => Ok(see_other(&format!(
            "/console/workflows/{}?saved={}#editor-h",
            q(&created.id),
            created.version
        ))),
        Err(e) if shown_in_editor(&e) => {
            let editor = Editor::failed(yaml, text, &e);
            super::pages::workflow_page(&state, &s, &id, None, Some(editor), None).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /console/workflows/{id}/versions/{version}/restore` (`workflow.manage`, as the API):
/// version `version`'s definition becomes the newest version.
pub async fn restore(
    State(state): State<AppState>,
    s: Session,
    Path((id, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    s.form(&body)?;
    s.require(Permission::WorkflowManage)?;
    let version = version
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            Error::field(
                "version",
                format_args!("must be a version number ≥ 1 (got {version:?})"),
            )
        })?;
    let created = state
        .workflows
        .restore_version(&s.caller, &id, version)
        .await?;
    Ok(see_other(&format!(
        "/console/workflows/{}?restored={}&from={version}#versions-h",
        q(&created.id),
        created.version
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "name: drill\ngroup: dr\nparams:\n  target: null\nsteps:\n- name: a\n  type: sleep\n  seconds: 1\n- name: b\n  type: task\n  nodes: [n1, n2]\n  script: |\n    name: not a key\n  timeout_secs: x\n";

    #[test]
    fn yaml_fields_are_found_at_their_lines() {
        assert_eq!(locate(YAML, false, "group"), Some(2));
        assert_eq!(locate(YAML, false, "params.target"), Some(4));
        assert_eq!(locate(YAML, false, "steps[0]"), Some(6));
        assert_eq!(locate(YAML, false, "steps[0].seconds"), Some(8));
        assert_eq!(locate(YAML, false, "steps[1].name"), Some(9));
        // Inside a flow list: the line of the list.
        assert_eq!(locate(YAML, false, "steps[1].nodes[1]"), Some(11));
        // A block scalar's text is not read as keys.
        assert_eq!(locate(YAML, false, "steps[1].timeout_secs"), Some(14));
        // A field that is not in the text: its nearest parent.
        assert_eq!(locate(YAML, false, "steps[1].retries"), Some(9));
        assert_eq!(locate(YAML, false, "nothing"), None);
    }

    #[test]
    fn indented_sequences_and_nested_items() {
        let y = "steps:\n  - name: a\n    needs:\n      - x\n      - y\n  - name: b\n";
        assert_eq!(locate(y, false, "steps[0].needs[1]"), Some(5));
        assert_eq!(locate(y, false, "steps[1].name"), Some(6));
    }

    #[test]
    fn json_fields_are_found_at_their_lines() {
        let j = "{\n  \"name\": \"x\",\n  \"steps\": [\n    { \"name\": \"a\" },\n    {\n      \"name\": \"b\",\n      \"seconds\": \"z\"\n    }\n  ]\n}\n";
        assert_eq!(locate(j, true, "steps[1].seconds"), Some(7));
        assert_eq!(locate(j, true, "steps[0].name"), Some(4));
        assert_eq!(locate(j, true, "steps[1].retries"), Some(5));
    }

    #[test]
    fn syntax_errors_name_their_line() {
        assert_eq!(
            syntax_line("the body is not valid YAML (line 7, column 3)"),
            Some(7)
        );
        assert_eq!(syntax_line("steps: must be a list"), None);
    }

    #[test]
    fn the_diff_marks_lines() {
        let d: Vec<String> = text_diff("a\nb\nc\n", "a\nx\nc\n")
            .iter()
            .map(|l| format!("{}{}", l.op, l.text))
            .collect();
        assert_eq!(d, vec![" a", "-b", "+x", " c"]);
    }
}
