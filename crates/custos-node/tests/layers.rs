//! The workspace's layers, checked: crate edges from `cargo metadata`
//! (DESIGN.md: never pki → keys/store, keys → store/ca, store → ca,
//! server → store/keys, cli → store/keys), pure crates free of I/O and key
//! material, and no two modules of a crate importing each other.
//!
//! Only normal and build dependencies count: a test may use a lower crate
//! (custos-cli's tests read PKCS#11 URIs with custos-keys) without the
//! shipped code depending on it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// (from, to): crate edges that must not exist, direct or not, with the reason.
const FORBIDDEN: &[(&str, &str, &str)] = &[
    ("custos-pki", "custos-keys", "pki is pure X.509: signing comes in through custos-types' Signer"),
    ("custos-pki", "custos-store", "pki does no I/O"),
    ("custos-keys", "custos-store", "keys never persist themselves; the caller stores the reference"),
    ("custos-keys", "custos-ca", "keys are below the domain"),
    ("custos-store", "custos-ca", "storage holds no domain rules"),
    ("custos-types", "custos-keys", "the leaf crate depends on no custos crate"),
    ("custos-audit", "custos-store", "the log format does no I/O"),
];

/// (from, to): direct edges that must not exist (the crate may still reach
/// `to` through custos-ca or custos-node, which is the point).
const FORBIDDEN_DIRECT: &[(&str, &str, &str)] = &[
    ("custos-server", "custos-store", "HTTP serves through custos-ca, never the database"),
    ("custos-server", "custos-keys", "HTTP never touches key material"),
    ("custos-cli", "custos-store", "the CLI opens custos through custos-node"),
    ("custos-cli", "custos-keys", "the CLI never touches key material"),
    ("custos-ca", "sqlx", "custos-ca receives a Store; it does not choose a database"),
];

/// Crates that must build without I/O, runtime or key-store dependencies, at any depth.
const PURE: &[&str] = &["custos-types", "custos-pki", "custos-audit", "custos-acme"];
const NOT_IN_PURE: &[&str] =
    &["tokio", "sqlx", "axum", "hyper", "cryptoki", "argon2", "p12-keystore", "custos-keys", "custos-store"];

struct Graph {
    /// Normal and build dependencies by package name (workspace and registry).
    edges: BTreeMap<String, BTreeSet<String>>,
    /// Workspace members and their source directories.
    members: BTreeMap<String, PathBuf>,
}

fn graph() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Only this platform's dependencies: the others are neither built nor, on a fresh machine, downloaded.
    let host = std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let host = String::from_utf8_lossy(&host.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("host triple");
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--filter-platform", &host])
        .current_dir(&root)
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let names: BTreeMap<String, String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id").to_string(), p["name"].as_str().expect("name").to_string()))
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve nodes") {
        let from = names[node["id"].as_str().expect("id")].clone();
        let set = edges.entry(from).or_default();
        for dep in node["deps"].as_array().expect("deps") {
            let shipped = dep["dep_kinds"]
                .as_array()
                .expect("dep kinds")
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            if shipped {
                set.insert(names[dep["pkg"].as_str().expect("pkg")].clone());
            }
        }
    }
    let workspace: BTreeSet<&str> =
        meta["workspace_members"].as_array().expect("members").iter().filter_map(|m| m.as_str()).collect();
    let members = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| workspace.contains(p["id"].as_str().unwrap_or_default()))
        .map(|p| {
            let manifest = PathBuf::from(p["manifest_path"].as_str().expect("manifest"));
            (p["name"].as_str().expect("name").to_string(), manifest.parent().expect("dir").join("src"))
        })
        .collect();
    Graph { edges, members }
}

impl Graph {
    /// Everything `from` depends on, at any depth.
    fn closure(&self, from: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(next) = todo.pop() {
            for dep in self.edges.get(&next).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    todo.push(dep.clone());
                }
            }
        }
        seen
    }
}

#[test]
fn crate_edges_point_down() {
    let g = graph();
    let mut broken = Vec::new();
    for (from, to, why) in FORBIDDEN {
        assert!(g.members.contains_key(*from), "{from} is not a workspace member");
        if g.closure(from).contains(*to) {
            broken.push(format!("{from} -> {to} (at any depth): {why}"));
        }
    }
    for (from, to, why) in FORBIDDEN_DIRECT {
        if g.edges.get(*from).is_some_and(|deps| deps.contains(*to)) {
            broken.push(format!("{from} -> {to}: {why}"));
        }
    }
    for pure in PURE {
        let all = g.closure(pure);
        for bad in NOT_IN_PURE {
            if all.contains(*bad) {
                broken.push(format!("{pure} (pure) depends on {bad}"));
            }
        }
    }
    assert!(broken.is_empty(), "forbidden dependency edges:\n{}", broken.join("\n"));
}

/// The modules of one crate (by file) and the sibling modules each names through `crate::`.
fn module_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() && path.file_name().is_some_and(|n| n != "bin") {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    // A module is named by its top-level path below src (`incident/execute.rs` is `incident`'s child,
    // and counts as `incident` against its siblings).
    let top = |path: &Path| -> Option<String> {
        let rel = path.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?.trim_end_matches(".rs").to_string();
        (first != "lib" && first != "main").then_some(first)
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top(f)).collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(me) = top(file) else { continue };
        let text = std::fs::read_to_string(file).expect("read module");
        let entry = imports.entry(me.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if name != me && modules.contains(&name) {
                entry.insert(name);
            }
            // `use crate::{a, b::c}` names several modules at once.
            if rest.starts_with('{') {
                let group = &rest[1..rest.find('}').unwrap_or(rest.len() - 1).max(1)];
                for part in group.split(',') {
                    let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if name != me && modules.contains(&name) {
                        entry.insert(name);
                    }
                }
            }
        }
    }
    imports
}

/// A cycle in the module graph, if any, as a path.
fn cycle(imports: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut c = path[at..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in imports.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, imports, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    imports.keys().find_map(|k| visit(k, imports, &mut Vec::new(), &mut done))
}

#[test]
fn no_two_modules_import_each_other() {
    let g = graph();
    let mut cycles = Vec::new();
    for (name, src) in &g.members {
        if let Some(c) = cycle(&module_imports(src)) {
            cycles.push(format!("{name}: {}", c.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "module import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut imports = BTreeMap::new();
    imports.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    imports.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    imports.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycle(&imports), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    imports.insert("c".to_string(), BTreeSet::new());
    assert_eq!(cycle(&imports), None);
}
