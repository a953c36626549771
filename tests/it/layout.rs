//! The shape of `src/`: no import circle between files, and no room over
//! about 1,200 lines unless its first comment says why.
//!
//! Imports are read as text: every `crate::…`, `super::…` and `self::…`
//! path, and paths that start with a child module this file declares. A
//! path is resolved to the deepest module file it names; an item inside a
//! module counts as that module's file. A file that uses another file's
//! item depends on it; `mod x;` alone is not a dependency (it only places
//! the file in the tree).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::harness::repo_root;

/// A module path (`["pool", "store"]`) for every `.rs` file under `src/`.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap();
            let mut parts: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_owned())
                .collect();
            let last = parts.last().unwrap().clone();
            if last == "mod" || (parts.len() == 1 && (last == "lib" || last == "main")) {
                parts.pop();
            }
            if last == "main" {
                // The binary is its own crate root; keep it apart.
                parts = vec!["<main>".into()];
            }
            out.insert(parts, p);
        }
    }
    out
}

/// Strips `//` comments, string literals (roughly) and `pub(in path)`
/// visibilities, so paths in text are not taken for imports.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let unscoped;
        let line = match line.find("pub(in ") {
            Some(at) => {
                let close = line[at..].find(')').map_or(line.len(), |c| at + c + 1);
                unscoped = format!("{}pub{}", &line[..at], &line[close..]);
                unscoped.as_str()
            }
            None => line,
        };
        let mut in_str = false;
        let mut prev = ' ';
        let mut kept = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if !in_str && c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' {
                in_str = !in_str;
                kept.push(' ');
            } else if !in_str {
                kept.push(c);
            }
            prev = c;
            i += 1;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// Paths used in `code` as lists of segments, with `{a, b}` groups in `use`
/// expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // `use` statements, whole (they may span lines and nest groups).
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let word_start = rest[..at]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let after = &rest[at + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if word_start {
            // Drop `as name` renames, then all whitespace.
            let mut toks: Vec<&str> = Vec::new();
            let mut words = after[..end].split_whitespace();
            while let Some(w) = words.next() {
                if w == "as" {
                    let renamed = words.next().unwrap_or("");
                    // Keep a closing brace or comma glued to the new name.
                    toks.push(
                        renamed.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_'),
                    );
                } else {
                    toks.push(w);
                }
            }
            expand(&toks.concat(), &mut Vec::new(), &mut out);
        }
        rest = &after[end.min(after.len())..];
    }
    // Inline paths: `crate::a::b`, `super::x`.
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        if starts_word && (bytes[i].is_alphabetic() || bytes[i] == '_') {
            let mut j = i;
            let mut segs = Vec::new();
            loop {
                let s = j;
                while j < bytes.len() && (bytes[j].is_alphanumeric() || bytes[j] == '_') {
                    j += 1;
                }
                segs.push(bytes[s..j].iter().collect::<String>());
                if j + 2 < bytes.len() && bytes[j] == ':' && bytes[j + 1] == ':' {
                    j += 2;
                    if !(bytes[j].is_alphabetic() || bytes[j] == '_') {
                        break;
                    }
                } else {
                    break;
                }
            }
            if segs.len() > 1 {
                out.push(segs);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

fn expand(s: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    // s like "crate::a::{b,c::{d,e}}" (no whitespace, renames dropped)
    if let Some(open) = s.find('{') {
        let head: Vec<String> = s[..open]
            .trim_end_matches("::")
            .split("::")
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect();
        let inner = &s[open + 1..s.rfind('}').unwrap_or(s.len())];
        let mut depth = 0;
        let mut start = 0;
        let n = prefix.len();
        prefix.extend(head);
        let ib: Vec<char> = inner.chars().collect();
        for (k, c) in ib.iter().enumerate() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    let part: String = ib[start..k].iter().collect();
                    expand(&part, prefix, out);
                    start = k + 1;
                }
                _ => {}
            }
        }
        let part: String = ib[start..].iter().collect();
        if !part.is_empty() {
            expand(&part, prefix, out);
        }
        prefix.truncate(n);
    } else {
        let mut p = prefix.clone();
        p.extend(
            s.split("::")
                .filter(|x| !x.is_empty() && *x != "self" && *x != "*")
                .map(str::to_owned),
        );
        if !p.is_empty() {
            out.push(p);
        }
    }
}

/// The file a path used in module `here` points at, if it is in the crate.
fn resolve(
    path: &[String],
    here: &[String],
    children: &BTreeSet<String>,
    mods: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<Vec<String>> {
    let mut abs: Vec<String> = match path[0].as_str() {
        "crate" => Vec::new(),
        "super" => here[..here.len().saturating_sub(1)].to_vec(),
        "self" => here.to_vec(),
        first if children.contains(first) => here.to_vec(),
        _ => return None,
    };
    let rest = if matches!(path[0].as_str(), "crate" | "super" | "self") {
        &path[1..]
    } else {
        path
    };
    let mut found = mods.contains_key(&abs).then(|| abs.clone());
    for seg in rest {
        if seg == "super" {
            abs.pop();
        } else {
            abs.push(seg.clone());
        }
        if mods.contains_key(&abs) {
            found = Some(abs.clone());
        }
    }
    found
}

/// The code before the first inline `mod NAME {`, and from there on.
fn split_inline_mod(code: &str) -> (&str, &str) {
    let mut from = 0;
    while let Some(at) = code[from..].find("mod ") {
        let i = from + at;
        let word_start = code[..i]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let tail = &code[i + 4..];
        let name_end = tail
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if word_start && tail[name_end..].trim_start().starts_with('{') {
            return (&code[..i], &code[i..]);
        }
        from = i + 4;
    }
    (code, "")
}

/// Edges file → file.
fn graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mods = modules(src);
    let mut g: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, file) in &mods {
        if m.first().is_some_and(|x| x == "<main>") {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        let children: BTreeSet<String> = code
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let l = l.strip_prefix("pub ").unwrap_or(l);
                let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
                l.strip_prefix("mod ")?
                    .strip_suffix(';')
                    .map(|n| n.trim().to_owned())
            })
            .collect();
        let edges = g.entry(m.clone()).or_default();
        // An inline `mod NAME {` (tests, props) sits one level down: its
        // `super::` is this file.
        let (outer, inner) = split_inline_mod(&code);
        let mut inner_here = m.clone();
        inner_here.push("<inline>".into());
        for (text, here) in [(outer, m), (inner, &inner_here)] {
            for p in paths(text) {
                if let Some(target) = resolve(&p, here, &children, &mods) {
                    if &target != m {
                        edges.insert(target);
                    }
                }
            }
        }
    }
    g
}

/// Strongly connected components with more than one file (Tarjan).
fn circles(g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct T<'a> {
        g: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<Vec<String>, usize>,
        low: BTreeMap<Vec<String>, usize>,
        stack: Vec<Vec<String>>,
        on: BTreeSet<Vec<String>>,
        next: usize,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit(t: &mut T, v: &Vec<String>) {
        t.index.insert(v.clone(), t.next);
        t.low.insert(v.clone(), t.next);
        t.next += 1;
        t.stack.push(v.clone());
        t.on.insert(v.clone());
        let empty = BTreeSet::new();
        let succ: Vec<Vec<String>> = t.g.get(v).unwrap_or(&empty).iter().cloned().collect();
        for w in succ {
            if !t.index.contains_key(&w) {
                visit(t, &w);
                let lw = t.low[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(&w) {
                let iw = t.index[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(&w);
                let done = &w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("::")
    }
}

#[test]
fn no_import_circles_between_files() {
    let g = graph(&repo_root().join("src"));
    assert!(g.len() > 20, "the module tree was not read: {g:?}");
    let found = circles(&g);
    let text: Vec<String> = found
        .iter()
        .map(|c| {
            let mut names: Vec<String> = c.iter().map(|m| name(m)).collect();
            names.sort();
            // Which edges close the circle, for the reader.
            let inside: BTreeSet<&Vec<String>> = c.iter().collect();
            let edges: Vec<String> = c
                .iter()
                .flat_map(|a| {
                    g[a].iter()
                        .filter(|b| inside.contains(b))
                        .map(move |b| format!("{} -> {}", name(a), name(b)))
                })
                .collect();
            format!("{{{}}}: {}", names.join(", "), edges.join("; "))
        })
        .collect();
    assert!(
        found.is_empty(),
        "import circles between files:\n  {}",
        text.join("\n  ")
    );
}

#[test]
fn no_room_over_1200_lines_without_a_reason() {
    let mods = modules(&repo_root().join("src"));
    let mut big = Vec::new();
    for file in mods.values() {
        let text = std::fs::read_to_string(file).unwrap();
        let lines = text.lines().count();
        let first: String = text
            .lines()
            .take_while(|l| l.starts_with("//"))
            .collect::<Vec<_>>()
            .join(" ");
        if lines > 1200 && !first.contains("over 1,200 lines") {
            big.push(format!("{} ({lines} lines)", file.display()));
        }
    }
    assert!(
        big.is_empty(),
        "files over 1,200 lines whose first comment does not say why (\"over 1,200 lines because …\"):\n  {}",
        big.join("\n  ")
    );
}
