//! The server's modules form layers: no import loop between the top-level modules of
//! `server/src`; the mesh sits below everything that sends to shards, and only the process
//! level (`serve`, and `ops` for its sizing constants) imports `shard/` (docs/ARCHITECTURE.md,
//! "Layers"). Read from the source: every `crate::<module>` path in a module's files (code and
//! tests alike, comments excluded) is an edge from that module to `<module>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

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

/// The top-level module a file belongs to (`shard/io.rs` -> `shard`, `config.rs` -> `config`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    Path::new(first)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Every `crate::name` in `line`, and every name in a `use crate::{a, b::c}` group.
fn crate_paths(line: &str, out: &mut BTreeSet<String>) {
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let from = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        let mut names = BTreeSet::new();
        for line in text.lines() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            crate_paths(code, &mut names);
        }
        let edges = graph.entry(from.clone()).or_default();
        // Only names that are top-level modules count (not `crate::SomeType` re-exports).
        for name in names {
            let is_module = src.join(&name).is_dir() || src.join(format!("{name}.rs")).is_file();
            if is_module && name != from {
                edges.insert(name);
            }
        }
    }
    graph
}

/// One import loop, if there is any (depth-first search with an explicit path).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
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

#[test]
fn the_graph_reader_sees_plain_and_grouped_crate_paths() {
    let mut names = BTreeSet::new();
    crate_paths(
        "use crate::mesh::{Mesh, ShardMsg}; use crate::{conn, ring::Op};",
        &mut names,
    );
    let expected: BTreeSet<String> = ["mesh", "conn", "ring"].map(String::from).into();
    assert_eq!(names, expected);
    let looped: Graph = [
        ("a".to_owned(), ["b".to_owned()].into()),
        ("b".to_owned(), ["a".to_owned()].into()),
    ]
    .into();
    assert_eq!(
        find_cycle(&looped),
        Some(vec!["a".to_owned(), "b".to_owned(), "a".to_owned()])
    );
}

#[test]
fn server_modules_have_no_import_loop() {
    let graph = graph();
    assert!(graph.contains_key("shard") && graph.contains_key("mesh"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import loop between server modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_mesh_sits_below_everything_that_sends_to_shards() {
    let graph = graph();
    let allowed: BTreeSet<String> = ["conn", "metrics", "ring"].map(String::from).into();
    let mesh = &graph["mesh"];
    assert!(
        mesh.is_subset(&allowed),
        "mesh imports {mesh:?}; it may only use {allowed:?}"
    );
    for sender in ["admin", "cluster", "events", "push", "session", "ops"] {
        assert!(
            graph[sender].contains("mesh") || sender == "session" || sender == "push",
            "{sender} reaches shards through the mesh"
        );
    }
    let importers: Vec<&String> = graph
        .iter()
        .filter(|(_, edges)| edges.contains("shard"))
        .map(|(module, _)| module)
        .collect();
    assert_eq!(importers, ["ops", "serve"], "modules importing shard/");
}
