use super::*;

fn pending(output: &Path) -> Pending {
    Pending {
        run_id: "r1".into(),
        output: output.to_path_buf(),
        files: BTreeMap::from([
            ("in/a.parquet".to_string(), 10),
            ("in/b.parquet".to_string(), 20),
        ]),
        taken_at_unix_ms: 1,
    }
}

#[test]
fn a_missing_ledger_is_empty_and_a_damaged_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s/consumed.json");
    assert_eq!(Ledger::load(&path).unwrap(), Ledger::default());
    let ledger = Ledger {
        pending: Some(pending(&dir.path().join("out"))),
        ..Ledger::default()
    };
    ledger.save(&path).unwrap();
    let back = Ledger::load(&path).unwrap();
    assert_eq!(
        (back.format_version, back.pending),
        (FORMAT_VERSION, ledger.pending)
    );
    std::fs::write(&path, b"{\"format_version\": 1, \"consumed\": ").unwrap();
    let e = Ledger::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("consumed.json") && e.contains("delete it"),
        "{e}"
    );
    std::fs::write(&path, b"{\"format_version\": 9, \"consumed\": {}}").unwrap();
    let e = Ledger::load(&path).unwrap_err().to_string();
    assert!(e.contains("ledger format 9"), "{e}");
}

/// A pending run whose output holds no run of its id frees its files; nothing pending settles
/// to nothing. (Published and unfinished runs are settled in the CLI's tests, on real runs.)
#[test]
fn a_pending_run_that_left_nothing_frees_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::default();
    assert_eq!(ledger.settle(), Settled::Nothing);
    ledger.pending = Some(pending(&dir.path().join("out")));
    assert_eq!(ledger.settle(), Settled::Dropped);
    assert!(ledger.pending.is_none() && ledger.consumed.is_empty());
}

#[test]
fn run_ids_differ() {
    let ids: BTreeSet<String> = (0..100).map(|_| new_run_id()).collect();
    assert_eq!(ids.len(), 100);
}
