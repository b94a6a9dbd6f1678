//! The dependency graph: a playbook's steps crossed with the hosts they run on.
//!
//! A node is a (step, host) pair. When step B `needs` step A, B on host h waits for A
//! on h if A runs on h; otherwise B on h waits for A on every host A runs on (a
//! barrier) and for the steps A needs (transitively) on h, so `needs` stays transitive
//! per host. `needs: [A@all]` asks for the barrier even where A runs on h. `run_once` steps have one node, on the first of their hosts. Steps left
//! out by `--tags`/`--skip-tags` are looked through: B then waits for what A waited
//! for. A cycle between steps is an error naming every step in it. This module only
//! builds and describes the graph; the executor schedules it.

use std::collections::{HashMap, HashSet};

use petgraph::algo::tarjan_scc;
use petgraph::graph::DiGraph;

use crate::error::{InputErrors, SourceError};
use crate::inventory::Inventory;
use crate::playbook::Playbook;

/// Which steps and hosts of a playbook a run takes.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--limit`: only hosts matching this pattern.
    pub limit: Option<String>,
    /// `--tags`: only steps with one of these tags (and steps tagged `always`).
    pub tags: Vec<String>,
    /// `--skip-tags`: not steps with one of these tags.
    pub skip_tags: Vec<String>,
}

impl Selection {
    fn takes(&self, tags: &[String]) -> bool {
        if tags.iter().any(|t| self.skip_tags.contains(t)) {
            return false;
        }
        self.tags.is_empty() || tags.iter().any(|t| t == "always" || self.tags.contains(t))
    }
}

/// One (step, host) node.
#[derive(Debug, Clone)]
pub struct GraphNode {
    /// Index of the step in the playbook.
    pub step: usize,
    /// The inventory host.
    pub host: String,
    /// Nodes this one waits for.
    pub deps: Vec<usize>,
    /// Nodes that wait for this one.
    pub dependents: Vec<usize>,
    /// 0-based wave: the longest chain of dependencies before it.
    pub wave: usize,
}

/// The graph of a run.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Nodes, in step order then host order.
    pub nodes: Vec<GraphNode>,
    /// For each playbook step, the hosts its pattern selects (before `run_once`);
    /// empty for steps not selected.
    pub step_hosts: Vec<Vec<String>>,
    /// Whether each playbook step is part of this run.
    pub selected: Vec<bool>,
}

impl Graph {
    /// Builds the graph, checking host patterns and cycles.
    pub fn build(pb: &Playbook, inv: &Inventory, sel: &Selection) -> Result<Graph, InputErrors> {
        let mut errors = InputErrors::default();
        check_cycles(pb, &mut errors);
        let limit: Option<HashSet<String>> = match &sel.limit {
            None => None,
            Some(p) => match inv.select(p) {
                Ok(hosts) => Some(hosts.into_iter().collect()),
                Err(e) => {
                    errors.push(
                        SourceError::plain(format!("--limit: {e}"))
                            .with_help("`lifeboat inventory --graph` shows the hosts and groups"),
                    );
                    None
                }
            },
        };
        let index: HashMap<&str, usize> = pb
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let selected: Vec<bool> = pb.steps.iter().map(|s| sel.takes(&s.tags)).collect();
        let mut step_hosts = Vec::with_capacity(pb.steps.len());
        for (i, step) in pb.steps.iter().enumerate() {
            let pattern = step.hosts.as_deref().unwrap_or(&pb.hosts);
            let hosts = match inv.select(pattern) {
                Ok(h) => h,
                Err(e) => {
                    errors.push(
                        SourceError::at(
                            step.hosts_location.clone(),
                            format!("step `{}`: {e}", step.id),
                        )
                        .with_help("`lifeboat inventory --graph` shows the hosts and groups"),
                    );
                    Vec::new()
                }
            };
            let hosts: Vec<String> = match &limit {
                Some(l) => hosts.into_iter().filter(|h| l.contains(h)).collect(),
                None => hosts,
            };
            step_hosts.push(if selected[i] { hosts } else { Vec::new() });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut nodes = Vec::new();
        let mut node_of: HashMap<(usize, &str), usize> = HashMap::new();
        let mut nodes_of_step: Vec<Vec<usize>> = vec![Vec::new(); pb.steps.len()];
        for (i, step) in pb.steps.iter().enumerate() {
            let hosts = &step_hosts[i];
            let run_on: &[String] = if step.run_once {
                &hosts[..hosts.len().min(1)]
            } else {
                hosts
            };
            for h in run_on {
                node_of.insert((i, h.as_str()), nodes.len());
                nodes_of_step[i].push(nodes.len());
                nodes.push(GraphNode {
                    step: i,
                    host: h.clone(),
                    deps: Vec::new(),
                    dependents: Vec::new(),
                    wave: 0,
                });
            }
        }
        // A step left without hosts (by --limit, or tags) is looked through like an
        // unselected one, so ordering through it survives.
        let present: Vec<bool> = nodes_of_step.iter().map(|ns| !ns.is_empty()).collect();
        for n in 0..nodes.len() {
            let mut deps = Vec::new();
            let own_step = nodes[n].step;
            // A run_once node stands for its whole pattern: it waits for the needed
            // step everywhere, like a barrier, and for what ran before it on each host
            // of its pattern.
            let run_once = pb.steps[own_step].run_once;
            let hosts: Vec<&str> = if run_once {
                step_hosts[own_step].iter().map(String::as_str).collect()
            } else {
                vec![nodes[n].host.as_str()]
            };
            for (need, everywhere) in effective_needs(pb, &index, &present, own_step) {
                let same_host = if run_once || everywhere {
                    None
                } else {
                    node_of.get(&(need, nodes[n].host.as_str()))
                };
                match same_host {
                    Some(&d) => deps.push(d),
                    None => {
                        deps.extend(nodes_of_step[need].iter().copied());
                        for h in &hosts {
                            same_host_ancestors(pb, &index, &present, &node_of, need, h, &mut deps);
                        }
                    }
                }
            }
            deps.sort_unstable();
            deps.dedup();
            for &d in &deps {
                nodes[d].dependents.push(n);
            }
            nodes[n].deps = deps;
        }
        // Steps are topologically ordered only if the file says so; compute waves by
        // relaxing in a topological order of the node graph.
        let order = topo_order(&nodes);
        for &n in &order {
            let w = nodes[n]
                .deps
                .iter()
                .map(|&d| nodes[d].wave + 1)
                .max()
                .unwrap_or(0);
            nodes[n].wave = w;
        }
        Ok(Graph {
            nodes,
            step_hosts,
            selected,
        })
    }

    /// Node indices grouped by wave, in order.
    pub fn waves(&self) -> Vec<Vec<usize>> {
        let max = self.nodes.iter().map(|n| n.wave + 1).max().unwrap_or(0);
        let mut waves = vec![Vec::new(); max];
        for (i, n) in self.nodes.iter().enumerate() {
            waves[n.wave].push(i);
        }
        waves
    }

    /// Every host with at least one node, in first-use order.
    pub fn hosts(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.nodes
            .iter()
            .filter(|n| seen.insert(n.host.clone()))
            .map(|n| n.host.clone())
            .collect()
    }

    /// The graph as text: waves, and for each node what it waits for.
    pub fn to_text(&self, pb: &Playbook) -> String {
        let mut out = String::new();
        for (w, wave) in self.waves().iter().enumerate() {
            out.push_str(&format!("wave {}\n", w + 1));
            for &n in wave {
                let node = &self.nodes[n];
                let step = &pb.steps[node.step];
                out.push_str(&format!("  {} @ {}", step.id, node.host));
                if !node.deps.is_empty() {
                    let deps: Vec<String> = node
                        .deps
                        .iter()
                        .map(|&d| {
                            format!("{}@{}", pb.steps[self.nodes[d].step].id, self.nodes[d].host)
                        })
                        .collect();
                    out.push_str(&format!("  <- {}", deps.join(", ")));
                }
                out.push('\n');
            }
        }
        out
    }

    /// The graph in Graphviz DOT.
    pub fn to_dot(&self, pb: &Playbook) -> String {
        let mut g: DiGraph<String, ()> = DiGraph::new();
        let ids: Vec<_> = self
            .nodes
            .iter()
            .map(|n| g.add_node(format!("{} @ {}", pb.steps[n.step].id, n.host)))
            .collect();
        for (i, n) in self.nodes.iter().enumerate() {
            for &d in &n.deps {
                g.add_edge(ids[d], ids[i], ());
            }
        }
        format!(
            "{:?}",
            petgraph::dot::Dot::with_config(&g, &[petgraph::dot::Config::EdgeNoLabel])
        )
    }
}

/// Adds, for a needed step that does not run on `host`, the nodes on `host` of the
/// steps it needs in turn (looking through those that do not run there either). This
/// keeps `needs` transitive per host: when B needs A and A needs X, B on h runs after
/// X on h even though A never runs on h.
fn same_host_ancestors(
    pb: &Playbook,
    index: &HashMap<&str, usize>,
    present: &[bool],
    node_of: &HashMap<(usize, &str), usize>,
    step: usize,
    host: &str,
    deps: &mut Vec<usize>,
) {
    let steps_of = |s: usize| {
        effective_needs(pb, index, present, s)
            .into_iter()
            .map(|(n, _)| n)
    };
    let mut seen = HashSet::new();
    let mut stack: Vec<usize> = steps_of(step).collect();
    while let Some(s) = stack.pop() {
        if !seen.insert(s) {
            continue;
        }
        match node_of.get(&(s, host)) {
            Some(&d) => deps.push(d),
            None => stack.extend(steps_of(s)),
        }
    }
}

/// The selected steps a step waits for, looking through unselected ones, each with
/// whether it is waited for on every host (`needs: [A@all]`, kept through the steps
/// looked through).
fn effective_needs(
    pb: &Playbook,
    index: &HashMap<&str, usize>,
    selected: &[bool],
    step: usize,
) -> Vec<(usize, bool)> {
    let mut out: Vec<(usize, bool)> = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = direct_needs(pb, index, step);
    while let Some((s, everywhere)) = stack.pop() {
        if !seen.insert((s, everywhere)) {
            continue;
        }
        if selected[s] {
            out.push((s, everywhere));
        } else {
            stack.extend(
                direct_needs(pb, index, s)
                    .into_iter()
                    .map(|(n, e)| (n, e || everywhere)),
            );
        }
    }
    out.sort_unstable();
    // A step needed both ways is needed on every host.
    out.dedup_by(|later, earlier| {
        later.0 == earlier.0 && {
            earlier.1 |= later.1;
            true
        }
    });
    out
}

/// The steps a step names in `needs`, with import ids expanded to their steps, each
/// with whether it is waited for on every host (`@all`).
fn direct_needs(pb: &Playbook, index: &HashMap<&str, usize>, step: usize) -> Vec<(usize, bool)> {
    let mut out = Vec::new();
    for (need, _) in &pb.steps[step].needs {
        let (id, everywhere) = crate::playbook::split_need(need);
        if let Some(&i) = index.get(id) {
            out.push((i, everywhere));
        } else if let Some(members) = pb.groups.get(id) {
            out.extend(
                members
                    .iter()
                    .filter_map(|m| index.get(m.as_str()).map(|&i| (i, everywhere))),
            );
        }
    }
    out
}

/// Reports every cycle among steps, naming each step in it.
fn check_cycles(pb: &Playbook, errors: &mut InputErrors) {
    let index: HashMap<&str, usize> = pb
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut g: DiGraph<usize, ()> = DiGraph::new();
    let ids: Vec<_> = (0..pb.steps.len()).map(|i| g.add_node(i)).collect();
    for i in 0..pb.steps.len() {
        for (d, _) in direct_needs(pb, &index, i) {
            g.add_edge(ids[d], ids[i], ());
        }
    }
    for scc in tarjan_scc(&g) {
        let cyclic = scc.len() > 1 || scc.first().is_some_and(|&n| g.contains_edge(n, n));
        if !cyclic {
            continue;
        }
        let mut steps: Vec<usize> = scc.iter().map(|&n| g[n]).collect();
        steps.sort_unstable();
        let names: Vec<String> = steps
            .iter()
            .map(|&s| format!("`{}`", pb.steps[s].id))
            .collect();
        let first = &pb.steps[steps[0]];
        let loc = first
            .needs
            .first()
            .map_or_else(|| first.location.clone(), |(_, l)| l.clone());
        let places: Vec<String> = steps
            .iter()
            .map(|&s| format!("`{}` at {}", pb.steps[s].id, pb.steps[s].location))
            .collect();
        errors.push(
            SourceError::at(
                loc,
                format!("dependency cycle between steps {}", names.join(", ")),
            )
            .with_help(format!(
                "remove one of the `needs` in: {}",
                places.join("; ")
            )),
        );
    }
}

/// A topological order of the nodes (Kahn); nodes are acyclic once steps are.
fn topo_order(nodes: &[GraphNode]) -> Vec<usize> {
    let mut indeg: Vec<usize> = nodes.iter().map(|n| n.deps.len()).collect();
    let mut queue: std::collections::VecDeque<usize> =
        (0..nodes.len()).filter(|&i| indeg[i] == 0).collect();
    let mut out = Vec::with_capacity(nodes.len());
    while let Some(n) = queue.pop_front() {
        out.push(n);
        for &d in &nodes[n].dependents {
            indeg[d] -= 1;
            if indeg[d] == 0 {
                queue.push_back(d);
            }
        }
    }
    out
}
