//! The layer check (DESIGN.md §9): `src/` is folders by layer, and imports point down only.
//!
//! Reads every `src/**/*.rs`, finds each path into the crate it names (`use crate::…` trees,
//! `crate::…` and `super::…` paths in code; comments and string literals skipped), resolves it
//! to the file that defines the item (following a `mod.rs` facade's `pub use` re-exports to the
//! child that owns the item), and fails on
//! - an **up-edge**: a file importing from a folder of a higher layer than its own, and
//! - an **import cycle** between files (any strongly connected set of two or more files),
//!
//! naming each offending edge with the line it comes from. Unit tests (`#[cfg(test)] mod …`,
//! `tests.rs`) are not imports: they may build fixtures from higher layers. No dependencies: it also builds on
//! its own (`rustc --edition 2021 --test tests/layers.rs`) for a quick look while moving files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level entries of `src/`, bottom to top. A file may import from its own layer and below.
/// Every top-level file or folder must be listed, so a new one is placed on purpose.
const LAYERS: &[(&str, &[&str])] = &[
    ("config", &["config"]),
    ("algorithms", &["balance", "http"]),
    ("live state", &["state"]),
    ("codec", &["h1"]),
    ("snapshot", &["snapshot"]),
    ("request path", &["path"]),
    ("engine", &["engine"]),
    ("control", &["control"]),
    ("process", &["app", "demo", "fuzzing", "lib", "main"]),
];

/// One module file: its module path (`["snapshot", "build"]`) and what it refers to.
struct File {
    rel: String,
    module: Vec<String>,
    /// Paths it names, as absolute module paths, with the line they appear on.
    refs: Vec<(Vec<String>, usize)>,
    /// `pub use` leaves: exported name → absolute path it re-exports.
    reexports: BTreeMap<String, Vec<String>>,
    /// Lines of `pub use` (facade edges, not counted as imports in a `mod.rs`).
    reexport_lines: BTreeSet<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
    PathSep,
}

/// Rust source → tokens with their line, dropping comments, strings, chars and lifetimes.
fn lex(src: &str) -> Vec<(Tok, usize)> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(b[i] == b'\n');
                    i += 1;
                }
            }
        } else if (c == b'r' || c == b'b') && raw_string_start(&b[i..]).is_some() {
            let (skip, hashes) = raw_string_start(&b[i..]).unwrap();
            i += skip;
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            while i < b.len() && !b[i..].starts_with(&close) {
                line += usize::from(b[i] == b'\n');
                i += 1;
            }
            i += close.len();
        } else if c == b'"' || (c == b'b' && b.get(i + 1) == Some(&b'"')) {
            i += if c == b'b' { 2 } else { 1 };
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                line += usize::from(b.get(i) == Some(&b'\n'));
                i += 1;
            }
            i += 1;
        } else if c == b'\'' || (c == b'b' && b.get(i + 1) == Some(&b'\'')) {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): a lifetime has no
            // closing quote right after its name.
            let start = if c == b'b' { i + 2 } else { i + 1 };
            if b.get(start) == Some(&b'\\') {
                let mut j = start + 2;
                while j < b.len() && b[j] != b'\'' {
                    j += 1;
                }
                i = j + 1;
            } else {
                let ch_len = std::str::from_utf8(&b[start..])
                    .ok()
                    .and_then(|s| s.chars().next())
                    .map_or(1, char::len_utf8);
                if b.get(start + ch_len) == Some(&b'\'') {
                    i = start + ch_len + 1;
                } else {
                    i = start; // lifetime: its name lexes as an identifier, harmless
                }
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(src[s..i].to_string()), line));
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                if b[i] == b'.' && !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    break;
                }
                i += 1;
            }
        } else if b[i..].starts_with(b"::") {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(c as char), line));
            i += 1;
        }
    }
    out
}

/// `r"`, `r#"`, `br"`, `br##"` … → (bytes up to and including the quote, number of hashes).
fn raw_string_start(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = usize::from(b.first() == Some(&b'b'));
    if b.get(i) != Some(&b'r') {
        return None;
    }
    i += 1;
    let mut hashes = 0;
    while b.get(i) == Some(&b'#') {
        hashes += 1;
        i += 1;
    }
    (b.get(i) == Some(&b'"')).then_some((i + 1, hashes))
}

fn ident(t: Option<&(Tok, usize)>) -> Option<&str> {
    match t {
        Some((Tok::Ident(s), _)) => Some(s),
        _ => None,
    }
}

/// Resolves a path's first segments (`crate`, `super`, `self`) against the module it is in.
fn absolute(module: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = module.to_vec();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &path[1..];
        }
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        Some("self") => rest = &path[1..],
        // In a `use`, a first segment that is none of these is a child module (2018 paths) or
        // an external crate; the resolver tells them apart (a crate resolves to this file).
        _ => {}
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Parses a `use` tree starting at `toks[i]` (after `use`), pushing every leaf path.
fn use_tree(
    toks: &[(Tok, usize)],
    mut i: usize,
    prefix: &mut Vec<String>,
    leaves: &mut Vec<(Vec<String>, Option<String>, usize)>,
) -> usize {
    let depth = prefix.len();
    loop {
        match toks.get(i) {
            Some((Tok::Ident(s), line)) if s == "as" => {
                let alias = ident(toks.get(i + 1)).map(str::to_string);
                leaves.push((prefix.clone(), alias, *line));
                i += 2;
                break;
            }
            Some((Tok::Ident(s), _)) => {
                prefix.push(s.clone());
                i += 1;
            }
            Some((Tok::PathSep, _)) => i += 1,
            Some((Tok::Punct('*'), line)) => {
                leaves.push((prefix.clone(), Some("*".into()), *line));
                i += 1;
                break;
            }
            Some((Tok::Punct('{'), _)) => {
                i += 1;
                loop {
                    match toks.get(i) {
                        Some((Tok::Punct('}'), _)) => {
                            i += 1;
                            break;
                        }
                        Some((Tok::Punct(','), _)) => i += 1,
                        None => break,
                        _ => i = use_tree(toks, i, prefix, leaves),
                    }
                }
                prefix.truncate(depth);
                return i;
            }
            Some((_, line)) => {
                if prefix.len() > depth {
                    leaves.push((prefix.clone(), None, *line));
                }
                break;
            }
            None => break,
        }
    }
    prefix.truncate(depth);
    i
}

fn scan(rel: &str, module: Vec<String>, src: &str) -> File {
    let toks = lex(src);
    let mut file = File {
        rel: rel.to_string(),
        module: module.clone(),
        refs: Vec::new(),
        reexports: BTreeMap::new(),
        reexport_lines: BTreeSet::new(),
    };
    // Inline modules (`mod tests { … }`) shift what `super` and `self` mean inside them.
    let mut inline: Vec<(String, usize, bool)> = Vec::new();
    // Child modules declared here (`mod cache;`): `cache::Cache` in code is a path into one.
    let children: BTreeSet<&str> = toks
        .windows(3)
        .filter_map(|w| match (&w[0].0, &w[1].0, &w[2].0) {
            (Tok::Ident(m), Tok::Ident(name), Tok::Punct(';')) if m == "mod" => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut braces = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let here: Vec<String> = module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(n, _, _)| n.clone()))
            .collect();
        match &toks[i] {
            (Tok::Punct('{'), _) => braces += 1,
            (Tok::Punct('}'), _) => {
                braces = braces.saturating_sub(1);
                if inline.last().is_some_and(|(_, d, _)| *d == braces) {
                    inline.pop();
                }
            }
            (Tok::Ident(k), _) if k == "mod" => {
                if let (Some(name), Some((Tok::Punct('{'), _))) =
                    (ident(toks.get(i + 1)), toks.get(i + 2))
                {
                    let test = i >= 7
                        && toks[i - 7..i]
                            .iter()
                            .map(|(t, _)| match t {
                                Tok::Ident(s) => s.as_str(),
                                Tok::Punct('#') => "#",
                                Tok::Punct('[') => "[",
                                Tok::Punct('(') => "(",
                                Tok::Punct(')') => ")",
                                Tok::Punct(']') => "]",
                                _ => "?",
                            })
                            .eq(["#", "[", "cfg", "(", "test", ")", "]"]);
                    inline.push((name.to_string(), braces, test));
                }
            }
            // Unit tests may reach up for fixtures (a queue test builds a snapshot): not an
            // import of the module they test.
            _ if inline.iter().any(|(_, _, test)| *test) => {}
            (Tok::Ident(k), line) if k == "use" => {
                // `pub use` or `pub(crate) use` / `pub(super) use`.
                let public = i > 0 && ident(toks.get(i - 1)) == Some("pub")
                    || i > 3
                        && matches!(toks.get(i - 1), Some((Tok::Punct(')'), _)))
                        && ident(toks.get(i - 4)) == Some("pub");
                let mut leaves = Vec::new();
                let end = use_tree(&toks, i + 1, &mut Vec::new(), &mut leaves);
                for (path, alias, l) in leaves {
                    let Some(abs) = absolute(&here, &path) else {
                        continue;
                    };
                    if public && inline.is_empty() {
                        file.reexport_lines.insert(*line);
                        let name = alias.clone().or_else(|| path.last().cloned());
                        if let Some(name) = name.filter(|n| n != "*" && n != "self") {
                            file.reexports.insert(name, abs.clone());
                        }
                    }
                    file.refs.push((abs, l));
                }
                i = end;
                continue;
            }
            (Tok::Ident(k), line)
                if k == "crate"
                    || k == "super"
                    || inline.is_empty() && children.contains(k.as_str()) =>
            {
                let prev_sep = i > 0 && matches!(toks[i - 1].0, Tok::PathSep);
                if !prev_sep && matches!(toks.get(i + 1), Some((Tok::PathSep, _))) {
                    let mut path = if k == "crate" || k == "super" {
                        vec![k.clone()]
                    } else {
                        vec!["self".to_string(), k.clone()]
                    };
                    let mut j = i + 1;
                    while matches!(toks.get(j), Some((Tok::PathSep, _))) {
                        match ident(toks.get(j + 1)) {
                            Some(s) => path.push(s.to_string()),
                            None => break,
                        }
                        j += 2;
                    }
                    if k == "crate" || path.len() > 1 {
                        if let Some(abs) = absolute(&here, &path) {
                            file.refs.push((abs, *line));
                        }
                    }
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    file
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// The layer check's findings over one source tree.
struct Report {
    up_edges: Vec<String>,
    cycles: Vec<String>,
    unplaced: Vec<String>,
    edges: usize,
}

fn check(src: &Path) -> Report {
    let mut paths = Vec::new();
    rust_files(src, &mut paths);
    paths.sort();
    let mut files = Vec::new();
    for p in &paths {
        let rel = p
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "main.rs" {
            continue; // the binary crate: it sees the library as `tether::`, from the top
        }
        if rel.ends_with("/tests.rs") {
            continue; // a `#[cfg(test)] mod tests;` in a file of its own: test code
        }
        let text = std::fs::read_to_string(p).unwrap();
        files.push(scan(&rel, module_of(&rel), &text));
    }
    let by_module: BTreeMap<Vec<String>, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.module.clone(), i))
        .collect();

    // Resolve a path to the file defining it: the longest module prefix that is a file, then
    // through that file's `pub use` of the next segment, if it re-exports it.
    let resolve = |path: &[String]| -> Option<usize> {
        let mut path = path.to_vec();
        for _ in 0..8 {
            let (k, idx) = (0..=path.len())
                .rev()
                .find_map(|k| by_module.get(&path[..k]).map(|&i| (k, i)))?;
            let next = path.get(k);
            match next.and_then(|n| files[idx].reexports.get(n)) {
                Some(target) if target.as_slice() != &path[..k + 1] => {
                    let mut p = target.clone();
                    p.extend(path[k + 1..].iter().cloned());
                    path = p;
                }
                _ => return Some(idx),
            }
        }
        None
    };

    let layer_of = |rel: &str| -> Option<(usize, &'static str)> {
        let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
        LAYERS
            .iter()
            .enumerate()
            .find(|(_, (_, entries))| entries.contains(&top))
            .map(|(i, (name, _))| (i, *name))
    };

    let mut report = Report {
        up_edges: Vec::new(),
        cycles: Vec::new(),
        unplaced: Vec::new(),
        edges: 0,
    };
    let mut graph: Vec<BTreeMap<usize, usize>> = vec![BTreeMap::new(); files.len()];
    for (i, f) in files.iter().enumerate() {
        if layer_of(&f.rel).is_none() {
            report.unplaced.push(f.rel.clone());
        }
        let facade = f.rel.ends_with("mod.rs") || f.rel == "lib.rs";
        for (path, line) in &f.refs {
            if facade && f.reexport_lines.contains(line) {
                continue;
            }
            let Some(j) = resolve(path) else { continue };
            if j == i {
                continue;
            }
            // A child file using its own `mod.rs`'s items, or a parent declaring/using a child,
            // is a real edge; the cycle check below sees both directions.
            graph[i].entry(j).or_insert(*line);
        }
    }
    for (i, out) in graph.iter().enumerate() {
        for (&j, line) in out {
            report.edges += 1;
            if let (Some((li, ln)), Some((lj, lnj))) =
                (layer_of(&files[i].rel), layer_of(&files[j].rel))
            {
                if lj > li {
                    report.up_edges.push(format!(
                        "src/{}:{} ({ln}) imports src/{} ({lnj}), a higher layer",
                        files[i].rel, line, files[j].rel
                    ));
                }
            }
        }
    }
    for scc in tarjan(&graph) {
        if scc.len() < 2 {
            continue;
        }
        let set: BTreeSet<usize> = scc.iter().copied().collect();
        let mut edges = Vec::new();
        for &i in &scc {
            for (&j, line) in &graph[i] {
                if set.contains(&j) {
                    edges.push(format!(
                        "src/{}:{} -> src/{}",
                        files[i].rel, line, files[j].rel
                    ));
                }
            }
        }
        edges.sort();
        report.cycles.push(format!(
            "{} files import each other in a circle:\n    {}",
            scc.len(),
            edges.join("\n    ")
        ));
    }
    report
}

/// Strongly connected components (Tarjan), iteratively.
fn tarjan(graph: &[BTreeMap<usize, usize>]) -> Vec<Vec<usize>> {
    let n = graph.len();
    let (mut index, mut low, mut on) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut out, mut next) = (Vec::new(), Vec::new(), 0);
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, Vec<usize>)> =
            vec![(root, graph[root].keys().copied().collect())];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on[root] = true;
        while let Some((v, todo)) = work.last_mut() {
            let v = *v;
            if let Some(w) = todo.pop() {
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on[w] = true;
                    work.push((w, graph[w].keys().copied().collect()));
                } else if on[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                work.pop();
                if let Some((u, _)) = work.last() {
                    low[*u] = low[*u].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut scc = Vec::new();
                    while let Some(w) = stack.pop() {
                        on[w] = false;
                        scc.push(w);
                        if w == v {
                            break;
                        }
                    }
                    out.push(scc);
                }
            }
        }
    }
    out
}

fn src_dir() -> PathBuf {
    let root = option_env!("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from);
    root.join("src")
}

#[test]
fn imports_point_down_and_never_in_a_circle() {
    let report = check(&src_dir());
    assert!(
        report.edges > 50,
        "the check found only {} edges: is it reading src/?",
        report.edges
    );
    let mut problems = Vec::new();
    for f in &report.unplaced {
        problems.push(format!(
            "src/{f} is in no layer of tests/layers.rs's LAYERS"
        ));
    }
    problems.extend(report.up_edges.iter().cloned());
    problems.extend(report.cycles.iter().cloned());
    assert!(
        problems.is_empty(),
        "layer check (DESIGN.md §9):\n  {}",
        problems.join("\n  ")
    );
}

/// The checker itself finds what it is for: an up-edge and a cycle in a small tree of its own.
#[test]
fn the_check_sees_an_up_edge_and_a_cycle() {
    let dir = std::env::temp_dir().join(format!("tether-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, text) in [
        ("lib.rs", "pub mod config; pub mod snapshot; pub mod path;"),
        ("config/mod.rs", "//! c\nmod model;\npub use model::Config;\npub(crate) use model::Pool as P;\n"),
        ("config/model.rs", "pub struct Config; pub struct Pool;\n// crate::snapshot::X\nconst S: &str = \"crate::path::y\";\n"),
        ("snapshot/mod.rs", "pub mod a; pub mod b;"),
        ("snapshot/a.rs", "use crate::config::{Config, P};\nuse super::b::B;\npub struct A;"),
        ("snapshot/b.rs", "pub struct B(crate::snapshot::a::A);\nfn f() { let _ = crate::path::run(); }"),
        ("path/mod.rs", "mod x;\npub fn run() { x::go() }\n#[cfg(test)]\nmod tests { use super::*; use crate::snapshot::b::B; }"),
        ("path/x.rs", "pub fn go() {}"),
    ] {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let report = check(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        report.up_edges,
        vec![
            "src/snapshot/b.rs:2 (snapshot) imports src/path/mod.rs (request path), a higher layer"
        ]
    );
    assert_eq!(report.cycles.len(), 1, "{:?}", report.cycles);
    assert!(report.cycles[0].contains("src/snapshot/a.rs:2 -> src/snapshot/b.rs"));
    assert!(report.cycles[0].contains("src/snapshot/b.rs:1 -> src/snapshot/a.rs"));
    // The facade's re-exports lead to config/model.rs; comments and strings are not paths.
    assert_eq!(report.edges, 5, "a→model, a→b, b→a, b→path, path→x");
    assert!(report.unplaced.is_empty());
}
