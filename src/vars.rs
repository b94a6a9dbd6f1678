//! Variables of a node and their precedence, lowest first: inventory `all`, group vars
//! (parent below child), host vars, playbook vars (and resolved secrets), step vars,
//! registered results and facts, extra vars (`-e`). Also the special variables
//! `inventory_hostname`, `groups`, `group_names`, `hostvars`, `item` in loops,
//! `playbook_dir` and `lifeboat` (run id, check mode).
//!
//! A node's variables are a [`Scope`]: a variable whose value is a template (e.g.
//! `backup: "{{ root }}/backup"`) is rendered the first time it is used, from its raw
//! value, with the other variables as context, and then kept. What rendering produced
//! is never rendered again, and data (registered results, facts, secrets, loop items)
//! is never rendered at all: command output containing `{{` stays text. In a dry run, a
//! result only a real run produces is a value that fails with [`UNKNOWN`] when used, so
//! the executor can tell "unknown" from a typo. `hostvars[h]` is host `h`'s scope,
//! cached until its facts change.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use minijinja::value::{Enumerator, Object, Serde, Value};
use minijinja::{Error, ErrorKind};
use serde_json::Value as Json;

use crate::inventory::Inventory;
use crate::playbook::Step;
use crate::template::Templates;

/// What the error of a value only a real run produces says; a dry run marks a node
/// whose templates hit it `unknown`.
pub const UNKNOWN: &str = "is known only after a real run";

/// Results and facts registered during a run, per host.
#[derive(Debug, Default)]
pub struct Facts {
    inner: Mutex<FactsInner>,
}

#[derive(Debug, Default)]
struct FactsInner {
    values: HashMap<String, IndexMap<String, Json>>,
    unknown: HashMap<String, HashSet<String>>,
    /// Per host, per import scope (`a.`, `a.b.`): what the steps of that import
    /// registered or set (`None`: known only after a real run).
    scoped: HashMap<String, HashMap<String, IndexMap<String, Option<Json>>>>,
    /// Bumped on every change, to invalidate cached host scopes.
    version: u64,
}

impl FactsInner {
    /// Records what a step of import `scope` set (nothing for the main playbook's own
    /// steps, whose values are the run-wide ones).
    fn set_scoped(&mut self, host: &str, scope: &str, name: &str, value: Option<Json>) {
        if scope.is_empty() {
            return;
        }
        self.scoped
            .entry(host.to_string())
            .or_default()
            .entry(scope.to_string())
            .or_default()
            .insert(name.to_string(), value);
    }
}

impl Facts {
    fn lock(&self) -> std::sync::MutexGuard<'_, FactsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a variable on a host, for the whole run and, when `scope` (the import the
    /// setting step came from, see [`Step::scope`]) is not empty, for that import's steps
    /// first: two imports of one file that register the same name each read their own
    /// result, however their steps interleave.
    pub fn set(&self, host: &str, scope: &str, name: &str, value: Json) {
        let mut inner = self.lock();
        inner.version += 1;
        inner.set_scoped(host, scope, name, Some(value.clone()));
        if let Some(u) = inner.unknown.get_mut(host) {
            u.remove(name);
        }
        inner
            .values
            .entry(host.to_string())
            .or_default()
            .insert(name.to_string(), value);
    }

    /// Marks a variable of a host as known only after a real run (dry run), for the
    /// whole run and for the steps of `scope` (see [`Facts::set`]).
    pub fn set_unknown(&self, host: &str, scope: &str, name: &str) {
        let mut inner = self.lock();
        inner.version += 1;
        inner.set_scoped(host, scope, name, None);
        if let Some(v) = inner.values.get_mut(host) {
            v.shift_remove(name);
        }
        inner
            .unknown
            .entry(host.to_string())
            .or_default()
            .insert(name.to_string());
    }

    /// A host's registered results and facts as the steps of `scope` see them (what
    /// their own import and the imports around it set, over the run-wide values), the
    /// names a dry run cannot know yet, and the version they belong to.
    fn snapshot(&self, host: &str, scope: &str) -> (IndexMap<String, Json>, HashSet<String>, u64) {
        let inner = self.lock();
        let mut values = inner.values.get(host).cloned().unwrap_or_default();
        let mut unknown = inner.unknown.get(host).cloned().unwrap_or_default();
        if let Some(scopes) = inner.scoped.get(host) {
            // Outermost import first, so the innermost one's values win.
            let prefixes = scope.match_indices('.').map(|(i, _)| &scope[..=i]);
            for names in prefixes.filter_map(|p| scopes.get(p)) {
                for (name, v) in names {
                    match v {
                        Some(v) => {
                            unknown.remove(name);
                            values.insert(name.clone(), v.clone());
                        }
                        None => {
                            values.shift_remove(name);
                            unknown.insert(name.clone());
                        }
                    }
                }
            }
        }
        (values, unknown, inner.version)
    }

    /// A host's registered results and facts.
    pub fn of(&self, host: &str) -> IndexMap<String, Json> {
        self.lock().values.get(host).cloned().unwrap_or_default()
    }
}

/// Everything node variables are made from, shared by the run.
#[derive(Debug)]
pub struct VarsCore {
    /// Merged inventory variables per host.
    pub inventory_vars: HashMap<String, IndexMap<String, Json>>,
    /// Groups to hosts.
    pub groups: IndexMap<String, Vec<String>>,
    /// Group names per host.
    pub group_names: HashMap<String, Vec<String>>,
    /// Playbook vars and resolved secrets.
    pub playbook_vars: IndexMap<String, Json>,
    /// Names of the secrets among the playbook vars: data, never rendered.
    pub secret_names: HashSet<String>,
    /// `-e` vars.
    pub extra_vars: IndexMap<String, Json>,
    /// Registered results and facts.
    pub facts: Facts,
    /// `lifeboat` and `playbook_dir`.
    pub run_info: IndexMap<String, Json>,
    /// Renders variables that refer to other variables.
    templates: Templates,
    /// `hostvars` scopes, with the facts version they were made at.
    host_scopes: Mutex<HashMap<String, (u64, Arc<Scope>)>>,
    /// `groups`, converted once.
    groups_value: Value,
}

impl VarsCore {
    /// Gathers inventory variables of every host once.
    pub fn new(
        inv: &Inventory,
        playbook_vars: IndexMap<String, Json>,
        secret_names: HashSet<String>,
        extra_vars: IndexMap<String, Json>,
        run_info: IndexMap<String, Json>,
    ) -> Arc<VarsCore> {
        let hosts = inv.hosts();
        let mut inventory_vars = HashMap::new();
        let mut group_names = HashMap::new();
        for h in &hosts {
            inventory_vars.insert(h.clone(), inv.host_vars(h));
            group_names.insert(h.clone(), inv.group_names(h));
        }
        let groups = inv.groups();
        let groups_value = Value::from(Serde(&groups));
        Arc::new(VarsCore {
            inventory_vars,
            groups,
            group_names,
            playbook_vars,
            secret_names,
            extra_vars,
            facts: Facts::default(),
            run_info,
            templates: Templates::new(),
            host_scopes: Mutex::new(HashMap::new()),
            groups_value,
        })
    }

    /// Builds a scope from the layers, lowest precedence first. `step`: the step's
    /// vars; `extra`: data for this node only (rollback's `result`, `pre_state`).
    fn scope(
        self: &Arc<Self>,
        host: &str,
        step: Option<&Step>,
        item: Option<&Json>,
        extra: &[(&str, Json)],
    ) -> Arc<Scope> {
        let scope = step.map_or("", |s| s.scope.as_str());
        let (facts, unknown, _) = self.facts.snapshot(host, scope);
        let mut raw = self.inventory_vars.get(host).cloned().unwrap_or_default();
        raw.extend(
            self.playbook_vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        if let Some(step) = step {
            raw.extend(step.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let mut data: HashSet<String> = self.secret_names.clone();
        for (k, v) in facts {
            data.insert(k.clone());
            raw.insert(k, v);
        }
        for (k, v) in extra {
            data.insert((*k).to_string());
            raw.insert((*k).to_string(), v.clone());
        }
        for (k, v) in &self.extra_vars {
            data.remove(k);
            raw.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.run_info {
            data.insert(k.clone());
            raw.insert(k.clone(), v.clone());
        }
        raw.insert("inventory_hostname".into(), Json::String(host.to_string()));
        raw.insert(
            "group_names".into(),
            Json::from(self.group_names.get(host).cloned().unwrap_or_default()),
        );
        data.insert("inventory_hostname".into());
        data.insert("group_names".into());
        if let Some(item) = item {
            data.insert("item".into());
            raw.insert("item".into(), item.clone());
        }
        // A name set later than the unknown result (e.g. by -e) is known.
        let unknown = unknown
            .into_iter()
            .filter(|n| !self.extra_vars.contains_key(n))
            .collect();
        Arc::new(Scope {
            core: self.clone(),
            raw,
            data,
            unknown,
            cache: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
        })
    }

    /// The template context of one node (and loop item).
    pub fn node_context(
        self: &Arc<Self>,
        step: &Step,
        host: &str,
        item: Option<&Json>,
        extra: &[(&str, Json)],
    ) -> Value {
        Value::from_dyn_object(self.scope(host, Some(step), item, extra))
    }

    /// A host's variables without step variables (what `hostvars[host]` shows),
    /// cached until the host's facts change.
    fn host_scope(self: &Arc<Self>, host: &str) -> Arc<Scope> {
        let version = self.facts.lock().version;
        let mut cache = self.host_scopes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, s)) = cache.get(host)
            && *v == version
        {
            return s.clone();
        }
        let scope = self.scope(host, None, None, &[]);
        cache.insert(host.to_string(), (version, scope.clone()));
        scope
    }
}

/// One node's variables; see the module documentation.
#[derive(Debug)]
pub struct Scope {
    core: Arc<VarsCore>,
    raw: IndexMap<String, Json>,
    /// Names whose values are data, never rendered.
    data: HashSet<String>,
    /// Dry run: names only a real run will know.
    unknown: HashSet<String>,
    cache: Mutex<HashMap<String, Value>>,
    /// Names being rendered right now, to report a variable that refers to itself.
    busy: Mutex<HashSet<String>>,
}

impl Scope {
    fn resolve(self: &Arc<Self>, key: &str, raw: &Json) -> Value {
        if let Some(v) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return v.clone();
        }
        if !self
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string())
        {
            return Value::from(Error::new(
                ErrorKind::InvalidOperation,
                format!("variable `{key}` refers to itself (directly or through other variables)"),
            ));
        }
        let ctx = Value::from_dyn_object(self.clone());
        let value = match self.core.templates.render_value(raw, &ctx, false) {
            Ok(v) => Value::from(Serde(v)),
            Err(e) => {
                let kind = if e.undefined {
                    ErrorKind::UndefinedError
                } else {
                    ErrorKind::InvalidOperation
                };
                Value::from(Error::new(kind, format!("variable `{key}`: {e}")))
            }
        };
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), value.clone());
        value
    }
}

impl Object for Scope {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        match key {
            "groups" => return Some(self.core.groups_value.clone()),
            "hostvars" => {
                return Some(Value::from_object(HostVars {
                    core: self.core.clone(),
                }));
            }
            _ => {}
        }
        if self.unknown.contains(key) {
            return Some(Value::from(Error::new(
                ErrorKind::UndefinedError,
                format!("`{key}` {UNKNOWN}"),
            )));
        }
        let raw = self.raw.get(key)?;
        if self.data.contains(key) || !has_template(raw) {
            return Some(Value::from(Serde(raw)));
        }
        Some(self.resolve(key, raw))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<Value> = self.raw.keys().map(|k| Value::from(k.as_str())).collect();
        keys.push(Value::from("groups"));
        keys.push(Value::from("hostvars"));
        Enumerator::Values(keys)
    }
}

/// Whether a JSON value holds template syntax anywhere.
fn has_template(v: &Json) -> bool {
    match v {
        Json::String(s) => Templates::is_template(s),
        Json::Array(a) => a.iter().any(has_template),
        Json::Object(o) => o.values().any(has_template),
        _ => false,
    }
}

/// `hostvars`: every host's variables, looked up when used.
#[derive(Debug)]
struct HostVars {
    core: Arc<VarsCore>,
}

impl Object for HostVars {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let host = key.as_str()?;
        if !self.core.inventory_vars.contains_key(host) {
            return None;
        }
        Some(Value::from_dyn_object(self.core.host_scope(host)))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut hosts: Vec<String> = self.core.inventory_vars.keys().cloned().collect();
        hosts.sort();
        Enumerator::Values(hosts.into_iter().map(Value::from).collect())
    }
}

/// Parses `-e` values: `k=v` (several separated by spaces), JSON/YAML mappings, or
/// `@file.yml`.
pub fn parse_extra_vars(
    items: &[String],
) -> Result<IndexMap<String, Json>, crate::error::SourceError> {
    use crate::error::{SourceError, SourceFile};
    let mut out = IndexMap::new();
    for item in items {
        let t = item.trim();
        if let Some(path) = t.strip_prefix('@') {
            let file = SourceFile::read(std::path::Path::new(path))?;
            let node = crate::yaml::parse(&file)?;
            match node.to_json() {
                Json::Object(m) => out.extend(m),
                _ => return Err(node.error(&file, "an extra-vars file must hold a mapping")),
            }
        } else if t.starts_with('{') {
            let file = SourceFile::new("-e", t.to_string());
            let node = crate::yaml::parse(&file)?;
            match node.to_json() {
                Json::Object(m) => out.extend(m),
                _ => return Err(SourceError::plain(format!("-e {t}: not a mapping"))),
            }
        } else {
            let words = shlex::split(t)
                .ok_or_else(|| SourceError::plain(format!("-e {t}: unbalanced quotes")))?;
            for w in words {
                let Some((k, v)) = w.split_once('=') else {
                    return Err(SourceError::plain(format!("-e {w}: expected key=value"))
                        .with_help("write -e name=value, -e '{\"name\": 1}' or -e @vars.yml"));
                };
                out.insert(k.to_string(), scalar(v));
            }
        }
    }
    Ok(out)
}

/// A `-e k=v` value read as YAML reads a scalar: `false` is a boolean, `3` a number,
/// anything else (or anything quoted) a string.
fn scalar(v: &str) -> Json {
    let file = crate::error::SourceFile::new("-e", v.to_string());
    match crate::yaml::parse(&file).map(|n| n.to_json()) {
        Ok(j @ (Json::Bool(_) | Json::Number(_))) => j,
        Ok(Json::Null) if v.trim().is_empty() => Json::String(String::new()),
        Ok(Json::Null) => Json::Null,
        _ => Json::String(v.to_string()),
    }
}
