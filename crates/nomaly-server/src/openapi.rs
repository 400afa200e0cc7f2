//! The OpenAPI document of the API, generated: every schema comes from the Rust type the server
//! sends or reads (`ToSchema` derives on the bodies, records and events), and every route from
//! the table below (the API fuzz test sends requests to every route it names and expects each to
//! exist). Served at `/api/openapi.json`; `docs/openapi.json` is a copy a test keeps equal.

use crate::backfills::{BackfillList, BackfillRequest, BackfillView};
use crate::bodies::{
    ChunkList, ErrorBody, Health, History, RunList, RunView, ScheduleList, ScheduleRequest,
};
use crate::server::{QueueView, ScheduleView, SubmitRequest};
use std::sync::OnceLock;
use utoipa::ToSchema;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApiBuilder, Ref, RefOr, Required,
    ResponseBuilder,
};

const DESCRIPTION: &str = "Pipeline runs as a service: submit, queue (priority with aging, \
memory-aware admission), watch (SSE), cancel, retry, resume; schedules and dependencies. Every \
route but /health needs `Authorization: Bearer <token>` (on loopback the server makes one at \
first start beside its job store, <db>.token, unless it was given one or started with \
--no-auth). Requests naming a foreign Host (421) or Origin (403), or with a non-JSON body (415), \
are refused before routing. Errors are {\"error\": \"...\"}: 400 bad request, 401 no or wrong \
token, 403 refused by a server rule (a path outside the allowed roots, a command notification), \
404 not found, 409 conflicts with the run's state, 413 body too large, 502 the Ballista \
scheduler (--scheduler) did not answer. The web dashboard is served at / (HTML, no data, so no \
token: its API calls send it).";

/// What a route answers with on success.
#[derive(Clone, Copy)]
enum Answer {
    /// JSON of the named schema.
    Json(&'static str),
    /// A JSON object the API passes through (a run report, a Ballista scheduler's answer).
    Object,
    /// A JSON array the API passes through (a Ballista scheduler's list).
    ObjectList,
    /// Text of this content type.
    Text(&'static str),
    /// Server-Sent Events, each `data:` a StreamEvent.
    Events,
    /// No body.
    Empty,
}

/// One route: method, path, summary, the body it reads, its success answer, its error statuses.
struct Route {
    method: HttpMethod,
    path: &'static str,
    summary: &'static str,
    query: &'static [&'static str],
    body: Option<&'static str>,
    ok: (&'static str, Answer),
    errors: &'static [&'static str],
}

const RUN_ERRORS: &[&str] = &["400", "401", "404"];
const ACT_ERRORS: &[&str] = &["400", "401", "404", "409"];
const CLUSTER_ERRORS: &[&str] = &["401", "404", "502"];

#[rustfmt::skip]
const ROUTES: &[Route] = &[
    Route { method: HttpMethod::Get, path: "/health", summary: "Liveness (no token needed)", query: &[], body: None, ok: ("200", Answer::Json("Health")), errors: &[] },
    Route { method: HttpMethod::Get, path: "/metrics", summary: "Prometheus metrics (nomaly_ prefix)", query: &[], body: None, ok: ("200", Answer::Text("text/plain")), errors: &["401"] },
    Route { method: HttpMethod::Get, path: "/api/openapi.json", summary: "This document", query: &[], body: None, ok: ("200", Answer::Object), errors: &["401"] },
    Route { method: HttpMethod::Post, path: "/api/runs", summary: "Submit a pipeline: a file on the server (path) or its text (toml)", query: &[], body: Some("SubmitRequest"), ok: ("201", Answer::Json("RunView")), errors: &["400", "401", "403", "413"] },
    Route { method: HttpMethod::Get, path: "/api/runs", summary: "List runs, newest first: filtered by state, pipeline and submission time, a page of limit from offset, with the total", query: &["state", "pipeline", "since_ms", "until_ms", "limit", "offset"], body: None, ok: ("200", Answer::Json("RunList")), errors: &["400", "401"] },
    Route { method: HttpMethod::Get, path: "/api/runs/{id}", summary: "One run: state, progress (percent, rows/s, ETA, memory, retries, errors), queue place", query: &[], body: None, ok: ("200", Answer::Json("RunView")), errors: RUN_ERRORS },
    Route { method: HttpMethod::Get, path: "/api/runs/{id}/chunks", summary: "Per-chunk state", query: &[], body: None, ok: ("200", Answer::Json("ChunkList")), errors: RUN_ERRORS },
    Route { method: HttpMethod::Get, path: "/api/runs/{id}/history", summary: "The run's stored events", query: &[], body: None, ok: ("200", Answer::Json("History")), errors: RUN_ERRORS },
    Route { method: HttpMethod::Get, path: "/api/runs/{id}/report", summary: "The run report (JSON, as nomaly run writes it)", query: &[], body: None, ok: ("200", Answer::Object), errors: RUN_ERRORS },
    Route { method: HttpMethod::Get, path: "/api/runs/{id}/logs", summary: "The run's log: its events as lines (time, level, message), those after ?after=SEQ; finished once it ended", query: &["after"], body: None, ok: ("200", Answer::Json("LogList")), errors: RUN_ERRORS },
    Route { method: HttpMethod::Get, path: "/api/runs/{id}/top", summary: "A succeeded run's highest-scored rows, read from its first output (?limit, at most 100)", query: &["limit"], body: None, ok: ("200", Answer::Json("TopRows")), errors: ACT_ERRORS },
    Route { method: HttpMethod::Get, path: "/api/pipelines/{name}/history", summary: "A pipeline's last runs, oldest first: state, date, duration, rows, anomaly rate", query: &["limit"], body: None, ok: ("200", Answer::Json("PipelineHistory")), errors: &["400", "401"] },
    Route { method: HttpMethod::Get, path: "/api/runs/{id}/events", summary: "Server-Sent Events of one run: a snapshot, then its events, ending after finished", query: &[], body: None, ok: ("200", Answer::Events), errors: RUN_ERRORS },
    Route { method: HttpMethod::Post, path: "/api/runs/{id}/cancel", summary: "Cancel: a queued run ends at once; a running one stops at its next batch (committed chunks kept)", query: &[], body: None, ok: ("200", Answer::Json("RunView")), errors: ACT_ERRORS },
    Route { method: HttpMethod::Post, path: "/api/runs/{id}/retry", summary: "Queue an ended run again from the start", query: &[], body: None, ok: ("200", Answer::Json("RunView")), errors: ACT_ERRORS },
    Route { method: HttpMethod::Post, path: "/api/runs/{id}/resume", summary: "Queue a failed, cancelled or timed-out run again, continuing from its committed chunks", query: &[], body: None, ok: ("200", Answer::Json("RunView")), errors: ACT_ERRORS },
    Route { method: HttpMethod::Get, path: "/api/events", summary: "Server-Sent Events of every run", query: &[], body: None, ok: ("200", Answer::Events), errors: &["401"] },
    Route { method: HttpMethod::Get, path: "/api/queue", summary: "The queue: positions, effective priorities, estimated starts, memory reserved", query: &[], body: None, ok: ("200", Answer::Json("QueueView")), errors: &["401"] },
    Route { method: HttpMethod::Post, path: "/api/backfills", summary: "Backfill: one run per ended interval of the pipeline's schedule (days, without one) from..to, at a low priority", query: &[], body: Some("BackfillRequest"), ok: ("201", Answer::Json("BackfillView")), errors: &["400", "401", "403", "413"] },
    Route { method: HttpMethod::Get, path: "/api/backfills", summary: "Backfills, newest first, each with its runs and counts", query: &["limit"], body: None, ok: ("200", Answer::Json("BackfillList")), errors: &["400", "401"] },
    Route { method: HttpMethod::Get, path: "/api/backfills/{id}", summary: "One backfill: its state, counts per run state, and its runs oldest interval first", query: &[], body: None, ok: ("200", Answer::Json("BackfillView")), errors: RUN_ERRORS },
    Route { method: HttpMethod::Post, path: "/api/backfills/{id}/cancel", summary: "Cancel every queued or running run of a backfill", query: &[], body: None, ok: ("200", Answer::Json("BackfillView")), errors: ACT_ERRORS },
    Route { method: HttpMethod::Get, path: "/api/models", summary: "Registered models: every version in the registries beside the roots and the registered pipelines", query: &[], body: None, ok: ("200", Answer::Json("ModelList")), errors: &["401"] },
    Route { method: HttpMethod::Get, path: "/api/models/{name}", summary: "The versions of one model, with their training-score deciles", query: &[], body: None, ok: ("200", Answer::Json("ModelList")), errors: &["400", "401", "404"] },
    Route { method: HttpMethod::Get, path: "/api/schedules", summary: "Registered pipelines with their schedules, dependencies and next fire times", query: &[], body: None, ok: ("200", Answer::Json("ScheduleList")), errors: &["401"] },
    Route { method: HttpMethod::Post, path: "/api/schedules", summary: "Register (or update) a pipeline file: its schedule, after and on_failure", query: &[], body: Some("ScheduleRequest"), ok: ("201", Answer::Json("ScheduleView")), errors: &["400", "401", "403"] },
    Route { method: HttpMethod::Get, path: "/api/schedules/{name}", summary: "One registered pipeline", query: &[], body: None, ok: ("200", Answer::Json("ScheduleView")), errors: &["401", "404"] },
    Route { method: HttpMethod::Delete, path: "/api/schedules/{name}", summary: "Unregister a pipeline (its runs stay)", query: &[], body: None, ok: ("204", Answer::Empty), errors: &["401", "404"] },
    Route { method: HttpMethod::Get, path: "/api/cluster", summary: "The Ballista scheduler this server shows (--scheduler) and its state", query: &[], body: None, ok: ("200", Answer::Object), errors: CLUSTER_ERRORS },
    Route { method: HttpMethod::Get, path: "/api/cluster/executors", summary: "The scheduler's executors (host, slots, last seen)", query: &[], body: None, ok: ("200", Answer::ObjectList), errors: CLUSTER_ERRORS },
    Route { method: HttpMethod::Get, path: "/api/cluster/jobs", summary: "The scheduler's jobs with their progress", query: &[], body: None, ok: ("200", Answer::ObjectList), errors: CLUSTER_ERRORS },
    Route { method: HttpMethod::Get, path: "/api/cluster/jobs/{id}", summary: "One job", query: &[], body: None, ok: ("200", Answer::Object), errors: &["400", "401", "404", "502"] },
    Route { method: HttpMethod::Get, path: "/api/cluster/jobs/{id}/stages", summary: "A job's stages: status, rows, task timings (percentiles) and tasks", query: &[], body: None, ok: ("200", Answer::Object), errors: &["400", "401", "404", "502"] },
    Route { method: HttpMethod::Get, path: "/api/cluster/jobs/{id}/dot", summary: "A job's stage plan as Graphviz DOT text (the dashboard draws it)", query: &[], body: None, ok: ("200", Answer::Text("text/vnd.graphviz")), errors: &["400", "401", "404", "502"] },
    Route { method: HttpMethod::Post, path: "/api/cluster/jobs/{id}/cancel", summary: "Cancel a job on the scheduler", query: &[], body: None, ok: ("200", Answer::Object), errors: &["400", "401", "404", "502"] },
];

/// The schemas of every body, with the schemas they refer to.
fn schemas() -> Vec<(String, RefOr<Schema>)> {
    let mut all = Vec::new();
    fn add<T: ToSchema>(all: &mut Vec<(String, RefOr<Schema>)>) {
        all.push((T::name().into_owned(), T::schema()));
        T::schemas(all);
    }
    add::<Health>(&mut all);
    add::<ErrorBody>(&mut all);
    add::<SubmitRequest>(&mut all);
    add::<RunView>(&mut all);
    add::<RunList>(&mut all);
    add::<ChunkList>(&mut all);
    add::<History>(&mut all);
    add::<QueueView>(&mut all);
    add::<ScheduleRequest>(&mut all);
    add::<BackfillRequest>(&mut all);
    add::<BackfillView>(&mut all);
    add::<BackfillList>(&mut all);
    add::<crate::models::ModelList>(&mut all);
    add::<crate::run_logs::LogList>(&mut all);
    add::<crate::run_results::TopRows>(&mut all);
    add::<crate::run_results::PipelineHistory>(&mut all);
    add::<ScheduleView>(&mut all);
    add::<ScheduleList>(&mut all);
    add::<crate::events::StreamEvent>(&mut all);
    all
}

fn json_of(answer: Answer) -> Option<(&'static str, RefOr<Schema>)> {
    let object = || RefOr::T(Schema::Object(ObjectBuilder::new().build()));
    let text = || {
        RefOr::T(Schema::Object(
            ObjectBuilder::new().schema_type(Type::String).build(),
        ))
    };
    match answer {
        Answer::Json(name) => Some(("application/json", Ref::from_schema_name(name).into())),
        Answer::Object => Some(("application/json", object())),
        Answer::ObjectList => Some((
            "application/json",
            RefOr::T(Schema::Array(ArrayBuilder::new().items(object()).build())),
        )),
        Answer::Text(kind) => Some((kind, text())),
        Answer::Events => Some(("text/event-stream", text())),
        Answer::Empty => None,
    }
}

fn operation(route: &Route) -> utoipa::openapi::path::Operation {
    let mut op = OperationBuilder::new().summary(Some(route.summary));
    for segment in route.path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            // Run ids are numbers; schedule names and Ballista job ids are text.
            let kind = if route.path.starts_with("/api/runs/") {
                Type::Integer
            } else {
                Type::String
            };
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(kind))),
            );
        }
    }
    for name in route.query {
        let kind = if *name == "limit" {
            Type::Integer
        } else {
            Type::String
        };
        op = op.parameter(
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .schema(Some(ObjectBuilder::new().schema_type(kind))),
        );
    }
    if let Some(body) = route.body {
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(body)))
            .build();
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content("application/json", content)
                .build(),
        ));
    }
    let mut ok = ResponseBuilder::new().description(route.summary);
    if let Some((kind, schema)) = json_of(route.ok.1) {
        ok = ok.content(kind, ContentBuilder::new().schema(Some(schema)).build());
    }
    op = op.response(route.ok.0, ok.build());
    for status in route.errors {
        let error = ResponseBuilder::new()
            .description("an error: the reason in `error`")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
        op = op.response(*status, error.build());
    }
    if route.path == "/health" {
        op = op.security(SecurityRequirement::default());
    }
    op.build()
}

fn document() -> utoipa::openapi::OpenApi {
    let mut paths = PathsBuilder::new();
    for route in ROUTES {
        paths = paths.path(
            route.path,
            PathItem::new(route.method.clone(), operation(route)),
        );
    }
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas())
        .security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("nomaly serve")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(DESCRIPTION)),
        )
        .paths(paths)
        .components(Some(components))
        .security(Some([SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]))
        .build()
}

/// The document as JSON (built once).
pub fn openapi_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| document().to_pretty_json().expect("the document is JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every schema a route or a schema refers to is in the document.
    #[test]
    fn every_reference_resolves() {
        let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
        let names = doc["components"]["schemas"].as_object().unwrap();
        let text = openapi_json();
        for piece in text.split("\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(
                names.contains_key(name),
                "{name} is referred to but missing"
            );
        }
        assert!(doc["paths"].as_object().unwrap().len() >= 20);
    }

    /// `docs/openapi.json` is this document (NOMALY_BLESS=1 rewrites it).
    #[test]
    fn the_copy_in_docs_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = format!("{}\n", openapi_json());
        if std::env::var_os("NOMALY_BLESS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let copy = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            copy == generated,
            "docs/openapi.json differs from the generated document; rewrite it with \
             NOMALY_BLESS=1 cargo test -p nomaly-server openapi"
        );
    }
}
