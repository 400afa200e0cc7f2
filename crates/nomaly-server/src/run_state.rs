//! A run's life as one table: which transition moves a run from which states to which state.
//!
//! The store applies it (every UPDATE of a run's state is guarded by the states the table allows,
//! so two racing actions cannot both move a run), the server asks it what an action may do, and
//! `docs/server.md` shows it as [`markdown`] renders it (a test keeps the two equal).

use serde::{Deserialize, Serialize};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    /// Finished, but a `[[validate]]` check failed.
    ValidationFailed,
    Failed,
    Cancelled,
    TimedOut,
}

impl RunState {
    pub const ALL: [RunState; 7] = [
        RunState::Queued,
        RunState::Running,
        RunState::Succeeded,
        RunState::ValidationFailed,
        RunState::Failed,
        RunState::Cancelled,
        RunState::TimedOut,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::ValidationFailed => "validation_failed",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::TimedOut => "timed_out",
        }
    }

    pub fn parse(text: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|s| s.name() == text)
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }
}

/// What moves a run between states. Cancelling a running run is not a transition: it sets a
/// flag, and the run's task then ends it ([`Transition::End`] with `Cancelled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Admitted from the queue.
    Start,
    /// Its task ended with this (finished) state.
    End(RunState),
    /// Cancelled before it started.
    CancelQueued,
    /// The server stopped while it ran (shutdown or crash): it resumes when the server is back.
    Interrupt,
    /// `retry`: starts over.
    Retry,
    /// `resume`: continues from its committed chunks.
    Resume,
}

use RunState::*;

/// Every transition, the states it may leave, and the state it reaches.
pub const TABLE: [(Transition, &[RunState], RunState); 10] = [
    (Transition::Start, &[Queued], Running),
    (Transition::End(Succeeded), &[Running], Succeeded),
    (
        Transition::End(ValidationFailed),
        &[Running],
        ValidationFailed,
    ),
    (Transition::End(Failed), &[Running], Failed),
    (Transition::End(Cancelled), &[Running], Cancelled),
    (Transition::End(TimedOut), &[Running], TimedOut),
    (Transition::CancelQueued, &[Queued], Cancelled),
    (Transition::Interrupt, &[Running], Queued),
    (
        Transition::Retry,
        &[Failed, Cancelled, TimedOut, ValidationFailed, Succeeded],
        Queued,
    ),
    (Transition::Resume, &[Failed, Cancelled, TimedOut], Queued),
];

impl Transition {
    /// The states this transition may leave (none for `End` of an unfinished state).
    pub fn from(self) -> &'static [RunState] {
        TABLE
            .iter()
            .find(|(t, _, _)| *t == self)
            .map_or(&[], |(_, from, _)| *from)
    }

    /// The state it reaches from `from`, or `None` where the table has no such move.
    pub fn apply(self, from: RunState) -> Option<RunState> {
        TABLE
            .iter()
            .find(|(t, states, _)| *t == self && states.contains(&from))
            .map(|(_, _, to)| *to)
    }

    /// The state it reaches.
    pub fn to(self) -> RunState {
        TABLE
            .iter()
            .find(|(t, _, _)| *t == self)
            .map_or(Queued, |(_, _, to)| *to)
    }

    /// `state IN ('a', 'b')`, for the UPDATE that applies the transition.
    pub fn sql_guard(self) -> String {
        let names: Vec<String> = self
            .from()
            .iter()
            .map(|s| format!("'{}'", s.name()))
            .collect();
        format!("state IN ({})", names.join(", "))
    }

    fn label(self) -> String {
        match self {
            Transition::Start => "start (admitted from the queue)".into(),
            Transition::End(s) => format!("end: {}", s.name()),
            Transition::CancelQueued => "cancel (before it started)".into(),
            Transition::Interrupt => "interrupt (the server stopped)".into(),
            Transition::Retry => "retry".into(),
            Transition::Resume => "resume".into(),
        }
    }
}

/// The table as Markdown, as `docs/server.md` shows it.
pub fn markdown() -> String {
    let mut out = String::from("| transition | from | to |\n|---|---|---|\n");
    for (t, from, to) in TABLE {
        let from: Vec<&str> = from.iter().map(|s| s.name()).collect();
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            t.label(),
            from.join(", "),
            to.name()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every finished state is reached only from `running` or `queued`, every state is
    /// reachable, and the only ways out of a finished state lead back to the queue.
    #[test]
    fn the_table_is_closed_and_every_state_is_reachable() {
        for s in RunState::ALL {
            assert!(
                TABLE.iter().any(|(_, _, to)| *to == s),
                "{} unreachable",
                s.name()
            );
        }
        for (t, from, to) in TABLE {
            for f in from {
                assert_eq!(t.apply(*f), Some(to));
                if f.is_finished() {
                    assert_eq!(to, Queued, "{t:?} leaves a finished run elsewhere");
                }
            }
        }
        assert_eq!(Transition::End(Queued).from(), &[] as &[RunState]);
        assert_eq!(Transition::Start.apply(Running), None);
        assert_eq!(Transition::Resume.apply(Succeeded), None);
        assert_eq!(
            Transition::Resume.sql_guard(),
            "state IN ('failed', 'cancelled', 'timed_out')"
        );
    }

    /// docs/server.md carries the table as it is here.
    #[test]
    fn the_server_docs_show_this_table() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/server.md"))
                .expect("docs/server.md");
        assert!(
            doc.contains(&markdown()),
            "update docs/server.md with:\n{}",
            markdown()
        );
    }
}
