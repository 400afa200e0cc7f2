//! Fuzzing pipeline parsing and compilation (SECURITY.md: a submitted pipeline is untrusted).
//! The example pipelines and a few of our own are mutated (tokens inserted, ranges deleted or
//! duplicated, lines swapped, `--set` overrides added) and each result is parsed, substituted and
//! compiled in a confined sandbox. No input may panic, and nothing may be written. Runs
//! `NOMALY_FUZZ_INPUTS` inputs (default 20,000); benchmarks/README.md has the long run.

use crate::compile::compile_in;
use crate::sandbox::Sandbox;
use crate::spec::PipelineFile;
use nomaly_detectors::hashing::DeterministicRng as Rng;
use std::panic::AssertUnwindSafe;
use std::path::Path;

const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "\"",
    "'",
    "=",
    "\n",
    "${",
    "}",
    "$${",
    "${HOME}",
    "${X:-d}",
    "${run.date}",
    "${run.start:%Y/%m}",
    "${run.end:%",
    "${param.p:-v}",
    ":-",
    "[[step]]\nname = \"s\"\nsql = \"",
    "COPY (SELECT 1) TO '/tmp/x'",
    "; DROP TABLE input",
    "[[sink]]\npath = \"",
    "../../",
    "/etc/passwd",
    "link/",
    "*",
    "**/",
    "?",
    "{a,b}",
    "s3://b/k",
    "http://127.0.0.1/",
    "file:///",
    "\u{0}",
    "\r\n",
    "\u{202e}",
    "é",
    "1e309",
    "-1",
    "18446744073709551616",
    "nan",
    "inf",
    "true",
    "{ }",
    "[]",
    "check = \"sql\"",
    "type = \"file\"",
    "type = \"webhook\"\nurl = \"",
    "sql_file = \"",
    "partition_by = [\"",
    "chunk_rows = ",
    "timeout = \"",
    "999999999999h\"",
    "18446744073709551615h\"",
    "99999999999999999d",
    "schedule = \"",
    "*/0 * * * *",
];

fn seeds() -> Vec<String> {
    let mut texts: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipelines"))
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .filter_map(|p| std::fs::read_to_string(p).ok())
                    .collect()
            })
            .unwrap_or_default();
    texts.push(
        "input = \"data.csv\"\noutput = \"out/\"\n[detect]\nalgorithm = \"iforest\"\n\
         columns = [\"a\"]\noptions = { n_trees = 10 }\n[[step]]\nname = \"s\"\nsql = \"SELECT \
         * FROM input\"\n[[validate]]\ncheck = \"sql\"\nname = \"c\"\nsql = \"SELECT 1 WHERE \
         false\"\n[run]\nchunk_rows = 1000\n[retry]\nmax_retries = 2\n"
            .into(),
    );
    texts
}

fn mutate(rng: &mut Rng, seeds: &[String]) -> (String, Vec<String>) {
    let mut t: Vec<char> = seeds[rng.next_below(seeds.len())].chars().collect();
    for _ in 0..1 + rng.next_below(2) {
        let at = rng.next_below(t.len() + 1);
        match rng.next_below(5) {
            0 | 1 => {
                let tok = TOKENS[rng.next_below(TOKENS.len())];
                t.splice(at..at, tok.chars());
            }
            2 => {
                let end = (at + rng.next_below(40)).min(t.len());
                t.drain(at..end);
            }
            3 => {
                let end = (at + rng.next_below(60)).min(t.len());
                let copy: Vec<char> = t[at..end].to_vec();
                t.splice(at..at, copy);
            }
            _ => {
                let text: String = t.iter().collect();
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let (a, b) = (rng.next_below(lines.len()), rng.next_below(lines.len()));
                    lines.swap(a, b);
                }
                t = lines.join("\n").chars().collect();
            }
        }
    }
    let overrides = match rng.next_below(6) {
        0 => vec![format!(
            "{}={}",
            [
                "run.chunk_rows",
                "detect.algorithm",
                "name",
                "a.b.c",
                "",
                "x="
            ][rng.next_below(6)],
            TOKENS[rng.next_below(TOKENS.len())]
        )],
        _ => Vec::new(),
    };
    (t.into_iter().collect(), overrides)
}

#[test]
fn mutated_pipelines_never_panic() {
    let inputs: u64 = std::env::var("NOMALY_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("data.csv"), "a\n1\n2\n").unwrap();
    std::fs::write(root.join("tx.csv"), "amount,latency_ms\n1,2\n").unwrap();
    let sandbox =
        Sandbox::confined(std::slice::from_ref(&root), &[], &["NOMALY_*".into()]).unwrap();
    let before = std::fs::read_dir(&root).unwrap().count();
    let seeds = seeds();
    let mut rng = Rng::new(0x7069_7065);
    let (mut parsed, mut compiled) = (0u64, 0u64);
    let started = std::time::Instant::now();
    for i in 0..inputs {
        let (text, overrides) = mutate(&mut rng, &seeds);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let file = PipelineFile::parse(
                &root.join("p.toml"),
                &text,
                &overrides,
                &|name| sandbox.env(name),
                &crate::RunRequest::default(),
            )
            .ok()?;
            Some(compile_in(file, &sandbox).is_ok())
        }));
        match outcome {
            Ok(Some(ok)) => {
                parsed += 1;
                compiled += u64::from(ok);
            }
            Ok(None) => {}
            Err(_) => panic!("input {i} panicked; its text:\n{text:?}\noverrides {overrides:?}"),
        }
    }
    eprintln!(
        "fuzz_pipelines: {inputs} inputs from {} seeds in {:.1} s: {parsed} parsed, {compiled} \
         compiled, 0 panics",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(parsed > 0, "no mutation parsed");
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        before,
        "compiling wrote a file"
    );
}
