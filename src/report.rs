//! The end-of-run summary: per-host counts of how nodes ended and what was rolled back.

use crate::executor::{NodeRecord, Run};
use crate::output::NodeStatus;
use crate::output::event::HostRecap;
use crate::rollback::RollbackReport;

/// Counts per host, in the order hosts first appear in the graph.
pub fn recap(
    run: &Run,
    records: &[NodeRecord],
    rollback: Option<&RollbackReport>,
) -> Vec<HostRecap> {
    let hosts = run.graph.hosts();
    let mut out: Vec<HostRecap> = hosts
        .iter()
        .map(|h| HostRecap {
            host: h.clone(),
            ..HostRecap::default()
        })
        .collect();
    let pos = |h: &str| hosts.iter().position(|x| x == h);
    for (i, rec) in records.iter().enumerate() {
        let Some(p) = pos(&run.graph.nodes[i].host) else {
            continue;
        };
        let r = &mut out[p];
        match rec.status {
            NodeStatus::Changed | NodeStatus::WouldChange => r.changed += 1,
            NodeStatus::Ok => r.ok += 1,
            NodeStatus::Skipped => r.skipped += 1,
            NodeStatus::Failed | NodeStatus::Ignored | NodeStatus::Cancelled => r.failed += 1,
            NodeStatus::Warning => r.warnings += 1,
            NodeStatus::Unknown => r.unknown += 1,
            NodeStatus::NotRun => r.not_run += 1,
        }
    }
    if let Some(rb) = rollback {
        for &i in &rb.undone {
            if let Some(p) = pos(&run.graph.nodes[i].host) {
                out[p].rolled_back += 1;
            }
        }
    }
    out
}
