//! The rules of the test suite itself, checked where `make unit` runs them.

use conveyor_testkit::knobs::floored;
use conveyor_testkit::known_bugs::{self, KnownBug};

/// A known bug is listed for the time it takes to fix it, never merged.
#[test]
fn no_known_bug_is_listed() {
    let listed: Vec<&str> = known_bugs::KNOWN_BUGS.iter().map(|bug| bug.name).collect();
    assert!(listed.is_empty(), "known bugs listed in conveyor_testkit::known_bugs: {listed:?}: fix them");
}

/// What a bug excuses: exactly its situations, or every one under a `*` prefix.
#[test]
fn a_known_bug_excuses_its_situations_only() {
    let bug =
        KnownBug { name: "example", diagnosis: "", excuses: &["channels:sweep-outbox", "fault_matrix:rollback/*"] };
    assert!(bug.excuses("channels:sweep-outbox"));
    assert!(!bug.excuses("channels:sweep-outbox-again"));
    assert!(bug.excuses("fault_matrix:rollback/UpdateService#1/throttle"));
    assert!(!bug.excuses("fault_matrix:promote/UpdateService#1/throttle"));
    assert!(known_bugs::excusing("model:runs-an-unnamed-revision").is_none());
}

/// A knob may make a CI run longer, never shorter; outside CI it sets the size.
#[test]
fn knobs_never_shrink_a_ci_run() {
    assert_eq!(floored(None, 30, 30, true), 30);
    assert_eq!(floored(Some(3), 30, 30, true), 30);
    assert_eq!(floored(Some(300), 30, 30, true), 300);
    assert_eq!(floored(Some(3), 30, 30, false), 3);
    // A long mode's default stays; only what is below CI's size is raised.
    assert_eq!(floored(None, 500, 30, true), 500);
    assert_eq!(floored(Some(10), 500, 30, true), 30);
}

/// The library's top-level modules and the ones each uses (`crate::x`), from the sources
/// (test modules left out).
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let module = relative.split('/').next().unwrap().trim_end_matches(".rs").to_owned();
            if module == "lib" || !relative.ends_with(".rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let uses = graph.entry(module.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
            // `use crate::{a, b::C}`
            for (i, _) in code.match_indices("use crate::{") {
                let group = code[i + 12..].split('}').next().unwrap_or_default();
                for item in group.split(',') {
                    let name: String =
                        item.trim().chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    if !name.is_empty() && name != module && name != "self" {
                        uses.insert(name);
                    }
                }
            }
        }
    }
    graph
}

/// No import cycle among the library's modules: each can be read (and changed) knowing only what
/// it uses.
#[test]
fn the_library_has_no_import_cycle() {
    let graph = module_graph();
    assert!(graph.contains_key("ledger") && graph["monitor"].contains("ledger"), "the graph was read: {graph:?}");
    // Depth-first search; a module met again while on the path closes a cycle.
    fn visit<'a>(
        module: &'a str,
        graph: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| *m == module) {
            return Some(path[start..].iter().map(|m| m.to_string()).chain([module.to_owned()]).collect());
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for used in graph.get(module).into_iter().flatten().filter(|m| graph.contains_key(*m)) {
            if let Some(cycle) = visit(used, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle among the library's modules: {}", cycle.join(" -> "));
        }
    }
}
