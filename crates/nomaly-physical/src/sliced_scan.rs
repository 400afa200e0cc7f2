//! Keeps chunks' Parquet row selections in a plan sent to Ballista.
//!
//! A chunk smaller than its row group is a file scan whose file carries a [`ParquetRowSelection`]
//! (see `chunks`). DataFusion's plan serialisation drops such per-file extensions, so an executor
//! would read the whole row group for every slice. Before a plan goes to a cluster,
//! [`keep_row_selections`] wraps each scan with selections in a [`SlicedScanExec`]: a node of ours
//! that the codec encodes with the selections and that puts them back on the scan it wraps after
//! decoding. A child replaced in process (Ballista's scheduler regroups a fit's files) keeps the
//! selections on its files, and the node takes them from there.

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The selection of one file of a scan, as (skip, rows) runs; `None` = the whole file.
type Selectors = Option<Vec<(bool, u64)>>;

/// A Parquet scan whose files read row selections, kept through serialisation.
#[derive(Debug)]
pub struct SlicedScanExec {
    /// The scan, with the selections attached.
    scan: Arc<dyn ExecutionPlan>,
    /// Per file group, per file.
    selections: Vec<Vec<Selectors>>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    selections: Vec<Vec<Selectors>>,
}

fn file_scan(plan: &dyn ExecutionPlan) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .as_ref()
        .downcast_ref::<FileScanConfig>()
}

/// The selections of every file of `config`, when any file has one.
fn selections_of(config: &FileScanConfig) -> Option<Vec<Vec<Selectors>>> {
    let all: Vec<Vec<Selectors>> = config
        .file_groups
        .iter()
        .map(|g| {
            g.files()
                .iter()
                .map(|f| {
                    f.extension::<ParquetRowSelection>().map(|s| {
                        s.selection()
                            .iter()
                            .map(|r| (r.skip, r.row_count as u64))
                            .collect()
                    })
                })
                .collect()
        })
        .collect();
    all.iter().flatten().any(Option::is_some).then_some(all)
}

/// `plan` with every scan whose files read row selections wrapped in a [`SlicedScanExec`]
/// (once: a scan already wrapped is left as it is).
pub fn keep_row_selections(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_down(|node| {
            if node.as_ref().is::<SlicedScanExec>() {
                return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
            }
            let Some(selections) = file_scan(node.as_ref()).and_then(selections_of) else {
                return Ok(Transformed::no(node));
            };
            let sliced = Arc::new(SlicedScanExec {
                scan: node,
                selections,
            });
            Ok(Transformed::new(sliced, true, TreeNodeRecursion::Jump))
        })?
        .data)
}

impl SlicedScanExec {
    /// Wraps `scan` (a decoded file scan, without selections), attaching `selections` file by file.
    fn attach(
        scan: Arc<dyn ExecutionPlan>,
        selections: Vec<Vec<Selectors>>,
    ) -> DfResult<SlicedScanExec> {
        let bad = |what: String| {
            DataFusionError::Internal(format!("SlicedScanExec over {}: {what}", scan.name()))
        };
        let config = file_scan(scan.as_ref()).ok_or_else(|| bad("not a file scan".into()))?;
        // A scan that has its selections (an optimizer on the scheduler regrouped the files of
        // one we decoded) keeps them, wherever its files now are.
        if config.file_groups.len() != selections.len() {
            return Err(bad(format!(
                "{} file groups, {} selections",
                config.file_groups.len(),
                selections.len()
            )));
        }
        let groups = config
            .file_groups
            .iter()
            .zip(&selections)
            .map(|(g, sel)| {
                if g.files().len() != sel.len() {
                    return Err(bad(format!(
                        "a group of {} files has {} selections",
                        g.files().len(),
                        sel.len()
                    )));
                }
                let files =
                    g.files()
                        .iter()
                        .zip(sel)
                        .map(|(f, s)| match s {
                            Some(runs) => f.clone().with_extension(ParquetRowSelection::new(
                                RowSelection::from(
                                    runs.iter()
                                        .map(|&(skip, rows)| RowSelector {
                                            row_count: rows as usize,
                                            skip,
                                        })
                                        .collect::<Vec<_>>(),
                                ),
                            )),
                            None => f.clone(),
                        })
                        .collect();
                Ok(FileGroup::new(files))
            })
            .collect::<DfResult<Vec<_>>>()?;
        let rebuilt = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(groups)
            .build();
        Ok(SlicedScanExec {
            scan: DataSourceExec::from_data_source(rebuilt),
            selections,
        })
    }

    pub fn encode(&self, buf: &mut Vec<u8>) -> DfResult<()> {
        let payload = Payload {
            selections: self.selections.clone(),
        };
        let bytes = postcard::to_stdvec(&payload)
            .map_err(|e| DataFusionError::Internal(format!("encoding SlicedScanExec: {e}")))?;
        buf.extend_from_slice(&bytes);
        Ok(())
    }

    pub fn decode(buf: &[u8], inputs: &[Arc<dyn ExecutionPlan>]) -> DfResult<Self> {
        let payload: Payload = postcard::from_bytes(buf)
            .map_err(|e| DataFusionError::Internal(format!("decoding SlicedScanExec: {e}")))?;
        let [scan] = inputs else {
            return Err(DataFusionError::Internal(format!(
                "SlicedScanExec takes one child, got {}",
                inputs.len()
            )));
        };
        Self::attach(scan.clone(), payload.selections)
    }
}

impl DisplayAs for SlicedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let sliced = self.selections.iter().flatten().flatten().count();
        write!(f, "SlicedScanExec: files_with_row_selections={sliced}")
    }
}

impl ExecutionPlan for SlicedScanExec {
    fn name(&self) -> &'static str {
        "SlicedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.scan.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.scan]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// A child replaced in process (Ballista's scheduler regroups a fit's files, and narrows a
    /// task's scan to its own file groups) carries the selections on its files: the node takes
    /// them from there, wherever the files now are.
    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let scan = children.into_iter().next().ok_or_else(|| {
            DataFusionError::Internal("SlicedScanExec takes one child".to_string())
        })?;
        let config = file_scan(scan.as_ref()).ok_or_else(|| {
            DataFusionError::Internal(format!("SlicedScanExec over {}", scan.name()))
        })?;
        let selections = selections_of(config).unwrap_or_else(|| {
            config
                .file_groups
                .iter()
                .map(|g| vec![None; g.files().len()])
                .collect()
        });
        Ok(Arc::new(SlicedScanExec { scan, selections }))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.scan.execute(partition, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{find, plan, sorted_rows};
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::physical_plan::ExecutionPlanProperties;
    use datafusion::prelude::{ParquetReadOptions, SessionContext};

    /// A session reading table `t`: `files` Parquet files of 1,000 ids each (file `f` holds
    /// `f*1000 ..`), one row group per file, one partition per file.
    async fn parquet_table(dir: &std::path::Path, files: usize) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        for f in 0..files {
            let ids = Int64Array::from_iter_values((0..1_000).map(|i| (f * 1_000 + i) as i64));
            let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(ids)]).unwrap();
            let file = std::fs::File::create(dir.join(format!("part-{f}.parquet"))).unwrap();
            let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), None).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
        }
        let ctx = crate::test_util::session(false, files, None);
        let path = format!("{}/", dir.display());
        ctx.register_parquet("t", &path, ParquetReadOptions::default())
            .await
            .unwrap();
        ctx
    }

    /// The bare file scan of `SELECT id FROM t`.
    async fn scan(ctx: &SessionContext) -> Arc<dyn ExecutionPlan> {
        find(&plan(ctx, "SELECT id FROM t").await, "DataSourceExec").expect("a scan")
    }

    /// Ids `first ..< first + n` as the sorted rows `sorted_rows` prints.
    fn ids(ranges: &[(i64, i64)]) -> Vec<String> {
        let mut all: Vec<String> = ranges
            .iter()
            .flat_map(|&(first, n)| (first..first + n).map(|i| i.to_string()))
            .collect();
        all.sort();
        all
    }

    #[tokio::test]
    async fn a_scan_without_selections_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = parquet_table(dir.path(), 2).await;
        let plain = plan(&ctx, "SELECT id FROM t WHERE id > 5").await;
        let kept = keep_row_selections(Arc::clone(&plain)).unwrap();
        assert!(Arc::ptr_eq(&plain, &kept));
    }

    /// The selection reads only its rows, and survives encode → decode onto a scan without it.
    #[tokio::test]
    async fn selections_survive_the_codec_and_read_only_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = parquet_table(dir.path(), 1).await;
        let bare = scan(&ctx).await;
        let selection = vec![vec![Some(vec![(true, 100), (false, 50), (true, 850)])]];
        let sliced = Arc::new(SlicedScanExec::attach(Arc::clone(&bare), selection).unwrap());
        assert_eq!(
            sorted_rows(sliced.clone(), &ctx).await.unwrap(),
            ids(&[(100, 50)])
        );
        // Found and wrapped again by the planner-side rule: no second wrapper.
        let rewrapped = keep_row_selections(sliced.clone()).unwrap();
        assert!(Arc::ptr_eq(
            &(sliced.clone() as Arc<dyn ExecutionPlan>),
            &rewrapped
        ));
        let mut buf = Vec::new();
        sliced.encode(&mut buf).unwrap();
        let decoded = Arc::new(SlicedScanExec::decode(&buf, &[bare]).unwrap());
        assert_eq!(decoded.selections, sliced.selections);
        assert_eq!(sorted_rows(decoded, &ctx).await.unwrap(), ids(&[(100, 50)]));
    }

    /// Each file group keeps its own selections, also when the child is replaced in process.
    #[tokio::test]
    async fn many_partitions_keep_their_own_selections() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = parquet_table(dir.path(), 3).await;
        let bare = scan(&ctx).await;
        assert_eq!(bare.output_partitioning().partition_count(), 3);
        let selection = vec![
            vec![Some(vec![(false, 10), (true, 990)])],
            vec![None],
            vec![Some(vec![(true, 998), (false, 2)])],
        ];
        let sliced = Arc::new(SlicedScanExec::attach(bare, selection).unwrap());
        assert_eq!(sliced.properties().partitioning.partition_count(), 3);
        // File names sort, so the groups hold ids 0.., 1000.., 2000.. in that order.
        let expected = ids(&[(0, 10), (1_000, 1_000), (2_998, 2)]);
        assert_eq!(sorted_rows(sliced.clone(), &ctx).await.unwrap(), expected);
        let child = Arc::clone(sliced.children()[0]);
        let replaced = sliced
            .replace_children(
                vec![child],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )
            .unwrap();
        // A scan hands out its files once per execution: read a fresh instance.
        let replaced = datafusion::physical_plan::execution_plan::reset_plan_states(replaced);
        assert_eq!(
            sorted_rows(replaced.unwrap(), &ctx).await.unwrap(),
            expected
        );
    }

    #[tokio::test]
    async fn an_empty_selection_reads_no_rows() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = parquet_table(dir.path(), 1).await;
        let sliced =
            SlicedScanExec::attach(scan(&ctx).await, vec![vec![Some(vec![(true, 1_000)])]]);
        let rows = sorted_rows(Arc::new(sliced.unwrap()), &ctx).await.unwrap();
        assert!(rows.is_empty(), "{rows:?}");
    }

    /// The node is the scan's: same properties; a payload that does not match the scan's files
    /// is refused with both counts.
    #[tokio::test]
    async fn properties_are_the_scans_and_a_mismatched_payload_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = parquet_table(dir.path(), 2).await;
        let bare = scan(&ctx).await;
        let sliced = SlicedScanExec::attach(
            Arc::clone(&bare),
            vec![vec![Some(vec![(false, 1)])], vec![None]],
        )
        .unwrap();
        assert_eq!(sliced.schema(), bare.schema());
        assert_eq!(
            sliced.properties().partitioning.partition_count(),
            bare.output_partitioning().partition_count()
        );
        let mut buf = Vec::new();
        SlicedScanExec::attach(Arc::clone(&bare), vec![vec![None]; 3])
            .map(|_| ())
            .expect_err("three groups of selections for two file groups");
        sliced.encode(&mut buf).unwrap();
        let err = SlicedScanExec::decode(&buf[..buf.len() - 1], &[Arc::clone(&bare)])
            .map(|_| ())
            .expect_err("a truncated payload");
        assert!(err.to_string().contains("decoding SlicedScanExec"), "{err}");
        let err = SlicedScanExec::decode(&buf, &[]).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("takes one child, got 0"), "{err}");
    }
}
