//! A workflow's flowchart as SVG, laid out on the server: each step goes in the column of its
//! depth (the longest chain of `needs` before it) and, within a column, in definition order, so
//! the same definition always draws the same picture and no two boxes overlap (Windmill#3741).
//! Edges run from a box's right side to the next column's left side.

use std::fmt::Write;

use haechi_workflow::Definition;

use super::St;

const W: i64 = 190;
const H: i64 = 54;
const GAP_X: i64 = 60;
const GAP_Y: i64 = 22;
const PAD: i64 = 8;

/// Escapes text for SVG/HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// Column of each step: 0 for a step that needs nothing, else one more than the deepest step
/// it needs.
pub fn depths(needs: &[Vec<usize>]) -> Vec<usize> {
    let n = needs.len();
    let mut depth = vec![0usize; n];
    // A validated definition has no cycle, so n rounds settle every depth.
    for _ in 0..n {
        let mut changed = false;
        for i in 0..n {
            let d = needs[i]
                .iter()
                .filter(|&&j| j < n)
                .map(|&j| depth[j] + 1)
                .max()
                .unwrap_or(0)
                .min(n);
            if d != depth[i] {
                depth[i] = d;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    depth
}

/// The SVG of `def`; `status[i]` is step i's status when drawing a run, `link` makes each box
/// a link to `?step=<name>` (the step's log).
pub fn svg(def: &Definition, status: &[Option<St>], label: &str, link: bool) -> String {
    let graph = def.graph();
    let depth = depths(&graph.needs);
    let cols = depth.iter().copied().max().map_or(0, |d| d + 1);
    let mut row_of = vec![0i64; def.steps.len()];
    let mut rows = vec![0i64; cols];
    for (i, &d) in depth.iter().enumerate() {
        row_of[i] = rows[d];
        rows[d] += 1;
    }
    let max_rows = rows.iter().copied().max().unwrap_or(0);
    let width = cols as i64 * (W + GAP_X) - GAP_X + 2 * PAD;
    let height = max_rows * (H + GAP_Y) - GAP_Y + 2 * PAD;
    let pos = |i: usize| {
        (
            PAD + depth[i] as i64 * (W + GAP_X),
            PAD + row_of[i] * (H + GAP_Y),
        )
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="dag" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="group" aria-label="{label}">"#,
        w = width.max(1),
        h = height.max(1),
        label = esc(label)
    );
    s.push_str(r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path class="arrowhead" d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>"#);
    for (i, needs) in graph.needs.iter().enumerate() {
        let (x2, y2) = pos(i);
        for &j in needs {
            let (x1, y1) = pos(j);
            let (sx, sy, ex, ey) = (x1 + W, y1 + H / 2, x2, y2 + H / 2);
            let mid = (sx + ex) / 2;
            let _ = write!(
                s,
                r#"<path class="edge" d="M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}" marker-end="url(#arrow)"/>"#
            );
        }
    }
    for (i, step) in def.steps.iter().enumerate() {
        let (x, y) = pos(i);
        let st = status.get(i).cloned().flatten();
        let class = st.as_ref().map_or("def", |s| s.class);
        let second = match &st {
            Some(st) => format!("{} {}", st.icon, st.word),
            None => step.action.kind().as_str().to_owned(),
        };
        let aria = format!("{}: {}", step.name, second);
        if link {
            let _ = write!(
                s,
                r##"<a href="?step={}#log" aria-label="{}">"##,
                esc(&form_urlencoded::byte_serialize(step.name.as_bytes()).collect::<String>()),
                esc(&aria)
            );
        } else {
            let _ = write!(s, r#"<g aria-label="{}">"#, esc(&aria));
        }
        let _ = write!(
            s,
            r#"<rect class="node st-{class}" x="{x}" y="{y}" width="{W}" height="{H}" rx="6"/><text class="name" x="{tx}" y="{ty1}">{name}</text><text class="sub" x="{tx}" y="{ty2}">{sub}</text>"#,
            tx = x + 10,
            ty1 = y + 22,
            ty2 = y + 42,
            name = esc(&cut(&step.name, 24)),
            sub = esc(&cut(&second, 28)),
        );
        s.push_str(if link { "</a>" } else { "</g>" });
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_the_longest_chain_before_a_step() {
        // a → b → d, a → c → d, e alone
        let needs = vec![vec![], vec![0], vec![0], vec![1, 2], vec![]];
        assert_eq!(depths(&needs), vec![0, 1, 1, 2, 0]);
        // a → b → c and a → c: c is after b.
        assert_eq!(depths(&[vec![], vec![0], vec![0, 1]]), vec![0, 1, 2]);
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            esc(r#"<img src=x onerror="alert(1)">'"#),
            "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&#39;"
        );
    }
}
