//! The inventory: which hosts exist, which groups they are in, their variables and how
//! to reach them. Read as Ansible reads inventories, so an existing Ansible or
//! kolla-ansible inventory works unchanged.
//!
//! This file owns the [`Inventory`] type, its queries, loading (format detection,
//! inventory directories) and the final "reconcile" step every reader goes through:
//! groups with no parent become children of `all`, hosts in no group go to
//! `ungrouped`, group depths are computed and cycles (a group that is its own
//! ancestor) are reported.
//!
//! Readers: [`yaml`] (YAML/JSON files), [`ini`] (INI files), [`dynamic`] (executable
//! scripts), [`vars_dirs`] (`group_vars/` and `host_vars/`). Host patterns are in
//! [`pattern`], host ranges (`node[01:03]`) in [`ranges`].
//!
//! Variable precedence (lowest first), as Ansible's: `all` group vars from inventory
//! files < `group_vars/all` < other groups' inventory vars (sorted by depth, then
//! `ansible_group_priority`, then name; later wins) < other groups' `group_vars/`
//! files (same order) < the host's inventory vars < `host_vars/` files. Top-level keys
//! are replaced, not merged (Ansible's default `hash_behaviour=replace`).

pub mod dynamic;
pub mod ini;
pub mod pattern;
pub mod python_literal;
pub mod ranges;
pub mod vars_dirs;
pub mod yaml;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::connection::Become;
use crate::error::{InputErrors, Location, SourceError, SourceFile};

/// Variables: name to value, in the order written.
pub type Vars = IndexMap<String, Json>;

/// A host as the inventory knows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Host {
    /// Variables from inventory files and scripts.
    pub(crate) vars: Vars,
    /// The groups the host was put in directly.
    pub(crate) groups: Vec<String>,
}

/// A group as the inventory knows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Group {
    /// Hosts put in this group directly.
    pub(crate) hosts: Vec<String>,
    /// Child groups, in the order declared.
    pub(crate) children: Vec<String>,
    /// Where each child relation was declared (for cycle errors), when known.
    pub(crate) child_locations: Vec<Option<Location>>,
    /// Parent groups.
    pub(crate) parents: Vec<String>,
    /// Variables from inventory files and scripts.
    pub(crate) vars: Vars,
    /// Length of the longest path from `all` (0 for `all`).
    pub(crate) depth: usize,
    /// `ansible_group_priority` from an inventory source (Ansible's default is 1); as in
    /// Ansible it is no variable, and `group_vars/` cannot set it.
    pub(crate) priority: Option<i64>,
}

/// The hosts and groups of one or more inventory sources.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub(crate) hosts: IndexMap<String, Host>,
    pub(crate) groups: IndexMap<String, Group>,
    /// Variables from `group_vars/` files, by group.
    pub(crate) group_file_vars: IndexMap<String, Vars>,
    /// Variables from `host_vars/` files, by host (also `localhost` when implicit).
    pub(crate) host_file_vars: IndexMap<String, Vars>,
}

/// How a host is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionKind {
    /// Commands run on the controller itself.
    Local,
    /// Commands run over SSH.
    Ssh,
}

/// How to reach a host, read from its merged variables.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionSettings {
    /// `ansible_connection` / `connection`: `local`, or `ssh` (also `smart`, `paramiko`).
    pub kind: ConnectionKind,
    /// `ansible_host` / `ansible_ssh_host` / `host`, default the inventory name.
    pub address: String,
    /// `ansible_port` / `ansible_ssh_port` / `port`.
    pub port: Option<u16>,
    /// `ansible_user` / `ansible_ssh_user` / `user`.
    pub user: Option<String>,
    /// `ansible_ssh_private_key_file` / `ansible_private_key_file` / `key_file`.
    pub key_file: Option<String>,
    /// `ansible_password` / `ansible_ssh_pass` / `password`.
    pub password: Option<String>,
    /// `ansible_become` / `become`.
    pub become_: bool,
    /// `ansible_become_user` / `become_user`.
    pub become_user: Option<String>,
    /// `ansible_become_method` / `become_method` (`sudo` or `su`).
    pub become_method: Option<String>,
    /// `ansible_become_password` / `ansible_become_pass` / `become_password`.
    pub become_password: Option<String>,
    /// `ansible_ssh_common_args`.
    pub ssh_common_args: Option<String>,
    /// The variable names the settings were read from.
    pub vars_used: Vec<String>,
}

impl ConnectionSettings {
    /// The privilege escalation to use for commands, when `become` is on.
    pub fn become_settings(&self) -> Option<Become> {
        self.become_.then(|| Become {
            user: self.become_user.clone(),
            method: self.become_method.clone(),
            password: self.become_password.clone(),
        })
    }
}

/// The inventory formats lifeboat reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Ansible's YAML inventory (also JSON files).
    Yaml,
    /// Ansible's INI inventory.
    Ini,
    /// An executable printing Ansible's dynamic-inventory JSON.
    Dynamic,
}

/// Reads a value as Ansible's `boolean()` filter does: `true`, `yes`, `on`, `y`, `t`,
/// `1` (any case) and non-zero numbers are true; everything else is false.
pub fn truthy(value: &Json) -> bool {
    match value {
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Json::String(s) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "true" | "yes" | "on" | "y" | "t" | "1"
        ),
        _ => false,
    }
}

/// A scalar as text (strings as they are, numbers and booleans printed).
fn scalar_string(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Ansible's default `INVENTORY_IGNORE_EXTS`, plus names that are never inventories.
const IGNORED_SUFFIXES: &[&str] = &[
    ".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry",
];

impl Inventory {
    /// Loads an inventory from a file (YAML, JSON, INI, or an executable script) or a
    /// directory of them, with the `group_vars/` and `host_vars/` beside it.
    /// `None` gives the implicit inventory: one host `localhost` on the local
    /// connection, in groups `all` and `ungrouped`.
    pub fn load(path: Option<&Path>) -> Result<Inventory, InputErrors> {
        let Some(path) = path else {
            return Ok(Inventory::implicit_localhost());
        };
        let mut inv = Inventory::empty();
        let mut errors = InputErrors::default();
        let vars_dir: PathBuf;
        if path.is_dir() {
            inv.read_dir(path, &mut errors);
            vars_dir = path.to_path_buf();
        } else if path.exists() {
            inv.read_file(path, None, &mut errors);
            vars_dir = path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
        } else if path.to_string_lossy().contains(',') {
            // Ansible's `-i host1,host2,` host list.
            for name in path.to_string_lossy().split(',') {
                let name = name.trim();
                if !name.is_empty() {
                    inv.add_host(name, "ungrouped");
                }
            }
            return inv.finish_or_errors(errors);
        } else {
            errors.push(
                SourceError::plain(format!(
                    "inventory {} does not exist",
                    path.display()
                ))
                .with_help(
                    "give the path of an inventory file or directory, or leave -i out to run on localhost",
                ),
            );
            return Err(errors);
        }
        errors.extend(inv.reconcile());
        vars_dirs::load(&vars_dir, &mut inv, &mut errors);
        errors.into_result(inv)
    }

    /// Parses an INI inventory from text (no `group_vars/` are read).
    pub fn from_ini(file: &SourceFile) -> Result<Inventory, InputErrors> {
        let mut inv = Inventory::empty();
        let mut errors = InputErrors::default();
        ini::parse(file, &mut inv, &mut errors);
        inv.finish_or_errors(errors)
    }

    /// Parses a YAML (or JSON) inventory from text (no `group_vars/` are read).
    pub fn from_yaml(file: &SourceFile) -> Result<Inventory, InputErrors> {
        let mut inv = Inventory::empty();
        let mut errors = InputErrors::default();
        yaml::parse(file, &mut inv, &mut errors);
        inv.finish_or_errors(errors)
    }

    /// Builds an inventory from Ansible's dynamic-inventory JSON (the output of
    /// `script --list`); `source` names it in errors. Hosts missing from
    /// `_meta.hostvars` get no variables (no script is run).
    pub fn from_dynamic_json(source: &str, text: &str) -> Result<Inventory, InputErrors> {
        let mut inv = Inventory::empty();
        let mut errors = InputErrors::default();
        dynamic::parse_list(
            source,
            text,
            &mut inv,
            &mut errors,
            &mut |_| Ok(Vars::new()),
        );
        inv.finish_or_errors(errors)
    }

    fn finish_or_errors(mut self, mut errors: InputErrors) -> Result<Inventory, InputErrors> {
        errors.extend(self.reconcile());
        errors.into_result(self)
    }

    /// The implicit inventory: `localhost` on the local connection.
    pub fn implicit_localhost() -> Inventory {
        let mut inv = Inventory::empty();
        inv.add_host("localhost", "ungrouped");
        inv.set_host_var("localhost", "ansible_connection", Json::from("local"));
        // Reconciling a fixed inventory cannot fail.
        let _ = inv.reconcile();
        inv
    }

    /// An inventory with only the groups `all` and `ungrouped`.
    pub(crate) fn empty() -> Inventory {
        let mut inv = Inventory::default();
        inv.add_group("all");
        // First of `all`'s children, whatever a source adds, as in Ansible.
        inv.add_child("all", "ungrouped", None);
        inv
    }

    /// Which reader a file needs: by extension, by being executable, or by its first
    /// meaningful line (`all:` or `---` means YAML).
    pub fn detect_format(path: &Path) -> Format {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "yml" | "yaml" | "json" => return Format::Yaml,
            "ini" => return Format::Ini,
            _ => {}
        }
        if is_executable(path) {
            return Format::Dynamic;
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if looks_like_yaml(&text) {
            Format::Yaml
        } else {
            Format::Ini
        }
    }

    fn read_file(&mut self, path: &Path, format: Option<Format>, errors: &mut InputErrors) {
        let format = format.unwrap_or_else(|| Inventory::detect_format(path));
        if format == Format::Dynamic {
            dynamic::load(path, self, errors);
            return;
        }
        let file = match SourceFile::read(path) {
            Ok(f) => f,
            Err(e) => {
                errors.push(e);
                return;
            }
        };
        match format {
            Format::Yaml => yaml::parse(&file, self, errors),
            Format::Ini => ini::parse(&file, self, errors),
            Format::Dynamic => {}
        }
    }

    /// An inventory directory: every inventory file in it (sorted, recursively), skipping
    /// `group_vars/`, `host_vars/`, hidden files and Ansible's ignored extensions.
    fn read_dir(&mut self, dir: &Path, errors: &mut InputErrors) {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                errors.push(
                    SourceError::plain(format!("cannot read directory {}: {e}", dir.display()))
                        .with_help("check the path and its permissions"),
                );
                return;
            }
        };
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.')
                || name == "group_vars"
                || name == "host_vars"
                || IGNORED_SUFFIXES.iter().any(|s| name.ends_with(s))
            {
                continue;
            }
            if path.is_dir() {
                self.read_dir(&path, errors);
            } else {
                self.read_file(&path, None, errors);
            }
        }
    }

    // ---- building -------------------------------------------------------------------

    /// Makes sure a group exists.
    pub(crate) fn add_group(&mut self, name: &str) {
        if !self.groups.contains_key(name) {
            self.groups.insert(name.to_string(), Group::default());
        }
    }

    /// Makes sure a host exists and is directly in `group`.
    pub(crate) fn add_host(&mut self, host: &str, group: &str) {
        self.add_group(group);
        let h = self.hosts.entry(host.to_string()).or_default();
        if !h.groups.iter().any(|g| g == group) {
            h.groups.push(group.to_string());
        }
        if let Some(g) = self.groups.get_mut(group)
            && !g.hosts.iter().any(|x| x == host)
        {
            g.hosts.push(host.to_string());
        }
    }

    /// Makes `child` a child group of `parent` (both are created if needed).
    pub(crate) fn add_child(&mut self, parent: &str, child: &str, at: Option<Location>) {
        self.add_group(parent);
        self.add_group(child);
        if let Some(p) = self.groups.get_mut(parent)
            && !p.children.iter().any(|c| c == child)
        {
            p.children.push(child.to_string());
            p.child_locations.push(at);
        }
    }

    /// Sets a group variable from an inventory source.
    pub(crate) fn set_group_var(&mut self, group: &str, key: &str, value: Json) {
        self.add_group(group);
        if let Some(g) = self.groups.get_mut(group) {
            if key == "ansible_group_priority" {
                g.priority = match &value {
                    Json::Number(n) => n.as_i64(),
                    Json::String(s) => s.trim().parse().ok(),
                    _ => None,
                };
            } else {
                g.vars.insert(key.to_string(), value);
            }
        }
    }

    /// Sets a host variable from an inventory source (the host must exist).
    pub(crate) fn set_host_var(&mut self, host: &str, key: &str, value: Json) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.vars.insert(key.to_string(), value);
        }
    }

    /// Links groups with no parent under `all`, puts hosts in no group in `ungrouped`,
    /// computes parents and depths, and reports cycles.
    pub(crate) fn reconcile(&mut self) -> InputErrors {
        let mut errors = InputErrors::default();
        let names: Vec<String> = self.groups.keys().cloned().collect();
        // `all` is everyone's ancestor: making it a child always closes a cycle.
        for (parent, g) in &self.groups {
            for (i, c) in g.children.iter().enumerate() {
                if c == "all" {
                    let message = format!("group `all` cannot be a child of group `{parent}`");
                    let e = match g.child_locations.get(i).cloned().flatten() {
                        Some(loc) => SourceError::at(loc, message),
                        None => SourceError::plain(message),
                    };
                    errors
                        .push(e.with_help("every group is already under `all`; remove this line"));
                }
            }
        }
        for g in self.groups.values_mut() {
            let keep: Vec<bool> = g.children.iter().map(|c| c != "all").collect();
            let mut it = keep.iter();
            g.children.retain(|_| *it.next().unwrap_or(&true));
            let mut it = keep.iter();
            g.child_locations.retain(|_| *it.next().unwrap_or(&true));
        }
        // Parents from children.
        for g in self.groups.values_mut() {
            g.parents.clear();
        }
        let edges: Vec<(String, String)> = self
            .groups
            .iter()
            .flat_map(|(p, g)| g.children.iter().map(move |c| (p.clone(), c.clone())))
            .collect();
        for (p, c) in &edges {
            if let Some(child) = self.groups.get_mut(c)
                && !child.parents.contains(p)
            {
                child.parents.push(p.clone());
            }
        }
        // Cycles: a group reachable from itself through children.
        let mut reported: HashSet<String> = HashSet::new();
        for name in &names {
            if reported.contains(name) {
                continue;
            }
            if let Some(path) = self.cycle_from(name) {
                for n in &path {
                    reported.insert(n.clone());
                }
                let shown = path.join(" -> ");
                let location = path.len().checked_sub(2).and_then(|i| {
                    let parent = self.groups.get(&path[i])?;
                    let idx = parent.children.iter().position(|c| *c == path[i + 1])?;
                    parent.child_locations.get(idx).cloned().flatten()
                });
                let message = format!("group `{name}` is its own ancestor: {shown}");
                let e = match location {
                    Some(loc) => SourceError::at(loc, message),
                    None => SourceError::plain(message),
                };
                errors.push(e.with_help("remove one of these `children` links"));
            }
        }
        // Remove edges that close a cycle so later walks terminate.
        if !errors.is_empty() {
            for name in &reported {
                if let Some(g) = self.groups.get_mut(name) {
                    g.parents.retain(|p| !reported.contains(p));
                }
            }
            for name in &reported {
                if let Some(g) = self.groups.get_mut(name) {
                    let keep: Vec<bool> =
                        g.children.iter().map(|c| !reported.contains(c)).collect();
                    let mut it = keep.iter();
                    g.children.retain(|_| *it.next().unwrap_or(&true));
                    let mut it = keep.iter();
                    g.child_locations.retain(|_| *it.next().unwrap_or(&true));
                }
            }
        }
        // Groups with no parent go under `all`.
        for name in &names {
            if name != "all" && self.groups.get(name).is_some_and(|g| g.parents.is_empty()) {
                self.add_child("all", name, None);
                if let Some(g) = self.groups.get_mut(name) {
                    g.parents.push("all".to_string());
                }
            }
        }
        // Hosts in no group but `all` go to `ungrouped`; others leave it.
        let hosts: Vec<String> = self.hosts.keys().cloned().collect();
        for host in &hosts {
            let real = self
                .hosts
                .get(host)
                .is_some_and(|h| h.groups.iter().any(|g| g != "all" && g != "ungrouped"));
            if real {
                if let Some(h) = self.hosts.get_mut(host) {
                    h.groups.retain(|g| g != "ungrouped");
                }
                if let Some(g) = self.groups.get_mut("ungrouped") {
                    g.hosts.retain(|x| x != host);
                }
            } else {
                self.add_host(host, "ungrouped");
            }
        }
        // Depths: longest path from `all`.
        let order: Vec<String> = self.groups.keys().cloned().collect();
        for name in &order {
            let d = self.depth_of(name, &mut Vec::new());
            if let Some(g) = self.groups.get_mut(name) {
                g.depth = d;
            }
        }
        errors
    }

    fn depth_of(&self, name: &str, seen: &mut Vec<String>) -> usize {
        if name == "all" || seen.iter().any(|s| s == name) {
            return 0;
        }
        seen.push(name.to_string());
        let d = self
            .groups
            .get(name)
            .map(|g| {
                g.parents
                    .iter()
                    .map(|p| self.depth_of(p, seen) + 1)
                    .max()
                    .unwrap_or(1)
            })
            .unwrap_or(1);
        seen.pop();
        d
    }

    /// A path `start -> ... -> start` through children, if there is one.
    fn cycle_from(&self, start: &str) -> Option<Vec<String>> {
        fn walk(
            inv: &Inventory,
            start: &str,
            at: &str,
            path: &mut Vec<String>,
            visited: &mut HashSet<String>,
        ) -> bool {
            let Some(g) = inv.groups.get(at) else {
                return false;
            };
            for c in &g.children {
                if c == start {
                    path.push(c.clone());
                    return true;
                }
                if visited.insert(c.clone()) {
                    path.push(c.clone());
                    if walk(inv, start, c, path, visited) {
                        return true;
                    }
                    path.pop();
                }
            }
            false
        }
        let mut path = vec![start.to_string()];
        let mut visited = HashSet::new();
        walk(self, start, start, &mut path, &mut visited).then_some(path)
    }

    // ---- queries --------------------------------------------------------------------

    /// All hosts in inventory order (order of first appearance).
    pub fn hosts(&self) -> Vec<String> {
        self.hosts.keys().cloned().collect()
    }

    /// True when the inventory defines this host.
    pub fn has_host(&self, host: &str) -> bool {
        self.hosts.contains_key(host)
    }

    /// All group names, in the order first seen (`all` and `ungrouped` first).
    pub fn group_list(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// Hosts matching an Ansible host pattern, in inventory order, no duplicates.
    /// `Err(message)` for an unknown host or group name, a glob matching nothing or bad
    /// syntax; the message names the unknown part and suggests known names.
    pub fn select(&self, pattern: &str) -> Result<Vec<String>, String> {
        pattern::select(self, pattern)
    }

    /// Every host of a group and of its descendants, in Ansible's order
    /// (`Group.get_hosts`): the group's own hosts, then those of its children in the
    /// order listed, then of their children, level by level, each host once.
    ///
    /// Ansible walks the levels below the children through a Python `set`, so where two
    /// groups of one level both have children its order varies from run to run; here
    /// each level keeps the order in which its groups were reached.
    pub(crate) fn group_hosts(&self, group: &str) -> Vec<String> {
        let mut hosts = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for g in self.descendants(group) {
            if let Some(grp) = self.groups.get(g) {
                for h in &grp.hosts {
                    if seen.insert(h) {
                        hosts.push(h.clone());
                    }
                }
            }
        }
        hosts
    }

    /// `group`, its children in order, then each further level of descendants in the
    /// order reached (Ansible's `get_descendants(include_self=True,
    /// preserve_ordering=True)`, made deterministic).
    fn descendants<'a>(&'a self, group: &'a str) -> Vec<&'a str> {
        let children = |g: &str| -> Vec<&'a str> {
            self.groups
                .get(g)
                .map(|g| g.children.iter().map(String::as_str).collect())
                .unwrap_or_default()
        };
        let mut ordered = vec![group];
        let mut seen: HashSet<&str> = HashSet::from([group]);
        let mut level: Vec<&str> = Vec::new();
        for c in children(group) {
            if seen.insert(c) {
                ordered.push(c);
                level.push(c);
            }
        }
        while !level.is_empty() {
            let mut next = Vec::new();
            for g in &level {
                for c in children(g) {
                    if seen.insert(c) {
                        ordered.push(c);
                        next.push(c);
                    }
                }
            }
            level = next;
        }
        ordered
    }

    /// The groups a host is in, directly or through child groups, including `all`.
    fn host_groups_with_ancestors(&self, host: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut stack: Vec<String> = self
            .hosts
            .get(host)
            .map(|h| h.groups.clone())
            .unwrap_or_default();
        while let Some(g) = stack.pop() {
            if out.contains(&g) {
                continue;
            }
            if let Some(grp) = self.groups.get(&g) {
                stack.extend(grp.parents.iter().cloned());
            }
            out.push(g);
        }
        if !out.iter().any(|g| g == "all") {
            out.push("all".to_string());
        }
        out
    }

    /// Groups sorted as Ansible merges them: depth, then `ansible_group_priority`
    /// (default 1), then name.
    fn sorted_groups(&self, names: Vec<String>) -> Vec<String> {
        let mut keyed: Vec<(usize, i64, String)> = names
            .into_iter()
            .map(|n| {
                let g = self.groups.get(&n);
                (
                    g.map_or(0, |g| g.depth),
                    g.and_then(|g| g.priority).unwrap_or(1),
                    n,
                )
            })
            .collect();
        keyed.sort();
        keyed.into_iter().map(|(_, _, n)| n).collect()
    }

    /// Variables of a host merged with Ansible's precedence (see the module docs), plus
    /// `inventory_hostname` and `inventory_hostname_short`. A host the inventory does
    /// not define (the implicit `localhost`) gets the `all` vars and its `host_vars/`.
    pub fn host_vars(&self, host: &str) -> IndexMap<String, Json> {
        let mut out = Vars::new();
        let merge = |out: &mut Vars, vars: Option<&Vars>| {
            if let Some(vars) = vars {
                for (k, v) in vars {
                    out.insert(k.clone(), v.clone());
                }
            }
        };
        merge(&mut out, self.groups.get("all").map(|g| &g.vars));
        merge(&mut out, self.group_file_vars.get("all"));
        let groups: Vec<String> = self
            .host_groups_with_ancestors(host)
            .into_iter()
            .filter(|g| g != "all")
            .collect();
        let groups = self.sorted_groups(groups);
        for g in &groups {
            merge(&mut out, self.groups.get(g).map(|g| &g.vars));
        }
        for g in &groups {
            merge(&mut out, self.group_file_vars.get(g));
        }
        merge(&mut out, self.hosts.get(host).map(|h| &h.vars));
        merge(&mut out, self.host_file_vars.get(host));
        out.insert("inventory_hostname".into(), Json::from(host));
        let short = host.split('.').next().unwrap_or(host);
        out.insert("inventory_hostname_short".into(), Json::from(short));
        out
    }

    /// Group name to hosts (each group's hosts include its descendants' hosts), for every
    /// group including `all` and `ungrouped`: the `groups` template variable.
    pub fn groups(&self) -> IndexMap<String, Vec<String>> {
        self.groups
            .keys()
            .map(|g| (g.clone(), self.group_hosts(g)))
            .collect()
    }

    /// The groups a host is in, directly or through child groups, without `all`,
    /// sorted: the `group_names` template variable.
    pub fn group_names(&self, host: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .host_groups_with_ancestors(host)
            .into_iter()
            .filter(|g| g != "all")
            .collect();
        names.sort();
        names
    }

    /// How to reach a host, from its merged vars. `localhost` with no `ansible_host`
    /// (defined or implicit) defaults to the local connection; every other host to SSH.
    pub fn connection(&self, host: &str) -> ConnectionSettings {
        let vars = self.host_vars(host);
        let mut used = Vec::new();
        let mut pick = |names: &[&str]| -> Option<&Json> {
            for n in names {
                if let Some(v) = vars.get(*n)
                    && !v.is_null()
                {
                    used.push((*n).to_string());
                    return Some(v);
                }
            }
            None
        };
        let address = pick(&["ansible_host", "ansible_ssh_host", "host"]).and_then(scalar_string);
        let kind = match pick(&["ansible_connection", "connection"]).and_then(scalar_string) {
            Some(k) if k.trim() == "local" => ConnectionKind::Local,
            Some(_) => ConnectionKind::Ssh,
            None if host == "localhost" && address.is_none() => ConnectionKind::Local,
            None => ConnectionKind::Ssh,
        };
        let port = pick(&["ansible_port", "ansible_ssh_port", "port"]).and_then(|v| match v {
            Json::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        });
        let user = pick(&["ansible_user", "ansible_ssh_user", "user"]).and_then(scalar_string);
        let key_file = pick(&[
            "ansible_ssh_private_key_file",
            "ansible_private_key_file",
            "key_file",
        ])
        .and_then(scalar_string);
        let password =
            pick(&["ansible_password", "ansible_ssh_pass", "password"]).and_then(scalar_string);
        let become_ = pick(&["ansible_become", "become"]).is_some_and(truthy);
        let become_user = pick(&["ansible_become_user", "become_user"]).and_then(scalar_string);
        let become_method =
            pick(&["ansible_become_method", "become_method"]).and_then(scalar_string);
        let become_password = pick(&[
            "ansible_become_password",
            "ansible_become_pass",
            "become_password",
        ])
        .and_then(scalar_string);
        let ssh_common_args = pick(&["ansible_ssh_common_args"]).and_then(scalar_string);
        ConnectionSettings {
            kind,
            address: address.unwrap_or_else(|| host.to_string()),
            port,
            user,
            key_file,
            password,
            become_,
            become_user,
            become_method,
            become_password,
            ssh_common_args,
            vars_used: used,
        }
    }

    /// `lifeboat inventory --list`, as `ansible-inventory --list` prints it: every group
    /// reached from `all` with its direct `hosts` and its `children` (in order; empty
    /// keys and empty groups left out), and `_meta.hostvars` with each host's merged
    /// variables. With `export` (`--list --export`, as Ansible's `--export`): each
    /// group's own `vars` (inventory and `group_vars/`, and `ansible_group_priority`
    /// when set), and each host's own variables (inventory and `host_vars/`). Either
    /// shape read back as a dynamic inventory gives the same hosts, groups and merged
    /// variables.
    pub fn to_ansible_json(&self, export: bool) -> Json {
        let mut root = serde_json::Map::new();
        let mut stack = vec!["all"];
        let mut seen: HashSet<&str> = HashSet::from(["all"]);
        while let Some(name) = stack.pop() {
            let Some(g) = self.groups.get(name) else {
                continue;
            };
            let mut obj = serde_json::Map::new();
            if !g.hosts.is_empty() && name != "all" {
                obj.insert("hosts".into(), Json::from(g.hosts.clone()));
            }
            if !g.children.is_empty() {
                obj.insert("children".into(), Json::from(g.children.clone()));
            }
            if export {
                let mut vars = g.vars.clone();
                if let Some(fv) = self.group_file_vars.get(name) {
                    vars.extend(fv.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                if let Some(p) = g.priority.filter(|p| *p != 1) {
                    vars.insert("ansible_group_priority".into(), Json::from(p));
                }
                if !vars.is_empty() {
                    obj.insert("vars".into(), Json::Object(vars.into_iter().collect()));
                }
            }
            if !obj.is_empty() {
                root.insert(name.to_string(), Json::Object(obj));
            }
            for c in g.children.iter().rev() {
                if seen.insert(c) {
                    stack.push(c);
                }
            }
        }
        let mut hostvars = serde_json::Map::new();
        for name in self.group_hosts("all") {
            let vars = if export {
                let mut vars = self
                    .hosts
                    .get(&name)
                    .map(|h| h.vars.clone())
                    .unwrap_or_default();
                if let Some(fv) = self.host_file_vars.get(&name) {
                    vars.extend(fv.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                vars
            } else {
                let mut vars = self.host_vars(&name);
                vars.shift_remove("inventory_hostname");
                vars.shift_remove("inventory_hostname_short");
                vars
            };
            if !vars.is_empty() {
                hostvars.insert(name, Json::Object(vars.into_iter().collect()));
            }
        }
        let mut meta = serde_json::Map::new();
        meta.insert("hostvars".into(), Json::Object(hostvars));
        root.insert("_meta".into(), Json::Object(meta));
        Json::Object(root)
    }

    /// `lifeboat inventory --graph`: as ansible-core 2.19's `ansible-inventory --graph`
    /// (`@all:`, then `  |--@group:` and `  |  |--host`; children and hosts in the order
    /// defined).
    pub fn graph_text(&self) -> String {
        let mut lines = Vec::new();
        self.graph_group("all", 0, &mut lines, &mut Vec::new());
        let mut s = lines.join("\n");
        s.push('\n');
        s
    }

    fn graph_group(&self, name: &str, depth: usize, out: &mut Vec<String>, path: &mut Vec<String>) {
        let prefix = |d: usize| {
            if d == 0 {
                String::new()
            } else {
                format!("{}--", "  |".repeat(d))
            }
        };
        out.push(format!("{}@{name}:", prefix(depth)));
        if path.iter().any(|p| p == name) {
            return;
        }
        let Some(g) = self.groups.get(name) else {
            return;
        };
        path.push(name.to_string());
        for k in &g.children {
            self.graph_group(k, depth + 1, out, path);
        }
        if name != "all" {
            for h in &g.hosts {
                out.push(format!("{}{h}", prefix(depth + 1)));
            }
        }
        path.pop();
    }
}

/// True for a file with any execute bit set.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// True when the first meaningful line reads as YAML (`---`, `all:`, `name:`), not INI.
fn looks_like_yaml(text: &str) -> bool {
    let Some(first) = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
    else {
        return false;
    };
    if first.starts_with("---") || first.starts_with('{') {
        return true;
    }
    match first.strip_suffix(':') {
        Some(name) => {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests;
