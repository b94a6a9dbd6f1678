//! Variables of a node and their precedence, lowest first: inventory `all`, group vars
//! (parent below child), host vars, playbook vars (and resolved secrets), step vars,
//! registered results and facts, extra vars (`-e`). Also the special variables
//! `inventory_hostname`, `groups`, `group_names`, `hostvars` (looked up lazily, so a
//! run over hundreds of hosts does not copy every host's variables into every node),
//! `item` in loops, `playbook_dir` and `lifeboat` (run id, check mode).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use minijinja::value::{Enumerator, Object, Serde, Value};
use serde_json::Value as Json;

use crate::inventory::Inventory;
use crate::playbook::Step;
use crate::template::Templates;

/// Results and facts registered during a run, per host.
#[derive(Debug, Default)]
pub struct Facts {
    inner: Mutex<FactsInner>,
}

#[derive(Debug, Default)]
struct FactsInner {
    values: HashMap<String, IndexMap<String, Json>>,
    unknown: HashMap<String, HashSet<String>>,
}

impl Facts {
    fn lock(&self) -> std::sync::MutexGuard<'_, FactsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a variable on a host.
    pub fn set(&self, host: &str, name: &str, value: Json) {
        let mut inner = self.lock();
        if let Some(u) = inner.unknown.get_mut(host) {
            u.remove(name);
        }
        inner
            .values
            .entry(host.to_string())
            .or_default()
            .insert(name.to_string(), value);
    }

    /// Marks a variable of a host as known only after a real run (dry run).
    pub fn set_unknown(&self, host: &str, name: &str) {
        self.lock()
            .unknown
            .entry(host.to_string())
            .or_default()
            .insert(name.to_string());
    }

    /// The names whose values a dry run cannot know on this host.
    pub fn unknown_names(&self, host: &str) -> HashSet<String> {
        self.lock().unknown.get(host).cloned().unwrap_or_default()
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
    /// `-e` vars.
    pub extra_vars: IndexMap<String, Json>,
    /// Registered results and facts.
    pub facts: Facts,
    /// `lifeboat` and `playbook_dir`.
    pub run_info: IndexMap<String, Json>,
    /// Renders variables that refer to other variables.
    templates: Templates,
}

impl VarsCore {
    /// Gathers inventory variables of every host once.
    pub fn new(
        inv: &Inventory,
        playbook_vars: IndexMap<String, Json>,
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
        Arc::new(VarsCore {
            inventory_vars,
            groups: inv.groups(),
            group_names,
            playbook_vars,
            extra_vars,
            facts: Facts::default(),
            run_info,
            templates: Templates::new(),
        })
    }

    /// A host's variables without step variables (what `hostvars[host]` shows).
    pub fn host_scope(&self, host: &str) -> IndexMap<String, Json> {
        let mut m = self.inventory_vars.get(host).cloned().unwrap_or_default();
        m.insert("inventory_hostname".into(), Json::String(host.to_string()));
        m.extend(self.playbook_vars.clone());
        let facts = self.facts.of(host);
        let mut from_facts: HashSet<String> = facts.keys().cloned().collect();
        m.extend(facts);
        for (k, v) in &self.extra_vars {
            from_facts.remove(k);
            m.insert(k.clone(), v.clone());
        }
        let _ = self.resolve(&mut m, &from_facts);
        m
    }

    /// Renders variables whose values are templates referring to other variables,
    /// until none changes (nested references resolve over several passes). Values
    /// from registered results and facts are data and never rendered again. Returns
    /// the variables that could not be rendered, with why.
    fn resolve(
        &self,
        m: &mut IndexMap<String, Json>,
        data_keys: &HashSet<String>,
    ) -> Vec<(String, minijinja::Error)> {
        let mut pending: Vec<String> = m
            .iter()
            .filter(|(k, v)| !data_keys.contains(*k) && has_template(v))
            .map(|(k, _)| k.clone())
            .collect();
        let mut failures = Vec::new();
        for _ in 0..8 {
            if pending.is_empty() {
                break;
            }
            let ctx = Value::from(Serde(&*m));
            let mut progress = false;
            failures.clear();
            let mut still = Vec::new();
            for k in pending {
                let Some(raw) = m.get(&k) else { continue };
                match self.templates.render_value(raw, &ctx, false) {
                    Ok(v) => {
                        progress |= &v != raw;
                        let again = has_template(&v);
                        m.insert(k.clone(), v);
                        if again {
                            still.push(k);
                        }
                    }
                    Err(e) => {
                        failures.push((
                            k.clone(),
                            minijinja::Error::new(
                                minijinja::ErrorKind::UndefinedError,
                                format!("variable `{k}`: {e}"),
                            ),
                        ));
                        still.push(k);
                    }
                }
            }
            pending = still;
            if !progress {
                break;
            }
        }
        failures
    }

    /// The template context of one node (and loop item).
    pub fn node_context(
        self: &Arc<Self>,
        step: &Step,
        host: &str,
        item: Option<&Json>,
        extra: &[(&str, Json)],
    ) -> Value {
        let mut m = self.inventory_vars.get(host).cloned().unwrap_or_default();
        m.extend(self.playbook_vars.clone());
        m.extend(step.vars.clone());
        let facts = self.facts.of(host);
        let mut data_keys: HashSet<String> = facts.keys().cloned().collect();
        m.extend(facts);
        for (k, v) in extra {
            data_keys.insert((*k).to_string());
            m.insert((*k).to_string(), v.clone());
        }
        for (k, v) in &self.extra_vars {
            data_keys.remove(k);
            m.insert(k.clone(), v.clone());
        }
        m.extend(self.run_info.clone());
        m.insert("inventory_hostname".into(), Json::String(host.to_string()));
        m.insert(
            "group_names".into(),
            Json::from(self.group_names.get(host).cloned().unwrap_or_default()),
        );
        if let Some(item) = item {
            data_keys.insert("item".into());
            m.insert("item".into(), item.clone());
        }
        data_keys.extend(self.run_info.keys().cloned());
        let failures = self.resolve(&mut m, &data_keys);
        let mut pairs: Vec<(String, Value)> = m
            .into_iter()
            .map(|(k, v)| (k, Value::from(Serde(v))))
            .collect();
        for (k, e) in failures {
            // Using a variable that could not be rendered is an error; defining one is not.
            if let Some(p) = pairs.iter_mut().find(|(n, _)| *n == k) {
                p.1 = Value::from(e);
            }
        }
        pairs.push(("groups".into(), Value::from(Serde(&self.groups))));
        pairs.push((
            "hostvars".into(),
            Value::from_object(HostVars { core: self.clone() }),
        ));
        Value::from(
            pairs
                .into_iter()
                .collect::<std::collections::BTreeMap<String, Value>>(),
        )
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

/// `hostvars`: every host's variables, computed when looked up.
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
        Some(Value::from(Serde(self.core.host_scope(host))))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut hosts: Vec<Value> = self
            .core
            .inventory_vars
            .keys()
            .map(|h| Value::from(h.as_str()))
            .collect();
        hosts.sort_by_key(|v| v.to_string());
        Enumerator::Values(hosts)
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
