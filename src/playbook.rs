//! The playbook format: a YAML file of `steps` with `needs`, read into [`Playbook`] with
//! every mistake located (file:line:column) and reported together. Which keys a playbook,
//! a step, `defaults:` and an import accept, and how each value is checked, come from the
//! table of [`crate::keys`]; this module reads them into their places, and owns step
//! `defaults`, `module_defaults` (merged into each step's arguments, so the rest of
//! lifeboat sees them as if the step had written them), `import:` of other playbooks
//! (ids prefixed), `rollback:` specs, `secrets:` sources, and the load-time checks of
//! module arguments and template syntax. Host patterns are checked later, against the
//! inventory, by the graph.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value as Json;
use zeroize::Zeroizing;

use crate::error::{InputErrors, Location, SourceError, SourceFile, did_you_mean};
use crate::keys::{self, Key, Place, Shape};
use crate::modules::{
    self, GROUP_PREFIX, Module, ModuleDoc, check_arg_type, normalize_args, parse_duration,
    validate_args,
};
use crate::template::Templates;
use crate::yaml::{self, Node, Value};

/// A loaded playbook.
#[derive(Clone)]
pub struct Playbook {
    /// Its name (default: the file name).
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// The default host pattern of its steps.
    pub hosts: String,
    /// Playbook variables (with `vars_files` merged in, files first).
    pub vars: IndexMap<String, Json>,
    /// Secrets: name to where its value comes from.
    pub secrets: IndexMap<String, SecretSource>,
    /// The steps, imports expanded, in file order.
    pub steps: Vec<Step>,
    /// The main file.
    pub file: SourceFile,
    /// The directory of the main file.
    pub base_dir: PathBuf,
    /// Every file read (main and imports), for hashing.
    pub files: Vec<SourceFile>,
    /// Drill targets, when the playbook is a drill.
    pub rto_target: Option<Duration>,
    /// Drill RPO target.
    pub rpo_target: Option<Duration>,
    /// The share of hosts (percent) that may fail while the run goes on without them;
    /// 0 (the default): any failure stops the run and rolls back.
    pub max_fail_percentage: u32,
    /// Import ids, each to the step ids it brought in (`needs: [import-id]` waits for all).
    pub groups: IndexMap<String, Vec<String>>,
}

impl std::fmt::Debug for Playbook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playbook")
            .field("name", &self.name)
            .field(
                "steps",
                &self.steps.iter().map(|s| &s.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Where a secret's value comes from, and the value once read.
///
/// The value is read once ([`SecretSource::resolve`]: a command source runs once) and
/// kept in [`Zeroizing`] storage, wiped when the last copy of the playbook is dropped,
/// so every output of the run (drill reports too) can mask it. `Debug` never shows it.
#[derive(Clone)]
pub struct SecretSource {
    /// Where the value comes from.
    pub from: SecretFrom,
    /// `optional: true`: a source that is not there (an unset variable, a missing
    /// file) leaves the secret undefined instead of failing the run, so a shipped
    /// playbook can declare a secret that only some of its settings use.
    pub optional: bool,
    value: Arc<OnceLock<Zeroizing<String>>>,
}

/// The kinds of secret sources.
#[derive(Clone, PartialEq)]
pub enum SecretFrom {
    /// An environment variable of the controller.
    Env(String),
    /// A file on the controller (trailing newline removed).
    File(PathBuf),
    /// A command's standard output (trailing newline removed).
    Command(String),
    /// A literal value (for tests and demos).
    Value(Zeroizing<String>),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from = match &self.from {
            SecretFrom::Env(v) => format!("env {v}"),
            SecretFrom::File(p) => format!("file {}", p.display()),
            SecretFrom::Command(_) => "command".to_string(),
            SecretFrom::Value(_) => "value".to_string(),
        };
        write!(f, "SecretSource({from})")
    }
}

impl PartialEq for SecretSource {
    fn eq(&self, other: &Self) -> bool {
        self.from == other.from && self.optional == other.optional
    }
}

impl SecretSource {
    /// A source not read yet.
    pub fn new(from: SecretFrom) -> SecretSource {
        SecretSource {
            from,
            optional: false,
            value: Arc::new(OnceLock::new()),
        }
    }

    /// Reads the secret's value (once: later calls give the value read first). The
    /// playbook keeps it, zeroized on drop; the copy returned is the caller's to keep.
    pub fn resolve(&self, name: &str) -> Result<String, String> {
        if let Some(v) = self.value.get() {
            return Ok(v.to_string());
        }
        let value = self.read(name)?;
        let kept = self.value.get_or_init(|| value);
        Ok(kept.to_string())
    }

    /// Whether an optional secret's source is absent: the environment variable is
    /// unset, or the file does not exist. (A command that fails is an error, not an
    /// absence.)
    pub fn absent(&self) -> bool {
        self.optional
            && match &self.from {
                SecretFrom::Env(var) => std::env::var_os(var).is_none(),
                SecretFrom::File(path) => !path.exists(),
                SecretFrom::Command(_) | SecretFrom::Value(_) => false,
            }
    }

    /// Where the value comes from, as a person reads it (never the value).
    pub fn describe(&self) -> String {
        let from = match &self.from {
            SecretFrom::Env(var) => format!("environment variable {var}"),
            SecretFrom::File(path) => format!("file {}", path.display()),
            SecretFrom::Command(cmd) => format!("command `{cmd}`"),
            SecretFrom::Value(_) => "a value in the playbook".to_string(),
        };
        if self.optional && self.absent() {
            format!("{from}, which is not set")
        } else {
            from
        }
    }

    /// The value, once [`SecretSource::resolve`] has read it.
    pub fn value(&self) -> Option<&str> {
        self.value.get().map(|v| v.as_str())
    }

    fn read(&self, name: &str) -> Result<Zeroizing<String>, String> {
        let trim =
            |s: Zeroizing<String>| Zeroizing::new(s.trim_end_matches(['\n', '\r']).to_string());
        match &self.from {
            SecretFrom::Env(var) => std::env::var(var)
                .map(Zeroizing::new)
                .map_err(|_| format!("secret `{name}`: environment variable {var} is not set")),
            SecretFrom::File(path) => std::fs::read_to_string(path)
                .map(|s| trim(Zeroizing::new(s)))
                .map_err(|e| format!("secret `{name}`: cannot read {}: {e}", path.display())),
            SecretFrom::Command(cmd) => {
                let out = std::process::Command::new("/bin/sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(|e| format!("secret `{name}`: cannot run `{cmd}`: {e}"))?;
                let stdout = Zeroizing::new(out.stdout);
                if !out.status.success() {
                    return Err(format!(
                        "secret `{name}`: `{cmd}` failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                Ok(trim(Zeroizing::new(
                    String::from_utf8_lossy(&stdout).into_owned(),
                )))
            }
            SecretFrom::Value(v) => Ok(v.clone()),
        }
    }
}

/// What undoes a step.
#[derive(Clone)]
pub enum RollbackSpec {
    /// The module's own undo, from the state it captured (the default).
    Auto,
    /// Nothing.
    None,
    /// These module invocations, in order.
    Actions(Vec<Action>),
}

/// A module invocation (a rollback action).
#[derive(Clone)]
pub struct Action {
    /// The module.
    pub module: Arc<dyn Module>,
    /// Its arguments, unrendered.
    pub args: Json,
    /// Where it was written.
    pub location: Location,
}

/// What a step's failure is (`severity:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Severity {
    /// The failure stops the run and rolls it back (unless `ignore_errors`). The default.
    #[default]
    Error,
    /// The failure is a warning: reported as `warning`, and the run goes on as if the
    /// step had succeeded (what needs it runs; no rollback; exit 0).
    Warning,
}

impl Severity {
    /// The severity a word names (`error`, `warning`).
    pub fn from_word(word: &str) -> Option<Severity> {
        match word {
            "error" => Some(Severity::Error),
            "warning" => Some(Severity::Warning),
            _ => None,
        }
    }
}

/// One step of a playbook.
#[derive(Clone)]
pub struct Step {
    /// Unique id (prefixed for imported steps).
    pub id: String,
    /// The import it came from, as its id prefix (`backup.`, `backup.db.`); empty for
    /// the main playbook's own steps. What a step of an import registers is seen first
    /// by the steps of that same import (see [`crate::vars::Facts`]).
    pub scope: String,
    /// Display name.
    pub name: String,
    /// Host pattern (`None`: the playbook's).
    pub hosts: Option<String>,
    /// Where `hosts` was written (or the step, when inherited).
    pub hosts_location: Location,
    /// The step names its hosts itself (an import's `hosts:` does not override it).
    pub hosts_explicit: bool,
    /// Step ids this step waits for.
    pub needs: Vec<(String, Location)>,
    /// Condition, an expression without braces.
    pub when: Option<String>,
    /// Loop items (a list or a template producing one).
    pub loop_items: Option<Json>,
    /// Variable name the result is registered under.
    pub register: Option<String>,
    /// Privilege escalation.
    pub become_: bool,
    /// The user to become.
    pub become_user: Option<String>,
    /// sudo or su.
    pub become_method: Option<String>,
    /// Per-attempt time limit.
    pub timeout: Option<Duration>,
    /// Extra attempts after a failure.
    pub retries: u32,
    /// Pause between attempts.
    pub retry_delay: Duration,
    /// A failure does not stop the run.
    pub ignore_errors: bool,
    /// What a failure is: an error, or a warning (never with `ignore_errors`).
    pub severity: Severity,
    /// Changes nothing: also runs in a dry run.
    pub read_only: bool,
    /// Runs on the first host only.
    pub run_once: bool,
    /// Runs once what it needs has ended, whatever the outcome (after a failure too,
    /// before the rollback).
    pub finally: bool,
    /// Runs on this host instead (a template), with the original host's variables.
    pub delegate_to: Option<String>,
    /// Tags for --tags / --skip-tags.
    pub tags: Vec<String>,
    /// Hide output and results.
    pub no_log: bool,
    /// Step variables.
    pub vars: IndexMap<String, Json>,
    /// The module.
    pub module: Arc<dyn Module>,
    /// Its arguments, unrendered, normalised to a mapping.
    pub args: Json,
    /// What undoes it.
    pub rollback: RollbackSpec,
    /// Drill phase (backup, sabotage, restore, verify), if any.
    pub phase: Option<String>,
    /// Where the step starts.
    pub location: Location,
    /// The directory its relative controller paths start from.
    pub base_dir: PathBuf,
}

impl Step {
    /// The module's name.
    pub fn module_name(&self) -> &'static str {
        self.module.doc().name
    }

    /// The privilege escalation for this step on a host with these connection
    /// settings: the step's `become*` keys win over the inventory's.
    pub fn become_with(
        &self,
        settings: &crate::inventory::ConnectionSettings,
    ) -> Option<crate::connection::Become> {
        (self.become_ || settings.become_).then(|| crate::connection::Become {
            user: self.become_user.clone().or(settings.become_user.clone()),
            method: self
                .become_method
                .clone()
                .or(settings.become_method.clone()),
            password: settings.become_password.clone(),
        })
    }

    /// Whether the step changes nothing (it runs in a dry run too).
    pub fn is_read_only(&self) -> bool {
        self.read_only || self.module.read_only()
    }
}

impl Playbook {
    /// The values of the secrets read so far (see [`SecretSource::resolve`]), to mask.
    pub fn secret_values(&self) -> Vec<&str> {
        self.secrets
            .values()
            .filter_map(SecretSource::value)
            .collect()
    }

    /// Reads and checks a playbook file and everything it imports.
    pub fn load(path: &Path) -> Result<Playbook, InputErrors> {
        let file = SourceFile::read(path)?;
        let mut loader = Loader::default();
        let mut visiting = Vec::new();
        let pb = loader.load_file(
            &file,
            "",
            &IndexMap::new(),
            &ModuleDefaults::new(),
            &mut visiting,
        )?;
        loader.errors.into_result(pb)
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }
}

#[derive(Default)]
struct Loader {
    errors: InputErrors,
    templates: Templates,
    files: Vec<SourceFile>,
}

/// Step defaults as read from `defaults:`.
#[derive(Clone, Default)]
struct Defaults {
    hosts: Option<(String, Location)>,
    become_: Option<bool>,
    become_user: Option<String>,
    become_method: Option<String>,
    timeout: Option<Duration>,
    retries: Option<u32>,
    retry_delay: Option<Duration>,
    ignore_errors: Option<bool>,
    severity: Option<Severity>,
    no_log: Option<bool>,
    tags: Vec<String>,
    rollback: Option<Node>,
    /// `module_defaults:` in effect: the file's own under its importers'.
    modules: ModuleDefaults,
}

/// `module_defaults:` as read: module name or `group/NAME` (in the order written) to
/// each argument's value and the file it was written in. Only checked values are kept.
type ModuleDefaults = IndexMap<String, IndexMap<String, (Node, PathBuf)>>;

/// `top` over `base`, argument by argument.
fn layer(base: &ModuleDefaults, top: &ModuleDefaults) -> ModuleDefaults {
    let mut out = base.clone();
    for (entry, args) in top {
        let into = out.entry(entry.clone()).or_default();
        for (name, value) in args {
            into.insert(name.clone(), value.clone());
        }
    }
    out
}

/// A step's (or a rollback action's) arguments with its module defaults added: those of
/// its module's groups, then those of its module's own entry (which win); an argument
/// the step gives itself is kept. A default written in another file than the step is
/// located at the step's module key, so an error about it points into the right file.
fn with_module_defaults(
    md: &ModuleDefaults,
    doc: &ModuleDoc,
    args: Node,
    file: &SourceFile,
    at: &Node,
) -> Node {
    let mut extra: IndexMap<&str, &(Node, PathBuf)> = IndexMap::new();
    for (entry, values) in md {
        let in_group = entry
            .strip_prefix(GROUP_PREFIX)
            .and_then(modules::group)
            .is_some_and(|g| g.members.contains(&doc.name));
        if in_group {
            for (name, v) in values {
                if doc.args.iter().any(|a| a.name == name) {
                    extra.insert(name, v);
                }
            }
        }
    }
    for (name, v) in md.get(doc.name).into_iter().flatten() {
        extra.insert(name, v);
    }
    if extra.is_empty() {
        return args;
    }
    let mut entries = match args.value {
        Value::Map(entries) => entries,
        Value::Null => Vec::new(),
        _ => return args,
    };
    for (name, (value, path)) in extra {
        if entries.iter().any(|(k, _)| k.as_str() == Some(name)) {
            continue;
        }
        let mut value = value.clone();
        let (line, column) = if *path == file.path {
            (value.line, value.column)
        } else {
            relocate(&mut value, at);
            (at.line, at.column)
        };
        entries.push((
            Node {
                value: Value::Str(name.to_string()),
                line,
                column,
            },
            value,
        ));
    }
    Node {
        value: Value::Map(entries),
        line: args.line,
        column: args.column,
    }
}

/// Moves a node and everything in it to `at`'s position.
fn relocate(node: &mut Node, at: &Node) {
    node.line = at.line;
    node.column = at.column;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|i| relocate(i, at)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            relocate(k, at);
            relocate(v, at);
        }),
        _ => {}
    }
}

/// A key's value as its shape reads it.
enum Read<'n> {
    /// [`Shape::Text`], [`Shape::VarName`], [`Shape::BecomeMethod`], [`Shape::Expression`]
    /// (braces stripped).
    Text(String),
    Bool(bool),
    /// [`Shape::Count`], [`Shape::Percent`].
    Count(u32),
    /// [`Shape::Severity`].
    Severity(Severity),
    Duration(Duration),
    Texts(Vec<String>),
    /// Step ids, each where it was written.
    Ids(Vec<(String, Location)>),
    /// The items, or the template giving them.
    Loop(Json),
    Vars(IndexMap<String, Json>),
    /// A value its key's own code reads: rollback, secrets, defaults, module defaults,
    /// steps, phases.
    Node(&'n Node),
}

impl Read<'_> {
    /// Its kind, for [`Loader::unhandled`].
    fn kind(&self) -> &'static str {
        match self {
            Read::Text(_) => "text",
            Read::Bool(_) => "a boolean",
            Read::Count(_) => "a number",
            Read::Severity(_) => "a severity",
            Read::Duration(_) => "a duration",
            Read::Texts(_) => "texts",
            Read::Ids(_) => "ids",
            Read::Loop(_) => "loop items",
            Read::Vars(_) => "variables",
            Read::Node(_) => "a node",
        }
    }
}

impl Loader {
    fn err(&mut self, e: SourceError) {
        // A module default is checked again with each step it applies to: say a
        // mistake of it once.
        let said = e.to_string();
        if self.errors.0.iter().any(|x| x.to_string() == said) {
            return;
        }
        self.errors.push(e);
    }

    fn load_file(
        &mut self,
        file: &SourceFile,
        prefix: &str,
        import_vars: &IndexMap<String, Json>,
        inherited: &ModuleDefaults,
        visiting: &mut Vec<PathBuf>,
    ) -> Result<Playbook, InputErrors> {
        let canonical = file
            .path
            .canonicalize()
            .unwrap_or_else(|_| file.path.clone());
        visiting.push(canonical);
        self.files.push(file.clone());
        let root = yaml::parse(file)?;
        let base_dir = dir_of(&file.path);
        let Some(entries) = root.as_map() else {
            return Err(root
                .error(
                    file,
                    format!(
                        "a playbook is a mapping with `steps:`, found {}",
                        root.kind()
                    ),
                )
                .with_help("start the file with `name:` and `steps:`")
                .into());
        };
        let mut pb = Playbook {
            name: file
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "playbook".into()),
            description: None,
            hosts: "all".into(),
            vars: IndexMap::new(),
            secrets: IndexMap::new(),
            steps: Vec::new(),
            file: file.clone(),
            base_dir: base_dir.clone(),
            files: Vec::new(),
            rto_target: None,
            rpo_target: None,
            max_fail_percentage: 0,
            groups: IndexMap::new(),
        };
        let mut defaults = Defaults::default();
        let mut own_modules = ModuleDefaults::new();
        let mut steps_node: Option<(&Node, &Node)> = None;
        for (k, v) in entries {
            let Some((key, read)) = self.key(file, k, v, Place::Playbook) else {
                continue;
            };
            match (key.name, read) {
                ("name", Read::Text(s)) => pb.name = s,
                ("description", Read::Text(s)) => pb.description = Some(s),
                ("hosts", Read::Text(h)) => {
                    pb.hosts = h;
                    defaults
                        .hosts
                        .get_or_insert((pb.hosts.clone(), v.location(file)));
                }
                ("vars", Read::Vars(vars)) => pb.vars.extend(vars),
                ("vars_files", Read::Texts(paths)) => {
                    for path in paths {
                        let full = base_dir.join(&path);
                        match SourceFile::read(&full).and_then(|f| yaml::parse(&f).map(|n| (f, n)))
                        {
                            Ok((f, node)) => {
                                let vars = self.vars_map(&f, &node).unwrap_or_default();
                                for (k, val) in vars {
                                    pb.vars.entry(k).or_insert(val);
                                }
                            }
                            Err(mut e) => {
                                // A file that cannot be read: point at where it is named.
                                if e.location.is_none() {
                                    let item = v.as_seq().and_then(|items| {
                                        items
                                            .iter()
                                            .find(|i| i.scalar_text().as_ref() == Some(&path))
                                    });
                                    e.location = Some(item.unwrap_or(v).location(file));
                                }
                                self.err(e)
                            }
                        }
                    }
                }
                ("secrets", Read::Node(node)) => pb.secrets = self.secrets(file, node, &base_dir),
                ("defaults", Read::Node(node)) => defaults = self.defaults(file, node, defaults),
                ("module_defaults", Read::Node(node)) => {
                    own_modules = self.module_defaults(file, node)
                }
                ("steps" | "phases", Read::Node(node)) => {
                    if let Some((first, _)) = steps_node {
                        self.err(
                            k.error(
                                file,
                                format!(
                                    "a playbook has `steps` or `phases`, not both (`{}` is at line {})",
                                    first.as_str().unwrap_or_default(),
                                    first.line
                                ),
                            )
                            .with_help("put every step under one of them"),
                        );
                    }
                    steps_node = Some((k, node));
                }
                ("rto_target", Read::Duration(d)) => pb.rto_target = Some(d),
                ("rpo_target", Read::Duration(d)) => pb.rpo_target = Some(d),
                ("max_fail_percentage", Read::Count(p)) => pb.max_fail_percentage = p,
                (_, read) => self.unhandled(file, k, key, Place::Playbook, &read),
            }
        }
        // The importers' module defaults win over the file's own, as their vars do.
        defaults.modules = layer(&own_modules, inherited);
        let mut vars = pb.vars.clone();
        vars.extend(import_vars.clone());
        match steps_node {
            None => self.err(
                root.error(file, "the playbook has no `steps:`")
                    .with_help("add `steps:` with a list of steps"),
            ),
            Some((key, node)) if key.as_str() == Some("phases") => {
                // `phases:` maps a phase name to its steps, each step tagged with it.
                match node.as_map() {
                    Some(phases) => {
                        for (pk, pv) in phases {
                            let phase = pk.scalar_text().unwrap_or_default();
                            self.steps(
                                file,
                                pv,
                                prefix,
                                &defaults,
                                &vars,
                                Some(&phase),
                                visiting,
                                &mut pb,
                            );
                        }
                    }
                    None => self.err(node.error(
                        file,
                        format!(
                            "`phases` must be a mapping of phase name to steps, found {}",
                            node.kind()
                        ),
                    )),
                }
            }
            Some((_, node)) => self.steps(
                file, node, prefix, &defaults, &vars, None, visiting, &mut pb,
            ),
        }
        visiting.pop();
        if visiting.is_empty() {
            self.check_ids_and_needs(&mut pb);
        }
        pb.files = self.files.clone();
        Ok(pb)
    }

    #[allow(clippy::too_many_arguments)]
    fn steps(
        &mut self,
        file: &SourceFile,
        node: &Node,
        prefix: &str,
        defaults: &Defaults,
        vars: &IndexMap<String, Json>,
        phase: Option<&str>,
        visiting: &mut Vec<PathBuf>,
        pb: &mut Playbook,
    ) {
        let Some(items) = node.as_seq() else {
            self.err(node.error(
                file,
                format!("`steps` must be a list, found {}", node.kind()),
            ));
            return;
        };
        for item in items {
            if item.get("import").is_some() {
                self.import(file, item, prefix, defaults, vars, phase, visiting, pb);
                continue;
            }
            let index = pb.steps.len() + 1;
            if let Some(mut step) = self.step(file, item, prefix, defaults, index) {
                // An imported file's vars (and its import's) travel with its steps; the
                // main playbook's are playbook vars, one rank lower.
                if !prefix.is_empty() {
                    for (k, v) in vars {
                        step.vars.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                if step.phase.is_none() {
                    step.phase = phase.map(str::to_string);
                }
                pb.steps.push(step);
            }
        }
    }

    /// An `import:` entry: the file's steps, prefixed with the import's id; with
    /// `loop:`, once per item, expanded here (see [`Loader::expand_import`]).
    #[allow(clippy::too_many_arguments)]
    fn import(
        &mut self,
        file: &SourceFile,
        item: &Node,
        prefix: &str,
        outer_defaults: &Defaults,
        outer_vars: &IndexMap<String, Json>,
        phase: Option<&str>,
        visiting: &mut Vec<PathBuf>,
        pb: &mut Playbook,
    ) {
        let mut entry = ImportEntry {
            vars: IndexMap::new(),
            id: None,
            needs: Vec::new(),
            hosts: None,
            tags: Vec::new(),
            phase: phase.map(str::to_string),
            modules: ModuleDefaults::new(),
        };
        let mut path = None;
        let mut items: Option<(Vec<String>, &Node)> = None;
        let mut loop_var = "item".to_string();
        let mut order = "together".to_string();
        for (k, v) in item.as_map().unwrap_or(&[]) {
            let Some((key, read)) = self.key(file, k, v, Place::Import) else {
                continue;
            };
            match (key.name, read) {
                ("import", Read::Text(rel)) => path = Some((rel, v)),
                ("id", Read::Text(s)) => entry.id = Some(s),
                ("vars", Read::Vars(vars)) => entry.vars = vars,
                ("needs", Read::Ids(ids)) => entry.needs = ids,
                ("hosts", Read::Text(h)) => entry.hosts = Some((h, v.location(file))),
                ("tags", Read::Texts(t)) => entry.tags = t,
                ("phase", Read::Text(p)) => entry.phase = Some(p),
                ("module_defaults", Read::Node(node)) => {
                    entry.modules = self.module_defaults(file, node)
                }
                ("loop", Read::Texts(t)) => items = Some((t, v)),
                ("loop_var", Read::Text(n)) => loop_var = n,
                ("loop_order", Read::Text(o)) => order = o,
                (_, read) => self.unhandled(file, k, key, Place::Import, &read),
            }
        }
        // A path that is not a string was reported by `key`.
        let Some((rel, path_node)) = path else { return };
        let Some((items, items_node)) = items else {
            // (`loop_order` without `loop` orders one import: nothing to do.)
            self.import_once(
                file,
                &rel,
                path_node,
                entry,
                prefix,
                outer_defaults,
                outer_vars,
                visiting,
                pb,
            );
            return;
        };
        let reverse = match order.as_str() {
            "in_order" => Some(false),
            "reverse" => Some(true),
            _ => None,
        };
        self.expand_import(
            file,
            (&rel, path_node),
            entry,
            (&items, items_node, &loop_var, reverse),
            (prefix, outer_defaults, outer_vars),
            visiting,
            pb,
        );
    }

    /// `loop:` on an import: the file imported once per item, with the item in
    /// `loop_var` and the id `ITEM-ID`; the import's id stands for every expansion (so
    /// `needs: [ID]` or `[ID@all]` waits for all of them). With `loop_order: in_order`
    /// each expansion needs the one before; `reverse` takes the items backwards so.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn expand_import(
        &mut self,
        file: &SourceFile,
        (rel, path_node): (&str, &Node),
        entry: ImportEntry,
        (items, items_node, loop_var, reverse): (&[String], &Node, &str, Option<bool>),
        (prefix, outer_defaults, outer_vars): (&str, &Defaults, &IndexMap<String, Json>),
        visiting: &mut Vec<PathBuf>,
        pb: &mut Playbook,
    ) {
        let group = entry.id.clone().unwrap_or_else(|| import_name(rel));
        if let Some(bad) = items.iter().find(|i| {
            i.is_empty()
                || !i
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-'))
        }) {
            self.err(
                items_node
                    .error(file, format!("`loop` item `{bad}` cannot name an import"))
                    .with_help("an import's items are words (letters, digits, `_`, `-`): each names its steps, `ITEM-ID`"),
            );
            return;
        }
        let mut ordered: Vec<&String> = items.iter().collect();
        if reverse == Some(true) {
            ordered.reverse();
        }
        let mut all_ids = Vec::new();
        let mut previous: Option<String> = None;
        for it in ordered {
            let mut one = entry.clone();
            let id = format!("{it}-{group}");
            one.id = Some(id.clone());
            one.vars
                .insert(loop_var.to_string(), Json::String(it.clone()));
            if let Some(p) = previous.take()
                && reverse.is_some()
            {
                one.needs.push((p, items_node.location(file)));
            }
            self.import_once(
                file,
                rel,
                path_node,
                one,
                prefix,
                outer_defaults,
                outer_vars,
                visiting,
                pb,
            );
            all_ids.extend(
                pb.groups
                    .get(&format!("{prefix}{id}"))
                    .cloned()
                    .unwrap_or_default(),
            );
            previous = Some(id);
        }
        pb.groups.insert(format!("{prefix}{group}"), all_ids);
    }

    #[allow(clippy::too_many_arguments)]
    fn import_once(
        &mut self,
        file: &SourceFile,
        rel: &str,
        path_node: &Node,
        entry: ImportEntry,
        prefix: &str,
        outer_defaults: &Defaults,
        outer_vars: &IndexMap<String, Json>,
        visiting: &mut Vec<PathBuf>,
        pb: &mut Playbook,
    ) {
        let ImportEntry {
            vars: import_vars,
            id,
            needs,
            hosts,
            tags,
            phase: import_phase,
            modules: import_modules,
        } = entry;
        let base = dir_of(&file.path);
        let full = base.join(rel);
        let canonical = full.canonicalize().unwrap_or_else(|_| full.clone());
        if visiting.contains(&canonical) {
            self.err(
                path_node
                    .error(
                        file,
                        format!("`{rel}` imports itself (directly or through other imports)"),
                    )
                    .with_help("remove the circular import"),
            );
            return;
        }
        let sub_file = match SourceFile::read(&full) {
            Ok(f) => f,
            Err(e) => {
                self.err(
                    path_node
                        .error(file, e.message)
                        .with_help("the path is relative to the importing file"),
                );
                return;
            }
        };
        let group = id.unwrap_or_else(|| import_name(rel));
        let sub_prefix = format!("{prefix}{group}.");
        let mut vars = outer_vars.clone();
        vars.extend(import_vars);
        // The import's module defaults win over its importer's, for its steps.
        let modules = layer(&outer_defaults.modules, &import_modules);
        let sub = match self.load_file(&sub_file, &sub_prefix, &vars, &modules, visiting) {
            Ok(sub) => sub,
            Err(e) => {
                self.errors.extend(e);
                return;
            }
        };
        let mut ids = Vec::new();
        for mut step in sub.steps {
            // Imported steps with no needs of their own wait for the import's needs.
            if step.needs.is_empty() {
                step.needs = needs
                    .iter()
                    .map(|(n, l): &(String, Location)| (format!("{prefix}{n}"), l.clone()))
                    .collect();
            }
            // The import's `hosts:` wins over the imported file's defaults; a file
            // with no hosts of its own runs where its importer's steps run.
            if !step.hosts_explicit {
                match (&hosts, &step.hosts) {
                    (Some((h, loc)), _) => {
                        step.hosts = Some(h.clone());
                        step.hosts_location = loc.clone();
                    }
                    (None, None) => {
                        if let Some((h, loc)) = &outer_defaults.hosts {
                            step.hosts = Some(h.clone());
                            step.hosts_location = loc.clone();
                        }
                    }
                    (None, Some(_)) => {}
                }
            }
            step.tags.extend(tags.iter().cloned());
            if step.phase.is_none() {
                step.phase = import_phase.clone();
            }
            ids.push(step.id.clone());
            pb.steps.push(step);
        }
        for (g, members) in sub.groups {
            pb.groups.insert(g, members);
        }
        pb.groups.insert(format!("{prefix}{group}"), ids);
        pb.secrets.extend(sub.secrets);
    }

    fn step(
        &mut self,
        file: &SourceFile,
        node: &Node,
        prefix: &str,
        defaults: &Defaults,
        index: usize,
    ) -> Option<Step> {
        let Some(entries) = node.as_map() else {
            self.err(node.error(file, format!("a step is a mapping, found {}", node.kind())).with_help(
                "write a step as `- id: name` followed by its module, e.g. `shell: echo hi`",
            ));
            return None;
        };
        let mut module: Option<(Arc<dyn Module>, &Node, &Node)> = None;
        let mut unknown: Vec<(&Node, String)> = Vec::new();
        let mut step_errors = false;
        for (k, v) in entries {
            let key = k.scalar_text().unwrap_or_default();
            if keys::find(Place::Step, &key).is_some() {
                continue;
            }
            match modules::lookup(&key) {
                Some(m) => {
                    if let Some((first, first_key, _)) = &module {
                        self.err(
                            k.error(
                                file,
                                format!(
                                    "a step has exactly one module, but this one has `{}` (line {}) and `{key}`",
                                    first.doc().name,
                                    first_key.line
                                ),
                            )
                            .with_help("split it into two steps and order them with `needs`"),
                        );
                        step_errors = true;
                    } else {
                        module = Some((m, k, v));
                    }
                }
                None => {
                    unknown.push((k, key));
                    step_errors = true;
                }
            }
        }
        for (k, key) in unknown {
            let module_arg = module
                .as_ref()
                .filter(|(m, _, _)| m.doc().args.iter().any(|a| a.name == key))
                .map(|(m, _, _)| m.doc().name);
            let candidates = keys::names(Place::Step)
                .into_iter()
                .chain(modules::registry().keys().copied());
            let help = match (module_arg, did_you_mean(&key, candidates)) {
                (Some(m), _) => format!(
                    "`{key}` is an argument of `{m}`: write it under the module, e.g. `{m}: {{ cmd: ..., {key}: ... }}`"
                ),
                (None, Some(s)) => format!("did you mean `{s}`?"),
                (None, None) => {
                    "see `lifeboat modules` for the modules, and docs/playbooks.md for step keys"
                        .into()
                }
            };
            self.err(
                k.error(file, format!("unknown key or module `{key}` in a step"))
                    .with_help(help),
            );
        }
        let location = node.location(file);
        let id_node = node.get("id");
        let id = self.step_text(file, node, "id");
        let name = self.step_text(file, node, "name");
        let raw_id = id
            .or_else(|| name.as_deref().map(slug))
            .unwrap_or_else(|| format!("step{index}"));
        if let Some(n) = id_node
            && (raw_id.is_empty() || raw_id.contains(char::is_whitespace) || raw_id.contains('@'))
        {
            self.err(
                n.error(
                    file,
                    format!("step id `{raw_id}` must be a non-empty word without spaces or `@`"),
                )
                .with_help("`@all` after an id in `needs` means on every host"),
            );
        }
        let Some((module, mod_key, mod_value)) = module else {
            if !step_errors {
                self.err(
                    node.error(file, format!("step `{raw_id}` has no module"))
                        .with_help(
                            "add one module key, e.g. `shell: ...`; `lifeboat modules` lists them",
                        ),
                );
            }
            return None;
        };
        let own_args = normalize_args(module.doc(), mod_value);
        self.check_templates(file, &own_args, module.raw_args());
        // Module defaults are checked where written; here, with the step's own
        // arguments (required ones, arguments that exclude each other).
        let args_node =
            with_module_defaults(&defaults.modules, module.doc(), own_args, file, mod_key);
        for e in validate_args(&*module, mod_key, &args_node, file) {
            self.err(e);
        }
        let mut step = Step {
            id: format!("{prefix}{raw_id}"),
            scope: prefix.to_string(),
            name: name.unwrap_or_else(|| raw_id.clone()),
            hosts: defaults.hosts.as_ref().map(|(h, _)| h.clone()),
            hosts_explicit: false,
            hosts_location: defaults
                .hosts
                .as_ref()
                .map_or_else(|| location.clone(), |(_, l)| l.clone()),
            needs: Vec::new(),
            when: None,
            loop_items: None,
            register: None,
            become_: defaults.become_.unwrap_or(false),
            become_user: defaults.become_user.clone(),
            become_method: defaults.become_method.clone(),
            timeout: defaults.timeout,
            retries: defaults.retries.unwrap_or(0),
            retry_delay: defaults.retry_delay.unwrap_or(Duration::from_secs(1)),
            ignore_errors: defaults.ignore_errors.unwrap_or(false),
            severity: defaults.severity.unwrap_or_default(),
            read_only: false,
            run_once: false,
            finally: false,
            delegate_to: None,
            tags: defaults.tags.clone(),
            no_log: defaults.no_log.unwrap_or(false),
            vars: IndexMap::new(),
            args: if args_node.value == Value::Null {
                Json::Object(Default::default())
            } else {
                args_node.to_json()
            },
            module,
            rollback: RollbackSpec::Auto,
            phase: None,
            location: location.clone(),
            base_dir: dir_of(&file.path),
        };
        let mut rollback_node = defaults.rollback.clone();
        // Where the step itself writes `severity` and `ignore_errors`, to say where they
        // contradict each other.
        let mut severity_at: Option<&Node> = None;
        let mut ignore_at: Option<&Node> = None;
        for (k, v) in entries {
            let key = k.scalar_text().unwrap_or_default();
            // Unknown keys and the module were dealt with above; `id` and `name` too.
            let Some(key) =
                keys::find(Place::Step, &key).filter(|k| !matches!(k.name, "id" | "name"))
            else {
                continue;
            };
            let Some(read) = self.read(file, v, key) else {
                continue;
            };
            match (key.name, read) {
                ("hosts", Read::Text(h)) => {
                    step.hosts = Some(h);
                    step.hosts_location = v.location(file);
                    step.hosts_explicit = true;
                }
                // Ids are the file's own: an imported file's are prefixed like its steps.
                ("needs", Read::Ids(ids)) => {
                    step.needs = ids
                        .into_iter()
                        .map(|(n, l)| (format!("{prefix}{n}"), l))
                        .collect();
                }
                ("when", Read::Text(w)) => step.when = Some(w),
                ("loop", Read::Loop(items)) => step.loop_items = Some(items),
                ("register", Read::Text(r)) => step.register = Some(r),
                ("become", Read::Bool(b)) => step.become_ = b,
                ("become_user", Read::Text(u)) => step.become_user = Some(u),
                ("become_method", Read::Text(m)) => step.become_method = Some(m),
                ("timeout", Read::Duration(d)) => step.timeout = Some(d),
                ("retries", Read::Count(n)) => step.retries = n,
                ("retry_delay", Read::Duration(d)) => step.retry_delay = d,
                ("ignore_errors", Read::Bool(b)) => {
                    step.ignore_errors = b;
                    ignore_at = Some(k);
                }
                ("severity", Read::Severity(s)) => {
                    step.severity = s;
                    severity_at = Some(k);
                }
                ("read_only", Read::Bool(b)) => step.read_only = b,
                ("run_once", Read::Bool(b)) => step.run_once = b,
                ("finally", Read::Bool(b)) => step.finally = b,
                ("delegate_to", Read::Text(d)) => {
                    step.delegate_to = Some(d);
                    self.check_templates(file, v, &[]);
                }
                ("tags", Read::Texts(t)) => step.tags.extend(t),
                ("no_log", Read::Bool(b)) => step.no_log = b,
                ("vars", Read::Vars(vars)) => {
                    step.vars = vars;
                    self.check_templates(file, v, &[]);
                }
                ("rollback", Read::Node(r)) => rollback_node = Some(r.clone()),
                ("phase", Read::Text(p)) => step.phase = Some(p),
                (_, read) => self.unhandled(file, k, key, Place::Step, &read),
            }
        }
        if let Some(r) = rollback_node {
            step.rollback = self.rollback(file, &r, &defaults.modules);
        }
        // When both come from `defaults:`, that was said there, once (see `defaults`).
        if step.ignore_errors
            && step.severity == Severity::Warning
            && let Some(at) = severity_at.or(ignore_at)
        {
            let from = match (severity_at, ignore_at) {
                (Some(_), Some(_)) => "",
                (Some(_), None) => " (`ignore_errors` from `defaults:`)",
                (None, _) => " (`severity` from `defaults:`)",
            };
            self.err(
                at.error(
                    file,
                    format!(
                        "step `{}` has both `severity: warning` and `ignore_errors: true`{from}: \
                         a failure cannot be both a warning and an ignored error",
                        step.id
                    ),
                )
                .with_help(
                    "keep `severity: warning` (its failure is reported as a warning and the run \
                     goes on) and remove `ignore_errors`, or write `ignore_errors: false` on the \
                     step when `defaults:` sets it",
                ),
            );
        }
        Some(step)
    }

    fn rollback(&mut self, file: &SourceFile, node: &Node, md: &ModuleDefaults) -> RollbackSpec {
        match &node.value {
            Value::Str(s) if s == "auto" => RollbackSpec::Auto,
            Value::Str(s) if s == "none" => RollbackSpec::None,
            Value::Null => RollbackSpec::None,
            Value::Map(_) => {
                RollbackSpec::Actions(self.action(file, node, md).into_iter().collect())
            }
            Value::Seq(items) => RollbackSpec::Actions(
                items
                    .iter()
                    .filter_map(|i| self.action(file, i, md))
                    .collect(),
            ),
            _ => {
                self.err(
                    node.error(
                        file,
                        "`rollback` must be `auto`, `none`, a module invocation or a list of them",
                    )
                    .with_help("e.g. `rollback: { shell: systemctl start nova-api }`"),
                );
                RollbackSpec::Auto
            }
        }
    }

    fn action(&mut self, file: &SourceFile, node: &Node, md: &ModuleDefaults) -> Option<Action> {
        let Some(entries) = node.as_map() else {
            self.err(node.error(
                file,
                format!(
                    "a rollback action is a mapping such as `shell: ...`, found {}",
                    node.kind()
                ),
            ));
            return None;
        };
        if entries.len() != 1 {
            self.err(
                node.error(file, "a rollback action has exactly one module key")
                    .with_help("write a list for several actions"),
            );
            return None;
        }
        let (k, v) = &entries[0];
        let key = k.scalar_text().unwrap_or_default();
        let Some(module) = modules::lookup(&key) else {
            let help = did_you_mean(&key, modules::registry().keys().copied()).map_or_else(
                || "see `lifeboat modules`".to_string(),
                |s| format!("did you mean `{s}`?"),
            );
            self.err(
                k.error(file, format!("unknown module `{key}` in rollback"))
                    .with_help(help),
            );
            return None;
        };
        let args = normalize_args(module.doc(), v);
        self.check_templates(file, &args, module.raw_args());
        let args = with_module_defaults(md, module.doc(), args, file, k);
        for e in validate_args(&*module, k, &args, file) {
            self.err(e);
        }
        Some(Action {
            args: if args.value == Value::Null {
                Json::Object(Default::default())
            } else {
                args.to_json()
            },
            module,
            location: k.location(file),
        })
    }

    fn defaults(&mut self, file: &SourceFile, node: &Node, mut d: Defaults) -> Defaults {
        let Some(entries) = node.as_map() else {
            self.err(node.error(
                file,
                format!("`defaults` must be a mapping, found {}", node.kind()),
            ));
            return d;
        };
        for (k, v) in entries {
            let Some((key, read)) = self.key(file, k, v, Place::Defaults) else {
                continue;
            };
            match (key.name, read) {
                ("hosts", Read::Text(h)) => d.hosts = Some((h, v.location(file))),
                ("become", Read::Bool(b)) => d.become_ = Some(b),
                ("become_user", Read::Text(u)) => d.become_user = Some(u),
                ("become_method", Read::Text(m)) => d.become_method = Some(m),
                ("timeout", Read::Duration(t)) => d.timeout = Some(t),
                ("retries", Read::Count(n)) => d.retries = Some(n),
                ("retry_delay", Read::Duration(t)) => d.retry_delay = Some(t),
                ("ignore_errors", Read::Bool(b)) => d.ignore_errors = Some(b),
                ("severity", Read::Severity(s)) => d.severity = Some(s),
                ("no_log", Read::Bool(b)) => d.no_log = Some(b),
                ("tags", Read::Texts(t)) => d.tags = t,
                ("rollback", Read::Node(r)) => d.rollback = Some(r.clone()),
                (_, read) => self.unhandled(file, k, key, Place::Defaults, &read),
            }
        }
        if d.ignore_errors == Some(true)
            && d.severity == Some(Severity::Warning)
            && let Some((k, _)) = entries.iter().find(|(k, _)| k.as_str() == Some("severity"))
        {
            self.err(
                k.error(
                    file,
                    "`defaults` has both `severity: warning` and `ignore_errors: true`: a \
                     failure cannot be both a warning and an ignored error",
                )
                .with_help(
                    "keep `severity: warning` (a failure is reported as a warning and the run \
                     goes on) and remove `ignore_errors`",
                ),
            );
        }
        d
    }

    /// Reads `module_defaults:`, checking each entry where it is written: the module or
    /// group exists, the module (or, for a group, one of its modules) takes the argument,
    /// the value has the argument's type, templates parse. Wrong values are left out.
    fn module_defaults(&mut self, file: &SourceFile, node: &Node) -> ModuleDefaults {
        let mut out = ModuleDefaults::new();
        let entries = match &node.value {
            Value::Map(entries) => entries.as_slice(),
            Value::Null => return out,
            _ => {
                self.err(
                    node.error(
                        file,
                        format!(
                            "`module_defaults` must be a mapping of module names (or group/NAME) to arguments, found {}",
                            node.kind()
                        ),
                    )
                    .with_help("e.g. `module_defaults: {group/mysql: {login_user: backup}}`"),
                );
                return out;
            }
        };
        let group_names: Vec<String> = modules::GROUPS
            .iter()
            .map(|g| format!("{GROUP_PREFIX}{}", g.name))
            .collect();
        for (k, v) in entries {
            let name = k.scalar_text().unwrap_or_default();
            let found: Option<Vec<Arc<dyn Module>>> = match name.strip_prefix(GROUP_PREFIX) {
                Some(g) => modules::group(g).map(|g| {
                    g.members
                        .iter()
                        .filter_map(|m| modules::lookup(m))
                        .collect()
                }),
                None => modules::lookup(&name).map(|m| vec![m]),
            };
            let Some(members) = found else {
                let (what, help) = if name.starts_with(GROUP_PREFIX) {
                    let help = did_you_mean(&name, group_names.iter().map(String::as_str))
                        .map_or_else(
                            || format!("the groups are: {}", group_names.join(", ")),
                            |s| format!("did you mean `{s}`?"),
                        );
                    ("module group", help)
                } else {
                    let candidates = modules::registry()
                        .keys()
                        .copied()
                        .chain(group_names.iter().map(String::as_str));
                    let help = did_you_mean(&name, candidates).map_or_else(
                        || "name a module (`lifeboat modules` lists them) or a group such as `group/mysql`".to_string(),
                        |s| format!("did you mean `{s}`?"),
                    );
                    ("module", help)
                };
                self.err(
                    k.error(file, format!("unknown {what} `{name}` in module_defaults"))
                        .with_help(help),
                );
                continue;
            };
            let args = match &v.value {
                Value::Map(args) => args.as_slice(),
                Value::Null => &[],
                _ => {
                    self.err(
                        v.error(
                            file,
                            format!(
                                "the defaults of `{name}` must be a mapping of arguments, found {}",
                                v.kind()
                            ),
                        )
                        .with_help(format!("e.g. `{name}: {{login_user: backup}}`")),
                    );
                    continue;
                }
            };
            let open = matches!(members.as_slice(), [m] if m.doc().open_args);
            let mut kept = IndexMap::new();
            for (ak, av) in args {
                let arg = ak.scalar_text().unwrap_or_default();
                let takers: Vec<&modules::ArgSpec> = members
                    .iter()
                    .filter_map(|m| m.doc().args.iter().find(|a| a.name == arg))
                    .collect();
                if takers.is_empty() && !open {
                    let mut known: Vec<&str> = Vec::new();
                    for a in members.iter().flat_map(|m| m.doc().args) {
                        if !known.contains(&a.name) {
                            known.push(a.name);
                        }
                    }
                    let message = if name.starts_with(GROUP_PREFIX) {
                        format!("no module of `{name}` takes the argument `{arg}`")
                    } else {
                        format!("unknown argument `{arg}` for module `{name}` in module_defaults")
                    };
                    let help = did_you_mean(&arg, known.iter().copied()).map_or_else(
                        || format!("`{name}` takes: {}", known.join(", ")),
                        |s| format!("did you mean `{s}`?"),
                    );
                    self.err(ak.error(file, message).with_help(help));
                    continue;
                }
                if let Some(e) = takers
                    .iter()
                    .find_map(|spec| check_arg_type(&name, spec, av, file))
                {
                    self.err(e);
                    continue;
                }
                if !members.iter().any(|m| m.raw_args().contains(&arg.as_str())) {
                    let before = self.errors.0.len();
                    self.check_templates(file, av, &[]);
                    if self.errors.0.len() > before {
                        continue;
                    }
                }
                kept.insert(arg, (av.clone(), file.path.clone()));
            }
            out.entry(name).or_default().extend(kept);
        }
        out
    }

    fn secrets(
        &mut self,
        file: &SourceFile,
        node: &Node,
        base: &Path,
    ) -> IndexMap<String, SecretSource> {
        let mut out = IndexMap::new();
        let Some(entries) = node.as_map() else {
            self.err(node.error(
                file,
                format!(
                    "`secrets` must be a mapping of name to source, found {}",
                    node.kind()
                ),
            ));
            return out;
        };
        for (k, v) in entries {
            let name = k.scalar_text().unwrap_or_default();
            // One source, and optionally `optional: true|false`.
            let mut optional = false;
            let mut sources = Vec::new();
            let mut bad_optional = None;
            for (sk, sv) in v.as_map().unwrap_or(&[]) {
                let kind = sk.scalar_text().unwrap_or_default();
                if kind == keys::SECRET_OPTIONAL {
                    match sv.value {
                        Value::Bool(b) => optional = b,
                        _ => bad_optional = Some(sv),
                    }
                } else {
                    sources.push((kind, sv.scalar_text()));
                }
            }
            if let Some(sv) = bad_optional {
                self.err(
                    sv.error(file, format!("`optional` of secret `{name}` must be true or false"))
                        .with_help("write `optional: true` to leave the secret undefined when its source is not there"),
                );
                continue;
            }
            // The kinds are those of [`keys::SECRET_SOURCES`].
            let source = match sources.as_slice() {
                [(kind, Some(t))] => match kind.as_str() {
                    "env" => Some(SecretFrom::Env(t.clone())),
                    "file" => Some(SecretFrom::File(base.join(t))),
                    "command" => Some(SecretFrom::Command(t.clone())),
                    "value" => Some(SecretFrom::Value(Zeroizing::new(t.clone()))),
                    _ => None,
                },
                _ => None,
            };
            match source {
                Some(s) => {
                    let mut s = SecretSource::new(s);
                    s.optional = optional;
                    out.insert(name, s);
                }
                None => self.err(
                    v.error(file, format!("secret `{name}` needs exactly one source"))
                        .with_help("write `{ env: VAR }`, `{ file: path }`, `{ command: \"...\" }` or `{ value: \"...\" }`, and `optional: true` to allow an unset variable or a missing file"),
                ),
            }
        }
        out
    }

    fn check_ids_and_needs(&mut self, pb: &mut Playbook) {
        // (See `split_need` for `@all`.)
        let mut seen: HashMap<String, Location> = HashMap::new();
        for step in &pb.steps {
            if let Some(first) = seen.get(&step.id) {
                self.err(
                    SourceError::at(
                        step.location.clone(),
                        format!("duplicate step id `{}`", step.id),
                    )
                    .with_help(format!("it is first used at {first}; ids must be unique")),
                );
            } else {
                seen.insert(step.id.clone(), step.location.clone());
            }
        }
        let ids: HashSet<&str> = pb.steps.iter().map(|s| s.id.as_str()).collect();
        let groups = &pb.groups;
        for step in &pb.steps {
            for (written, loc) in &step.needs {
                let (need, _) = split_need(written);
                if let Some((_, scope)) = written.rsplit_once('@')
                    && scope != "all"
                {
                    self.errors.push(
                        SourceError::at(
                            loc.clone(),
                            format!(
                                "step `{}` needs `{written}`: after `@` only `all` is known",
                                step.id
                            ),
                        )
                        .with_help(format!(
                            "write `{need}@all` to wait for `{need}` on every host it runs on, or `{need}` for the same host"
                        )),
                    );
                    continue;
                }
                if !ids.contains(need) && !groups.contains_key(need) {
                    let candidates: Vec<&str> = ids
                        .iter()
                        .copied()
                        .chain(groups.keys().map(String::as_str))
                        .collect();
                    let help = did_you_mean(need, candidates.iter().copied()).map_or_else(
                        || "`needs` lists the ids of other steps".to_string(),
                        |s| format!("did you mean `{s}`?"),
                    );
                    self.errors.push(
                        SourceError::at(
                            loc.clone(),
                            format!("step `{}` needs `{need}`, but no step has that id", step.id),
                        )
                        .with_help(help),
                    );
                }
            }
        }
    }

    fn check_templates(&mut self, file: &SourceFile, node: &Node, raw_keys: &[&str]) {
        match &node.value {
            Value::Str(s) => {
                if let Err(e) = self.templates.check_syntax(s) {
                    self.err(
                        node.error(file, format!("template syntax error: {e}"))
                            .with_help("check the {{ }} and {% %} pairs"),
                    );
                }
            }
            Value::Seq(items) => items
                .iter()
                .for_each(|i| self.check_templates(file, i, &[])),
            Value::Map(entries) => {
                for (k, v) in entries {
                    if raw_keys.iter().any(|r| k.as_str() == Some(r)) {
                        continue;
                    }
                    self.check_templates(file, v, &[]);
                }
            }
            _ => {}
        }
    }

    /// A key of the mapping at `place` and its value, checked by the key's shape; `None`
    /// (with the error reported) for a key not allowed there or a wrong value.
    fn key<'n>(
        &mut self,
        file: &SourceFile,
        k: &Node,
        v: &'n Node,
        place: Place,
    ) -> Option<(&'static Key, Read<'n>)> {
        let name = k.scalar_text().unwrap_or_default();
        let Some(key) = keys::find(place, &name) else {
            let allowed = keys::names(place);
            let what = place.word();
            let help = did_you_mean(&name, allowed.iter().copied()).map_or_else(
                || format!("a {what} may have: {}", allowed.join(", ")),
                |s| format!("did you mean `{s}`?"),
            );
            self.err(
                k.error(file, format!("unknown key `{name}` in {what}"))
                    .with_help(help),
            );
            return None;
        };
        Some((key, self.read(file, v, key)?))
    }

    /// A key's value, checked by its shape ([`Shape`]); `None` when it is wrong (reported).
    fn read<'n>(&mut self, file: &SourceFile, v: &'n Node, key: &Key) -> Option<Read<'n>> {
        let name = key.name;
        Some(match key.shape {
            Shape::Text => Read::Text(self.string(file, v, name)?),
            Shape::VarName => Read::Text(self.identifier(file, v, name)?),
            Shape::BecomeMethod => Read::Text(self.become_method(file, v, name)?),
            Shape::LoopOrder => {
                let o = self.string(file, v, name)?;
                if !LOOP_ORDERS.contains(&o.as_str()) {
                    self.err(
                        v.error(file, format!("`{name}: {o}` is not an order"))
                            .with_help("use `together` (the default), `in_order` or `reverse`"),
                    );
                    return None;
                }
                Read::Text(o)
            }
            Shape::Severity => Read::Severity(self.severity(file, v, name)?),
            Shape::Expression => {
                let w = strip_braces(&self.string(file, v, name)?);
                if let Err(e) = self.templates.check_expression(&w) {
                    self.err(v.error(file, format!("invalid `{name}` expression: {e}")).with_help(
                        "`when` is an expression without braces, e.g. `when: backup_enabled and inventory_hostname != 'ctl01'`",
                    ));
                    return None;
                }
                Read::Text(w)
            }
            Shape::Bool => Read::Bool(self.boolean(file, v, name)?),
            Shape::Count => Read::Count(self.count(file, v, name)?),
            Shape::Percent => match self.count(file, v, name)? {
                p if p <= 100 => Read::Count(p),
                p => {
                    self.err(
                        v.error(file, format!("`{name}: {p}` is over 100"))
                            .with_help("give the share of hosts that may fail, 0 to 100"),
                    );
                    return None;
                }
            },
            Shape::Duration => Read::Duration(self.duration(file, v, name)?),
            Shape::Texts => Read::Texts(self.string_list(file, v, name)?),
            Shape::Ids => Read::Ids(self.needs(file, v, name)?),
            Shape::Loop => {
                match &v.value {
                    Value::Seq(_) => self.check_templates(file, v, &[]),
                    Value::Str(s) if Templates::is_template(s) => {
                        self.check_templates(file, v, &[])
                    }
                    _ => {
                        self.err(v.error(
                            file,
                            format!(
                                "`{name}` must be a list or a template giving one, found {}",
                                v.kind()
                            ),
                        ));
                        return None;
                    }
                }
                Read::Loop(v.to_json())
            }
            Shape::Vars => Read::Vars(self.vars_map(file, v)?),
            Shape::Rollback
            | Shape::Secrets
            | Shape::Defaults
            | Shape::ModuleDefaults
            | Shape::Steps
            | Shape::Phases => Read::Node(v),
        })
    }

    /// A key the table allows at `place` that this loader does not take there, or takes
    /// with a value of another shape: a mistake of lifeboat's, said rather than ignored.
    fn unhandled(&mut self, file: &SourceFile, k: &Node, key: &Key, place: Place, read: &Read) {
        self.err(k.error(
            file,
            format!(
                "lifeboat does not handle `{}` in a {} (read as {}): this is a bug",
                key.name,
                place.word(),
                read.kind()
            ),
        ));
    }

    /// A step's `id` or `name`, read by its key's shape.
    fn step_text(&mut self, file: &SourceFile, step: &Node, name: &str) -> Option<String> {
        let v = step.get(name)?;
        match self.read(file, v, keys::find(Place::Step, name)?)? {
            Read::Text(s) => Some(s),
            _ => None,
        }
    }

    fn string(&mut self, file: &SourceFile, v: &Node, key: &str) -> Option<String> {
        match &v.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => v.scalar_text(),
            _ => {
                self.err(v.error(
                    file,
                    format!("`{key}` must be a string, found {}", v.kind()),
                ));
                None
            }
        }
    }

    fn identifier(&mut self, file: &SourceFile, v: &Node, key: &str) -> Option<String> {
        let s = self.string(file, v, key)?;
        // `register: true` would name a variable no template can reach (`true`).
        let ok = matches!(v.value, Value::Str(_))
            && s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            self.err(
                v.error(file, format!("`{key}: {s}` is not a valid variable name"))
                    .with_help("use letters, digits and _; start with a letter"),
            );
            return None;
        }
        Some(s)
    }

    fn string_list(&mut self, file: &SourceFile, v: &Node, key: &str) -> Option<Vec<String>> {
        match &v.value {
            Value::Str(s) => Some(vec![s.clone()]),
            Value::Seq(items) => Some(
                items
                    .iter()
                    .filter_map(|i| self.string(file, i, key))
                    .collect(),
            ),
            _ => {
                self.err(v.error(
                    file,
                    format!(
                        "`{key}` must be a string or a list of strings, found {}",
                        v.kind()
                    ),
                ));
                None
            }
        }
    }

    fn needs(&mut self, file: &SourceFile, v: &Node, key: &str) -> Option<Vec<(String, Location)>> {
        let items: Vec<&Node> = match &v.value {
            Value::Str(_) => vec![v],
            Value::Seq(items) => items.iter().collect(),
            _ => {
                self.err(v.error(
                    file,
                    format!(
                        "`{key}` must be a step id or a list of them, found {}",
                        v.kind()
                    ),
                ));
                return None;
            }
        };
        Some(
            items
                .into_iter()
                .filter_map(|i| self.string(file, i, key).map(|s| (s, i.location(file))))
                .collect(),
        )
    }

    fn boolean(&mut self, file: &SourceFile, v: &Node, key: &str) -> Option<bool> {
        match &v.value {
            Value::Bool(b) => Some(*b),
            _ => {
                self.err(v.error(
                    file,
                    format!("`{key}` must be true or false, found {}", v.kind()),
                ));
                None
            }
        }
    }

    fn count(&mut self, file: &SourceFile, v: &Node, key: &str) -> Option<u32> {
        match &v.value {
            Value::Int(i) if *i >= 0 => u32::try_from(*i).ok(),
            _ => {
                self.err(v.error(
                    file,
                    format!(
                        "`{key}` must be a whole number of 0 or more, found {}",
                        v.kind()
                    ),
                ));
                None
            }
        }
    }

    fn duration(&mut self, file: &SourceFile, v: &Node, key: &str) -> Option<Duration> {
        let parsed = match &v.value {
            Value::Int(i) if *i >= 0 => Ok(Duration::from_secs(i.unsigned_abs())),
            Value::Float(f) => {
                Duration::try_from_secs_f64(*f).map_err(|_| format!("`{f}` is out of range"))
            }
            Value::Str(s) => parse_duration(s),
            _ => Err(format!("found {}", v.kind())),
        };
        match parsed {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(
                    v.error(file, format!("`{key}` must be a duration: {e}"))
                        .with_help("write e.g. 30s, 5m, 1h30m"),
                );
                None
            }
        }
    }

    fn become_method(&mut self, file: &SourceFile, v: &Node, key: &str) -> Option<String> {
        let m = self.string(file, v, key)?;
        if m != "sudo" && m != "su" {
            self.err(
                v.error(file, format!("`{key}: {m}` is not supported"))
                    .with_help("use sudo or su"),
            );
            return None;
        }
        Some(m)
    }

    fn severity(&mut self, file: &SourceFile, v: &Node, key: &str) -> Option<Severity> {
        let word = self.string(file, v, key)?;
        let severity = Severity::from_word(&word);
        if severity.is_none() {
            let help = did_you_mean(&word, ["error", "warning"]).map_or_else(
                || "write `warning` (a failure is reported as a warning and the run goes on) or `error` (the default)".to_string(),
                |s| format!("did you mean `{s}`? A severity is `warning` or `error` (the default)"),
            );
            self.err(
                v.error(file, format!("`{key}: {word}` is not a severity"))
                    .with_help(help),
            );
        }
        severity
    }

    fn vars_map(&mut self, file: &SourceFile, v: &Node) -> Option<IndexMap<String, Json>> {
        match &v.value {
            Value::Map(entries) => Some(
                entries
                    .iter()
                    .map(|(k, val)| (k.scalar_text().unwrap_or_default(), val.to_json()))
                    .collect(),
            ),
            Value::Null => Some(IndexMap::new()),
            _ => {
                self.err(v.error(
                    file,
                    format!("variables must be a mapping, found {}", v.kind()),
                ));
                None
            }
        }
    }
}

/// The directory of a file, `.` for a bare file name.
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `when: "{{ x }}"` is accepted like `when: x`.
fn strip_braces(s: &str) -> String {
    let t = s.trim();
    match t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
        Some(inner) if !inner.contains("{{") => inner.trim().to_string(),
        _ => t.to_string(),
    }
}

/// An id made from a step name: lower case words joined by `-`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The orders of a looped import's expansions (`loop_order`).
pub const LOOP_ORDERS: &[&str] = &["together", "in_order", "reverse"];

/// An `import:` entry's own keys, as read (before any `loop:` expansion).
#[derive(Clone)]
struct ImportEntry {
    vars: IndexMap<String, Json>,
    id: Option<String>,
    needs: Vec<(String, Location)>,
    hosts: Option<(String, Location)>,
    tags: Vec<String>,
    phase: Option<String>,
    modules: ModuleDefaults,
}

/// An import's id when it names none: the imported file's name without extension.
fn import_name(rel: &str) -> String {
    Path::new(rel)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "import".into())
}

/// A `needs` entry as written: the step (or import) id, and whether it is waited for
/// on every host it runs on (`id@all`) rather than on the same host.
pub fn split_need(need: &str) -> (&str, bool) {
    match need.rsplit_once('@') {
        Some((id, "all")) => (id, true),
        Some((id, _)) => (id, false),
        None => (need, false),
    }
}
