//! The module graph of `src/`: at every level, the modules under one parent form no
//! cycle, so no two modules import each other, directly or through others. Tests (files
//! named `tests.rs` or `*_tests.rs`, and `#[cfg(test)] mod tests` at the end of a file)
//! are left out: they may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from the crate root: `["delivery", "forwarder"]`.
type Module = Vec<String>;

#[test]
fn no_two_modules_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = modules(&src);
    assert!(files.len() > 50, "found {} modules under src/", files.len());
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    // For each parent, the edges between its children (each child standing for what it
    // holds).
    let mut levels: BTreeMap<Module, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut edges = 0;
    for (module, path) in &files {
        let code = production_code(&std::fs::read_to_string(path).expect("readable source"));
        for target in references(module, &code) {
            let Some(target) = resolve(&known, &target) else {
                continue;
            };
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            // One inside the other: a parent and its own children.
            if common == module.len() || common == target.len() {
                continue;
            }
            edges += 1;
            levels
                .entry(module[..common].to_vec())
                .or_default()
                .entry(module[common].clone())
                .or_default()
                .insert(target[common].clone());
        }
    }
    assert!(
        edges > 100,
        "found only {edges} imports: is the parser reading src/?"
    );
    let mut cycles = Vec::new();
    for (parent, graph) in &levels {
        if let Some(cycle) = find_cycle(graph) {
            let parent = if parent.is_empty() {
                "crate".to_owned()
            } else {
                parent.join("::")
            };
            cycles.push(format!("under {parent}: {}", cycle.join(" -> ")));
        }
    }
    assert!(
        cycles.is_empty(),
        "modules that import each other:\n{}",
        cycles.join("\n")
    );
}

/// The checker finds a cycle where there is one.
#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(from, to)| (from.to_owned(), to.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let mut acyclic = graph.clone();
    acyclic.remove("c");
    assert_eq!(find_cycle(&acyclic), None);
    let module = |text: &str| -> Module { text.split("::").map(str::to_owned).collect() };
    let code = "use crate::{a::{b, c::D}, e};\nuse super::f;\nfn g() { crate::h::i(); }\n";
    let found = references(&module("x::y"), code);
    for expected in ["a::b", "a::c::D", "e", "x::f", "h::i"] {
        assert!(found.contains(&module(expected)), "{expected} in {found:?}");
    }
}

/// Every module file under `src` (tests left out) and its path.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut folders = vec![src.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("readable folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let is_rust = path.extension().is_some_and(|e| e == "rs");
            if !is_rust || name == "main" || name == "tests" || name.ends_with("_tests") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let mut module: Module = relative
                .parent()
                .into_iter()
                .flat_map(|parent| parent.iter())
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if name != "mod" && name != "lib" {
                module.push(name.to_owned());
            }
            found.insert(module, path);
        }
    }
    found
}

/// `code` without comments and without a `#[cfg(test)] mod tests` at its end.
fn production_code(code: &str) -> String {
    let code = match code.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &code[..at],
        None => code,
    };
    code.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The absolute paths `code` names with `crate::` and `super::`, braces of `use`
/// expanded.
fn references(module: &Module, code: &str) -> Vec<Module> {
    let mut found = Vec::new();
    for (prefix, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
    ] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for tail in expand(rest) {
                let mut target = base.clone();
                target.extend(tail);
                found.push(target);
            }
        }
    }
    found
}

/// The paths a `use` tree or a path starting at `text` names: `a::{b, c::d}` is `a::b`
/// and `a::c::d`.
fn expand(text: &str) -> Vec<Module> {
    let mut segments = Vec::new();
    let mut rest = text;
    loop {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        rest = &rest[ident.len()..];
        segments.push(ident);
        match rest.strip_prefix("::") {
            Some(after) => rest = after,
            None => return vec![segments],
        }
    }
    let Some(inside) = rest.strip_prefix('{') else {
        return vec![segments];
    };
    let mut depth = 0;
    let mut end = inside.len();
    for (i, c) in inside.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                end = i;
                break;
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    let inside = &inside[..end];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inside.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inside[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inside[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            expand(part).into_iter().map(|tail| {
                let mut path = segments.clone();
                path.extend(tail.into_iter().filter(|segment| segment != "self"));
                path
            })
        })
        .collect()
}

/// The longest module `path` starts with, other than the crate root.
fn resolve(known: &BTreeSet<Module>, path: &Module) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|len| path[..len].to_vec())
        .find(|prefix| known.contains(prefix))
}

/// A cycle of `graph`, as the nodes it passes through, first repeated at the end.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}
