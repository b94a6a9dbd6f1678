//! Rollback: undoing what a failed run did, in reverse dependency order.
//!
//! Every node that started and may have changed something (changed, failed, ignored,
//! warned or cancelled) is compensated: by its step's `rollback:` actions, or with `auto` by
//! its module's own undo from the pre-state it captured. A node's compensation waits
//! until the compensations of every node that needed it are done; nodes with nothing
//! to undo pass straight through. When a compensation fails, the nodes it would have
//! to wait for are left undone (their order matters), everything else still runs, and
//! the report lists what is left. A second interrupt abandons the rollback.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value as Json, json};
use tokio::task::JoinSet;

use crate::executor::{Interrupts, NodeRecord, Run, render_args};
use crate::modules::{ModuleContext, ModuleError};
use crate::output::{Event, NodeStatus, RollbackStatus};
use crate::playbook::RollbackSpec;

/// How the rollback went.
#[derive(Debug, Clone, Default)]
pub struct RollbackReport {
    /// Every compensation that had to run succeeded.
    pub complete: bool,
    /// The operator abandoned it (second interrupt).
    pub abandoned: bool,
    /// Nodes compensated.
    pub undone: Vec<usize>,
    /// Nodes left as they are, with why.
    pub left_undone: Vec<(usize, String)>,
}

/// Whether a node may have changed something.
fn touched(rec: &NodeRecord) -> bool {
    rec.entered
        && matches!(
            rec.status,
            NodeStatus::Changed
                | NodeStatus::Failed
                | NodeStatus::Ignored
                | NodeStatus::Warning
                | NodeStatus::Cancelled
        )
}

/// Whether there is something to run to compensate this node.
fn has_compensation(run: &Run, i: usize, rec: &NodeRecord) -> bool {
    let step = &run.playbook.steps[run.graph.nodes[i].step];
    match &step.rollback {
        RollbackSpec::None => false,
        RollbackSpec::Auto => rec.undo.iter().any(|(_, u)| u.is_some()),
        RollbackSpec::Actions(a) => !a.is_empty(),
    }
}

/// `--no-rollback`: reports every node that would have been compensated as left undone.
pub fn skipped(
    run: &Run,
    records: &[NodeRecord],
    why: &str,
    only: Option<&HashSet<String>>,
) -> RollbackReport {
    let left: Vec<(usize, String)> = records
        .iter()
        .enumerate()
        .filter(|(i, r)| touched(r) && has_compensation(run, *i, r) && on_hosts(run, *i, only))
        .map(|(i, _)| (i, format!("rollback disabled ({why})")))
        .collect();
    run.emitter.emit(Event::RollbackFinish {
        complete: left.is_empty(),
        left_undone: describe(run, &left),
    });
    RollbackReport {
        complete: left.is_empty(),
        abandoned: false,
        undone: Vec::new(),
        left_undone: left,
    }
}

fn describe(run: &Run, list: &[(usize, String)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(i, why)| {
            let node = &run.graph.nodes[*i];
            (
                run.playbook.steps[node.step].id.clone(),
                node.host.clone(),
                why.clone(),
            )
        })
        .collect()
}

/// Whether node `i` runs on one of `only` (every host when `None`).
fn on_hosts(run: &Run, i: usize, only: Option<&HashSet<String>>) -> bool {
    only.is_none_or(|hosts| hosts.contains(&run.graph.nodes[i].host))
}

/// Compensates the nodes of a failed run in reverse dependency order; with `only`,
/// just the nodes on those hosts (failures tolerated by `max_fail_percentage`).
pub async fn compensate(
    run: &Arc<Run>,
    records: &[NodeRecord],
    reason: &str,
    interrupts: &mut Interrupts,
    only: Option<&HashSet<String>>,
) -> RollbackReport {
    let graph = &run.graph;
    let n = graph.nodes.len();
    if run.opts.check {
        // A dry run changes nothing, so it never compensates anything.
        return RollbackReport {
            complete: true,
            ..RollbackReport::default()
        };
    }
    let candidates: Vec<bool> = (0..n)
        .map(|i| touched(&records[i]) && on_hosts(run, i, only))
        .collect();
    run.emitter.emit(Event::RollbackStart {
        reason: reason.to_string(),
        nodes: candidates.iter().filter(|c| **c).count(),
    });
    // A node is ready once every node that waited for it is done.
    let mut remaining: Vec<usize> = graph.nodes.iter().map(|x| x.dependents.len()).collect();
    let mut blocked: Vec<Option<String>> = vec![None; n];
    let mut done = vec![false; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    let mut tasks: JoinSet<(usize, Result<Option<String>, String>)> = JoinSet::new();
    let mut report = RollbackReport {
        complete: true,
        ..RollbackReport::default()
    };
    let mut abandoned = false;
    let limit = Arc::new(tokio::sync::Semaphore::new(run.opts.forks.max(1)));
    let mut in_flight: HashMap<tokio::task::Id, usize> = HashMap::new();
    loop {
        // Nodes with nothing to run complete at once, which may make others ready.
        while let Some(i) = ready.pop() {
            if let Some(why) = blocked[i].clone() {
                if candidates[i] && has_compensation(run, i, &records[i]) {
                    report.left_undone.push((i, why.clone()));
                    emit_node(run, i, RollbackStatus::LeftUndone, 0.0, Some(why.clone())).await;
                }
                finish(
                    graph,
                    i,
                    Some(why),
                    &mut remaining,
                    &mut blocked,
                    &mut done,
                    &mut ready,
                );
                continue;
            }
            if !candidates[i] {
                finish(
                    graph,
                    i,
                    None,
                    &mut remaining,
                    &mut blocked,
                    &mut done,
                    &mut ready,
                );
                continue;
            }
            if !has_compensation(run, i, &records[i]) {
                emit_node(
                    run,
                    i,
                    RollbackStatus::NothingToDo,
                    0.0,
                    Some(nothing_reason(run, i)),
                )
                .await;
                finish(
                    graph,
                    i,
                    None,
                    &mut remaining,
                    &mut blocked,
                    &mut done,
                    &mut ready,
                );
                continue;
            }
            let run2 = run.clone();
            let rec = records[i].clone();
            let permits = limit.clone();
            let h = tasks.spawn(async move {
                // Bounded like the run itself: at most --forks compensations at once.
                let _permit = permits.acquire_owned().await;
                let started = run2.emitter.elapsed();
                let result = compensate_node(&run2, i, &rec).await;
                let dur = run2.emitter.elapsed() - started;
                match &result {
                    Ok(msg) => {
                        emit_node_at(&run2, i, RollbackStatus::Done, started, dur, msg.clone())
                            .await
                    }
                    Err(e) => {
                        emit_node_at(
                            &run2,
                            i,
                            RollbackStatus::Failed,
                            started,
                            dur,
                            Some(e.clone()),
                        )
                        .await
                    }
                }
                (i, result)
            });
            in_flight.insert(h.id(), i);
        }
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            joined = tasks.join_next_with_id() => {
                let (i, result) = match joined {
                    Some(Ok((id, r))) => { in_flight.remove(&id); r }
                    Some(Err(e)) => {
                        let Some(i) = in_flight.remove(&e.id()) else { continue };
                        (i, Err(format!("internal error: {e}")))
                    }
                    None => break,
                };
                match result {
                    Ok(_) => {
                        report.undone.push(i);
                        finish(graph, i, None, &mut remaining, &mut blocked, &mut done, &mut ready);
                    }
                    Err(e) => {
                        report.complete = false;
                        let step = &run.playbook.steps[graph.nodes[i].step];
                        let shown = if step.no_log { "(hidden by no_log)".to_string() } else { e.clone() };
                        report.left_undone.push((i, format!("its rollback failed: {shown}")));
                        let why = format!("waits for the failed rollback of `{}` on {}", step.id, graph.nodes[i].host);
                        finish(graph, i, Some(why), &mut remaining, &mut blocked, &mut done, &mut ready);
                    }
                }
            }
            () = interrupts.reached(2), if !abandoned => {
                abandoned = true;
                tasks.abort_all();
                for (_, i) in in_flight.drain() {
                    report.left_undone.push((i, "rollback abandoned while running (second Ctrl-C)".into()));
                }
                break;
            }
        }
    }
    if abandoned {
        for i in 0..n {
            if !done[i]
                && candidates[i]
                && has_compensation(run, i, &records[i])
                && !report.left_undone.iter().any(|(j, _)| *j == i)
            {
                report
                    .left_undone
                    .push((i, "rollback abandoned (second Ctrl-C)".into()));
            }
        }
    }
    report.abandoned = abandoned;
    report.complete = report.left_undone.is_empty();
    run.emitter.emit(Event::RollbackFinish {
        complete: report.complete,
        left_undone: describe(run, &report.left_undone),
    });
    report
}

fn finish(
    graph: &crate::graph::Graph,
    i: usize,
    blocked_by: Option<String>,
    remaining: &mut [usize],
    blocked: &mut [Option<String>],
    done: &mut [bool],
    ready: &mut Vec<usize>,
) {
    done[i] = true;
    for &d in &graph.nodes[i].deps {
        if blocked[d].is_none() {
            blocked[d] = blocked_by.clone();
        }
        remaining[d] -= 1;
        if remaining[d] == 0 {
            ready.push(d);
        }
    }
}

fn nothing_reason(run: &Run, i: usize) -> String {
    let step = &run.playbook.steps[run.graph.nodes[i].step];
    match step.rollback {
        RollbackSpec::None => "rollback: none".into(),
        _ => format!("`{}` captured nothing to undo", step.module_name()),
    }
}

async fn emit_node(
    run: &Run,
    i: usize,
    status: RollbackStatus,
    duration: f64,
    msg: Option<String>,
) {
    emit_node_at(run, i, status, run.emitter.elapsed(), duration, msg).await;
}

async fn emit_node_at(
    run: &Run,
    i: usize,
    status: RollbackStatus,
    started: f64,
    duration: f64,
    msg: Option<String>,
) {
    let node = &run.graph.nodes[i];
    let step = &run.playbook.steps[node.step];
    let record = crate::journal::Record::RollbackNode {
        node: i,
        step: step.id.clone(),
        host: node.host.clone(),
        status: crate::executor::json_word(&status),
    };
    if let Err(e) = run.journal_async(&record).await {
        run.emitter.emit(Event::Warning { msg: e });
    }
    run.emitter.emit(Event::RollbackNode {
        step: step.id.clone(),
        name: step.name.clone(),
        host: node.host.clone(),
        status,
        started,
        duration,
        msg: if step.no_log { None } else { msg },
    });
}

/// A past run's record (journaled, `resume` or `rollback RUN_ID`) with the secret module
/// arguments its journal refers to (`arg/STEP/HOST/NAME`, see `modules::SECRET_ARGS`)
/// put back: the step's arguments rendered again for this host, from the inventory and
/// variables of now. `None` when there is nothing to put back.
fn args_again(
    run: &Arc<Run>,
    step: &crate::playbook::Step,
    host: &str,
    rec: &NodeRecord,
) -> Result<Option<NodeRecord>, String> {
    use crate::output::emitter::{refers_to, unrefer};
    let prefix = crate::modules::ARG_SECRET_PREFIX;
    let refers = |v: &Json| refers_to(v, prefix);
    if !rec
        .undo
        .iter()
        .any(|(a, u)| refers(a) || u.as_ref().is_some_and(refers))
    {
        return Ok(None);
    }
    let ctx = run.vars.node_context(step, host, None, &[]);
    let rendered = render_args(&run.templates, &*step.module, &step.args, &ctx).map_err(|e| {
        format!(
            "the arguments of step `{}` cannot be rendered again for its secret ones: {e}",
            step.id
        )
    })?;
    let secrets = crate::modules::secret_values(&rendered);
    let value_of = |name: &str| {
        let at = name.rsplit('/').next()?;
        secrets
            .iter()
            .find(|(p, _)| p == at)
            .map(|(_, v)| zeroize::Zeroizing::new(v.clone()))
    };
    let mut rec = rec.clone();
    for (args, undo) in rec.undo.iter_mut() {
        for v in std::iter::once(args).chain(undo.iter_mut()) {
            unrefer(v, &value_of).map_err(|name| {
                format!(
                    "the argument {} of step `{}` has no value now: give the inventory or -e \
                     the value the run had",
                    name.rsplit('/').next().unwrap_or(&name),
                    step.id
                )
            })?;
        }
    }
    Ok(Some(rec))
}

/// Runs one node's compensation.
async fn compensate_node(
    run: &Arc<Run>,
    i: usize,
    rec: &NodeRecord,
) -> Result<Option<String>, String> {
    let node = &run.graph.nodes[i];
    let step = &run.playbook.steps[node.step];
    let conn = run
        .conns
        .get(&rec.exec_host)
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    // Only a past run's records come from the journal, with references in them.
    let again = if run.prior.contains_key(&i) {
        args_again(run, step, &node.host, rec)?
    } else {
        None
    };
    let rec = again.as_ref().unwrap_or(rec);
    let pre_state: Vec<Json> = rec
        .undo
        .iter()
        .map(|(_, u)| u.clone().unwrap_or(Json::Null))
        .collect();
    let extra = [
        ("result", rec.result.clone()),
        ("pre_state", json!(pre_state)),
    ];
    let vars = run.vars.node_context(step, &node.host, None, &extra);
    let settings = run.inventory.connection(&rec.exec_host);
    let ctx = ModuleContext {
        host: node.host.clone(),
        conn,
        check: false,
        diff: false,
        timeout: step.timeout,
        become_: step.become_with(&settings),
        sink: None,
        templates: run.templates.clone(),
        vars: vars.clone(),
        base_dir: step.base_dir.clone(),
        run_id: run.opts.run_id.clone(),
    };
    let errmsg = |e: ModuleError| match &e {
        ModuleError::Failed {
            output: Some(o), ..
        } if !o.stderr.is_empty() => format!("{e}: {}", o.stderr_text().trim()),
        _ => e.to_string(),
    };
    match &step.rollback {
        RollbackSpec::None => Ok(None),
        RollbackSpec::Auto => {
            let mut msgs = Vec::new();
            for (args, undo) in rec.undo.iter().rev() {
                if let Some(undo) = undo {
                    let out = step.module.undo(&ctx, args, undo).await.map_err(errmsg)?;
                    msgs.extend(out.msg);
                }
            }
            Ok((!msgs.is_empty()).then(|| msgs.join("; ")))
        }
        RollbackSpec::Actions(actions) => {
            let mut msgs = Vec::new();
            for action in actions {
                let args = render_args(&run.templates, &*action.module, &action.args, &vars)
                    .map_err(|e| format!("rollback action at {}: {e}", action.location))?;
                let out = action.module.run(&ctx, &args).await.map_err(errmsg)?;
                let what = match args.get("cmd") {
                    Some(Json::String(c)) => format!("{}: {c}", action.module.doc().name),
                    _ => format!("{} done", action.module.doc().name),
                };
                msgs.push(out.msg.unwrap_or(what));
            }
            Ok(Some(msgs.join("; ")))
        }
    }
}
