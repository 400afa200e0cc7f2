//! Pipeline dependencies (`after = [...]`): a graph over registered pipelines, its cycles, and
//! when a dependent is ready.

use std::collections::{BTreeMap, BTreeSet};

/// A cycle in `after` edges (`name -> the pipelines it runs after`), as the path that closes it
/// (`["a", "b", "a"]`), or None.
pub fn find_cycle(after: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        node: &str,
        after: &BTreeMap<String, Vec<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let from = path.iter().position(|p| p == node).unwrap_or(0);
                let mut cycle = path[from..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Visiting);
        path.push(node.to_string());
        for next in after.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, after, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in after.keys() {
        let mut path = Vec::new();
        if let Some(c) = visit(node, after, &mut marks, &mut path) {
            return Some(c);
        }
    }
    None
}

/// Whether a pipeline that runs `after` some others is due: every one of them has a succeeded
/// run that finished after this pipeline's latest run was queued (or this one never ran).
/// `succeeded_ms[name]` is the finish time of `name`'s latest succeeded run.
pub fn ready(
    after: &[String],
    succeeded_ms: &BTreeMap<String, i64>,
    own_latest_queued_ms: Option<i64>,
) -> bool {
    let since = own_latest_queued_ms.unwrap_or(i64::MIN);
    let names: BTreeSet<&String> = after.iter().collect();
    !names.is_empty()
        && names
            .iter()
            .all(|n| succeeded_ms.get(*n).is_some_and(|&t| t > since))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(n, a)| (n.to_string(), a.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn cycles_are_found_and_named() {
        assert_eq!(
            find_cycle(&graph(&[("b", &["a"]), ("c", &["a", "b"])])),
            None
        );
        assert_eq!(
            find_cycle(&graph(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"])])),
            Some(vec!["a".into(), "c".into(), "b".into(), "a".into()])
        );
        assert_eq!(
            find_cycle(&graph(&[("a", &["a"])])),
            Some(vec!["a".into(), "a".into()])
        );
    }

    #[test]
    fn a_dependent_waits_for_every_upstream_success() {
        let after = vec!["a".to_string(), "b".to_string()];
        let mut ok = BTreeMap::new();
        ok.insert("a".to_string(), 100);
        assert!(!ready(&after, &ok, None), "b has not succeeded");
        ok.insert("b".to_string(), 120);
        assert!(ready(&after, &ok, None));
        assert!(
            !ready(&after, &ok, Some(110)),
            "a succeeded before our last run"
        );
        assert!(ready(&after, &ok, Some(90)));
    }
}
