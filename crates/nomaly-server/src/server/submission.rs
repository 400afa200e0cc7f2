//! Submission: a pipeline file or text, checked and compiled for one run request (its date and
//! parameters), then queued.

use super::*;

/// A submission: a pipeline file on the server (`path`) or its text (`toml`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub path: Option<String>,
    pub toml: Option<String>,
    /// With `toml`: the directory its relative paths are resolved against (default: the first
    /// allowed root).
    pub base_dir: Option<String>,
    /// Higher runs first (default 0).
    pub priority: Option<i64>,
    /// The run's memory budget, e.g. "2GB" (default: the pipeline's, else the server's default).
    pub memory_limit: Option<String>,
    /// Wall-clock limit, e.g. "30m" (default: the pipeline's `[resources] timeout`).
    pub timeout: Option<String>,
    pub cpus: Option<u64>,
    /// `KEY=VALUE` overrides, as `nomaly run --set`.
    #[serde(default)]
    pub set: Vec<String>,
    /// The day the run is for (YYYY-MM-DD), as `nomaly run --date` (default: the schedule's
    /// latest ended interval; without a schedule, now).
    pub date: Option<String>,
    /// Values for `${param.NAME}`, as `nomaly run --param`: letters, digits, spaces and
    /// `-_.:/+,@=%` only, at most 256 characters, at most 32 of them.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

impl SubmitRequest {
    /// The run request its `date` and `params` ask for, checked.
    pub fn run_request(&self) -> Result<RunRequest> {
        let date = match &self.date {
            Some(d) => RunDate::Day(
                parse_day(d).map_err(|e| ServerError::BadRequest(format!("date: {e}")))?,
            ),
            None => RunDate::Latest,
        };
        check_params(&self.params).map_err(|e| ServerError::BadRequest(format!("params: {e}")))?;
        Ok(RunRequest::new(date, self.params.clone()))
    }
}

impl Server {
    /// Reads, checks and queues a pipeline. Everything that can be known without the data is
    /// checked here, so a bad file is a 400 now rather than a failed run later.
    pub fn submit(&self, req: SubmitRequest, trigger: &str) -> Result<RunRecord> {
        let (path, text) = self.pipeline_source(&req)?;
        let new = self.new_run(&req, path, text, &req.run_request()?, trigger)?;
        self.enqueue(new)
    }

    /// A pipeline compiled for a run request, on the server's engine unless the file or `set`
    /// names one; with the overrides that say so.
    pub(crate) fn compile_for(
        &self,
        path: &Path,
        text: &str,
        set: &[String],
        request: &RunRequest,
    ) -> Result<(CompiledPipeline, Vec<String>)> {
        let mut overrides = set.to_vec();
        let file = self.parse(path, text, &overrides, request)?;
        if file.spec.run.engine.is_none()
            && let Some(engine) = &self.inner.config.engine
        {
            overrides.push(format!("run.engine={engine}"));
        }
        let compiled = self.compile_checked(path, text, &overrides, request)?;
        Ok((compiled, overrides))
    }

    /// Checks a submission for one run request and makes the run to queue.
    pub(crate) fn new_run(
        &self,
        req: &SubmitRequest,
        path: PathBuf,
        text: String,
        request: &RunRequest,
        trigger: &str,
    ) -> Result<NewRun> {
        let (compiled, overrides) = self.compile_for(&path, &text, &req.set, request)?;
        let memory = match &req.memory_limit {
            Some(m) => nomaly_engine::memory::parse_byte_size(m)
                .map_err(|e| ServerError::BadRequest(format!("memory_limit: {e}")))?
                as u64,
            None => compiled
                .memory_limit
                .map(|m| m as u64)
                .unwrap_or(self.inner.config.default_run_memory),
        };
        let budget = self.inner.config.memory_budget;
        if memory > budget {
            return Err(ServerError::BadRequest(format!(
                "the run needs a {} memory budget but the server has {} in all; lower \
                 [resources] memory_limit (or the request's memory_limit), or start the server \
                 with a larger --memory-limit",
                human_bytes(memory),
                human_bytes(budget)
            )));
        }
        let timeout_ms = match &req.timeout {
            Some(t) => Some(
                nomaly_pipeline::compile::parse_duration(t)
                    .map_err(|e| ServerError::BadRequest(format!("timeout: {e}")))?
                    .as_millis() as u64,
            ),
            None => None,
        };
        if req.cpus == Some(0) {
            return Err(ServerError::BadRequest(
                "cpus must be at least 1".to_string(),
            ));
        }
        Ok(NewRun {
            pipeline: compiled.name.clone(),
            file: path,
            text,
            overrides,
            priority: req.priority.unwrap_or(0),
            memory_bytes: memory,
            timeout_ms,
            cpus: req.cpus,
            trigger: trigger.to_string(),
            context: Some(compiled.file.context.clone()),
            backfill: None,
        })
    }

    pub(crate) fn enqueue(&self, new: NewRun) -> Result<RunRecord> {
        let id = self.inner.store.insert_run(&new, now_ms())?;
        self.event(
            id,
            RunEventBody::Queued {
                pipeline: new.pipeline.clone(),
                priority: new.priority,
                memory_bytes: new.memory_bytes,
                trigger: new.trigger.clone(),
            },
        );
        self.inner.wake.notify_one();
        self.inner
            .store
            .run(id)?
            .ok_or_else(|| ServerError::NotFound(format!("run {id}")))
    }

    /// The pipeline file's path (inside a root) and its text.
    pub(crate) fn pipeline_source(&self, req: &SubmitRequest) -> Result<(PathBuf, String)> {
        let roots = &self.inner.config.roots;
        match (&req.path, &req.toml) {
            (Some(p), None) => {
                let path = roots.check(Path::new(p), "pipeline file")?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| ServerError::BadRequest(format!("{}: {e}", path.display())))?;
                Ok((path, text))
            }
            (None, Some(text)) => {
                let base = match &req.base_dir {
                    Some(b) => roots.check(Path::new(b), "base_dir")?,
                    None => roots.first().to_path_buf(),
                };
                Ok((base.join("submitted.toml"), text.clone()))
            }
            _ => Err(ServerError::BadRequest(
                "give exactly one of \"path\" (a pipeline file on the server) or \"toml\" (its \
                 text)"
                    .to_string(),
            )),
        }
    }
}
