use super::*;

fn new_run(name: &str, priority: i64) -> NewRun {
    NewRun {
        pipeline: name.into(),
        file: "/p.toml".into(),
        text: "x".into(),
        overrides: vec!["run.engine=local".into()],
        priority,
        memory_bytes: 1 << 30,
        timeout_ms: None,
        cpus: None,
        trigger: "api".into(),
        context: None,
        backfill: None,
    }
}

#[test]
fn runs_move_through_their_states_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let a = store.insert_run(&new_run("a", 0), 10).unwrap();
    let b = store.insert_run(&new_run("b", 5), 11).unwrap();
    assert!(store.start(a, 20).unwrap());
    assert!(!store.start(a, 21).unwrap(), "only a queued run starts");
    store
        .record_chunk(
            a,
            &ChunkRecord {
                chunk: 0,
                state: "committed".into(),
                rows: 7,
                anomalies: 1,
                at_ms: 22,
            },
        )
        .unwrap();
    let started = RunEventBody::Started {
        pipeline: "p".into(),
        resume: false,
    };
    let phase = RunEventBody::Phase {
        phase: "fit".into(),
    };
    assert_eq!(store.add_event(a, &started, 20).unwrap(), 1);
    assert_eq!(store.add_event(a, &phase, 21).unwrap(), 2);
    drop(store);
    // A server killed here: reopened, the running run goes back to the queue to resume.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.requeue_interrupted(30).unwrap(), vec![a]);
    let run = store.run(a).unwrap().unwrap();
    assert_eq!(
        (run.state, run.mode, run.attempts),
        (RunState::Queued, StartMode::Resume, 1)
    );
    assert_eq!(run.queued_ms, 10, "an interrupted run keeps its place");
    assert_eq!(store.chunks(a).unwrap().len(), 1);
    assert_eq!(store.events(a).unwrap()[1].event, phase);
    assert_eq!(
        store.source(a).unwrap().unwrap().overrides,
        vec!["run.engine=local"]
    );
    // Cancelling a queued run ends it; a finished run is not interrupted, nor ended again,
    // but may be retried.
    assert_eq!(store.request_cancel(b, 40).unwrap(), Some(RunState::Queued));
    assert_eq!(store.run(b).unwrap().unwrap().state, RunState::Cancelled);
    assert!(!store.requeue(b, Transition::Interrupt, 41).unwrap());
    assert!(
        !store
            .finish(b, RunState::Succeeded, None, None, 41)
            .unwrap()
    );
    assert!(!store.requeue(b, Transition::Start, 41).unwrap());
    assert!(store.requeue(b, Transition::Retry, 41).unwrap());
    let run = store.run(b).unwrap().unwrap();
    assert_eq!(
        (run.state, run.mode),
        (RunState::Queued, StartMode::Restart)
    );
    assert_eq!(store.runs(Some(RunState::Queued), 10).unwrap().len(), 2);
    // A running run ends once: a second end is refused and changes nothing.
    assert!(store.start(a, 50).unwrap());
    assert!(!store.start(a, 50).unwrap());
    assert!(
        store
            .finish(a, RunState::Failed, None, Some("boom"), 60)
            .unwrap()
    );
    assert!(
        !store
            .finish(a, RunState::Succeeded, None, None, 61)
            .unwrap()
    );
    assert!(!store.finish(a, RunState::Running, None, None, 61).unwrap());
    let run = store.run(a).unwrap().unwrap();
    assert_eq!(
        (run.state, run.error.as_deref()),
        (RunState::Failed, Some("boom"))
    );
    assert!(store.requeue(a, Transition::Resume, 62).unwrap());
    assert_eq!(store.request_cancel(99, 1).unwrap(), None);
}
