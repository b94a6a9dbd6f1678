//! Modules: what a step does. Each module describes itself ([`ModuleDoc`]: arguments,
//! an example, its result data), has its arguments checked when the playbook loads
//! ([`validate_args`]), runs against a [`Connection`] in a real run or a dry run
//! ([`Module::run`], `ctx.check`), and where it can, captures what it needs to undo
//! itself ([`Outcome::undo`], consumed by [`Module::undo`] during rollback).

pub mod archive;
pub mod assert;
pub mod backup_chain;
pub mod backup_common;
pub mod command;
pub mod copy;
pub mod copy_tree;
pub mod debug;
pub mod fetch;
pub mod file;
pub mod galera_rejoin;
pub mod manifest;
pub mod mariadb_backup;
pub mod move_aside;
pub mod mysql;
pub mod mysql_checksum;
pub mod mysql_dump;
pub mod mysql_query;
pub mod mysql_restore;
pub mod prune;
pub mod restic;
pub mod rsync;
pub mod service;
pub mod set_fact;
pub mod shell;
pub mod template;
pub mod unarchive;
pub mod verify_manifest;
pub mod wait_for;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::connection::local::stat_via_command;
use crate::connection::{
    Become, CommandOutput, CommandSpec, Connection, ConnectionError, FileStat, OutputChunk, quote,
};
use crate::error::{SourceError, SourceFile, did_you_mean};
use crate::template::Templates;
use crate::yaml::{Node, Value};

/// The type an argument takes, checked at load time (a template string is accepted
/// for any type and checked again once rendered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// A string.
    Str,
    /// A string or a list of strings.
    StrOrList,
    /// A whole number.
    Int,
    /// true / false.
    Bool,
    /// A list.
    List,
    /// A mapping.
    Map,
    /// A duration such as `30s` or `5m` (or a number of seconds).
    Duration,
    /// A file mode written as a string, such as `"0644"` or `"u+rwx"`.
    Mode,
    /// Anything.
    Any,
}

impl ArgKind {
    /// How the type is named in documentation and messages.
    pub fn describe(self) -> &'static str {
        match self {
            ArgKind::Str => "string",
            ArgKind::StrOrList => "string or list of strings",
            ArgKind::Int => "integer",
            ArgKind::Bool => "boolean",
            ArgKind::List => "list",
            ArgKind::Map => "mapping",
            ArgKind::Duration => "duration (e.g. 30s, 5m)",
            ArgKind::Mode => "mode string (e.g. \"0644\")",
            ArgKind::Any => "any",
        }
    }

    fn accepts(self, node: &Node) -> bool {
        if let Value::Str(s) = &node.value
            && Templates::is_template(s)
        {
            return true;
        }
        match (self, &node.value) {
            (ArgKind::Any, _) => true,
            (ArgKind::Str, Value::Str(_) | Value::Int(_) | Value::Float(_)) => true,
            (ArgKind::StrOrList, Value::Str(_) | Value::Seq(_)) => true,
            (ArgKind::Int, Value::Int(_)) => true,
            (ArgKind::Bool, Value::Bool(_)) => true,
            (ArgKind::List, Value::Seq(_)) => true,
            (ArgKind::Map, Value::Map(_)) => true,
            (ArgKind::Duration, Value::Str(s)) => parse_duration(s).is_ok(),
            (ArgKind::Duration, Value::Int(i)) => *i >= 0,
            (ArgKind::Mode, Value::Str(_)) => true,
            _ => false,
        }
    }
}

/// One argument of a module.
#[derive(Debug, Clone, Copy)]
pub struct ArgSpec {
    /// Its key.
    pub name: &'static str,
    /// Its type.
    pub kind: ArgKind,
    /// Must be given.
    pub required: bool,
    /// What it does (and its default).
    pub doc: &'static str,
}

/// The module arguments that are secret by nature, wherever their value comes from (an
/// inventory variable, `-e`, a literal): masked in every output, and kept in the journal
/// as a reference to the step's argument (named [`ARG_SECRET_PREFIX`]`STEP/HOST/NAME`),
/// which an undo renders again from the step.
pub const SECRET_ARGS: &[&str] = &["login_password", "password", "become_password"];

/// The prefix of the journal's references to a module argument's secret value.
pub const ARG_SECRET_PREFIX: &str = "arg/";

/// Whether an `env:` entry's name says its value is a secret (a backend key: `ST_KEY`,
/// `AWS_SECRET_ACCESS_KEY`, `B2_ACCOUNT_KEY`, `OS_PASSWORD`, ...).
pub fn secret_env_name(name: &str) -> bool {
    let u = name.to_ascii_uppercase();
    ["KEY", "SECRET", "PASSWORD", "TOKEN", "CREDENTIAL"]
        .iter()
        .any(|w| u.contains(w))
}

/// The secret values among rendered arguments, by where they are (`login_password`,
/// `env.ST_KEY`); empty values are left out.
pub fn secret_values(args: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Json::Object(map) = args else {
        return out;
    };
    for (k, v) in map {
        match v {
            Json::String(s) if SECRET_ARGS.contains(&k.as_str()) && !s.is_empty() => {
                out.push((k.clone(), s.clone()));
            }
            Json::Object(env) if k == "env" => {
                for (name, v) in env {
                    if let Json::String(s) = v
                        && secret_env_name(name)
                        && !s.is_empty()
                    {
                        out.push((format!("env.{name}"), s.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Shorthand for an argument spec.
pub const fn arg(name: &'static str, kind: ArgKind, required: bool, doc: &'static str) -> ArgSpec {
    ArgSpec {
        name,
        kind,
        required,
        doc,
    }
}

/// A module's self-description, shown by `lifeboat modules NAME` and used to validate.
#[derive(Debug, Clone, Copy)]
pub struct ModuleDoc {
    /// The module key in a step.
    pub name: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// More on how it behaves: dry run, rollback, changed.
    pub description: &'static str,
    /// When the step's value is a scalar (or a list), the argument it fills.
    pub free_form: Option<&'static str>,
    /// Arguments.
    pub args: &'static [ArgSpec],
    /// Any key is an argument (`set_fact`): no unknown-key check.
    pub open_args: bool,
    /// A YAML example step.
    pub example: &'static str,
    /// Keys of the result's `data`, with what they hold.
    pub returns: &'static [(&'static str, &'static str)],
    /// What automatic rollback does.
    pub rollback: &'static str,
}

/// What a module needs while it runs on one host.
#[derive(Clone)]
pub struct ModuleContext {
    /// The inventory host this node is for.
    pub host: String,
    /// The connection commands go through (the delegate's, with `delegate_to`).
    pub conn: Arc<dyn Connection>,
    /// Dry run: probe read-only, change nothing, predict `changed`.
    pub check: bool,
    /// Produce diffs of file content.
    pub diff: bool,
    /// The step's timeout for each command.
    pub timeout: Option<Duration>,
    /// Privilege escalation for commands.
    pub become_: Option<Become>,
    /// Where `-v` output goes.
    pub sink: Option<mpsc::UnboundedSender<OutputChunk>>,
    /// Templates, for modules that render files or expressions.
    pub templates: Arc<Templates>,
    /// The variables of this node.
    pub vars: minijinja::Value,
    /// The directory relative controller paths (`src`) start from: the playbook's.
    pub base_dir: PathBuf,
    /// An id unique to this run, for temporary names.
    pub run_id: String,
}

impl ModuleContext {
    /// Runs a command on the host with the step's become, timeout and output sink.
    pub async fn run(&self, spec: CommandSpec) -> Result<CommandOutput, ModuleError> {
        self.exec(spec, self.sink.clone()).await
    }

    /// Runs a probe (a stat, a checksum): like [`ModuleContext::run`], but its output
    /// is not streamed with `-v`.
    pub async fn probe(&self, spec: CommandSpec) -> Result<CommandOutput, ModuleError> {
        self.exec(spec, None).await
    }

    async fn exec(
        &self,
        spec: CommandSpec,
        sink: Option<mpsc::UnboundedSender<OutputChunk>>,
    ) -> Result<CommandOutput, ModuleError> {
        let spec = CommandSpec {
            timeout: spec.timeout.or(self.timeout),
            become_: spec.become_.or_else(|| self.become_.clone()),
            ..spec
        };
        let out = self.conn.run(&spec, sink).await?;
        if out.timed_out {
            return Err(ModuleError::TimedOut {
                after: spec.timeout.unwrap_or_default(),
                output: out,
            });
        }
        Ok(out)
    }

    /// Runs a shell script and fails unless it exits 0.
    pub async fn run_ok(&self, script: impl Into<String>) -> Result<CommandOutput, ModuleError> {
        let script = script.into();
        let out = self.run(CommandSpec::shell(script.clone())).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(ModuleError::Failed {
                message: format!(
                    "`{script}` exited with {}: {}",
                    out.rc.map_or("no status".to_string(), |c| c.to_string()),
                    out.stderr_text().trim()
                ),
                output: Some(out),
            })
        }
    }

    /// Metadata of a host path, as the step's (become) user sees it.
    pub async fn stat(&self, path: &str) -> Result<Option<FileStat>, ModuleError> {
        match &self.become_ {
            None => Ok(self.conn.stat(path).await?),
            Some(b) => Ok(stat_via_command(&*self.conn, path, Some(b)).await?),
        }
    }

    /// Reads a host file (at most `max` bytes) as the step's (become) user; `None`
    /// when it does not exist.
    pub async fn read_file(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, ModuleError> {
        if self.become_.is_none() {
            return Ok(self.conn.read_file(path, max).await?);
        }
        let Some(st) = self.stat(path).await? else {
            return Ok(None);
        };
        if st.size > max {
            return Err(ModuleError::failed(format!(
                "{path} is {} bytes, more than the {max} this operation reads",
                st.size
            )));
        }
        let out = self.probe(CommandSpec::argv(["cat", "--", path])).await?;
        if !out.success() {
            return Err(ModuleError::failed(format!(
                "cannot read {path}: {}",
                out.stderr_text().trim()
            )));
        }
        Ok(Some(out.stdout))
    }

    /// Writes content to a host path (not atomically: callers write a temporary name
    /// and rename). With become, the content is staged as the login user in a private
    /// temporary file, then written by the become user, who therefore owns the result.
    pub async fn upload(&self, content: Upload<'_>, path: &str) -> Result<(), ModuleError> {
        let Some(b) = &self.become_ else {
            match content {
                Upload::Bytes(bytes) => self.conn.put_bytes(bytes, path).await?,
                Upload::File(local) => self.conn.put_file(local, path).await?,
            }
            return Ok(());
        };
        let as_login = |script: String| CommandSpec::shell(script);
        let made = self
            .conn
            .run(
                &as_login("umask 077 && mktemp /tmp/.lifeboat-upload-XXXXXXXX".into()),
                None,
            )
            .await?;
        let staging = made.stdout_text().trim().to_string();
        if !made.success() || staging.is_empty() {
            return Err(ModuleError::failed(format!(
                "cannot make a staging file on the host: {}",
                made.stderr_text().trim()
            )));
        }
        let result = async {
            match content {
                Upload::Bytes(bytes) => self.conn.put_bytes(bytes, &staging).await?,
                Upload::File(local) => self.conn.put_file(local, &staging).await?,
            }
            // The become user must read the staging file: root can; another user
            // needs it world-readable for the moment of the copy.
            if b.user.as_deref().is_some_and(|u| u != "root") {
                self.conn
                    .run(&as_login(format!("chmod 0644 {}", quote(&staging))), None)
                    .await?;
            }
            self.run_ok(format!("cat -- {} > {}", quote(&staging), quote(path)))
                .await
                .map(|_| ())
        }
        .await;
        let _ = self
            .conn
            .run(&as_login(format!("rm -f -- {}", quote(&staging))), None)
            .await;
        result
    }

    /// A controller path, relative to the playbook's directory unless absolute.
    pub fn local_path(&self, p: &str) -> PathBuf {
        let path = PathBuf::from(p);
        if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        }
    }
}

/// Content to upload to a host.
#[derive(Debug, Clone, Copy)]
pub enum Upload<'a> {
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A controller file, streamed.
    File(&'a std::path::Path),
}

/// What a module did (or in a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Something changed (or would change, in a dry run).
    pub changed: bool,
    /// The command's exit status, for command-like modules.
    pub rc: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// A one-line message for the console.
    pub msg: Option<String>,
    /// Module-specific result data (`register`'s `data`).
    pub data: Json,
    /// Captured pre-state for automatic rollback; `None`: nothing to undo.
    pub undo: Option<Json>,
    /// A unified diff of what changed (with `--diff`).
    pub diff: Option<String>,
    /// Variables to set on the host (`set_fact`).
    pub facts: IndexMap<String, Json>,
}

impl Outcome {
    /// Nothing changed.
    pub fn ok() -> Self {
        Outcome::default()
    }

    /// Something changed.
    pub fn changed() -> Self {
        Outcome {
            changed: true,
            ..Outcome::default()
        }
    }

    /// With result data.
    pub fn with_data(mut self, data: Json) -> Self {
        self.data = data;
        self
    }

    /// With pre-state for automatic rollback.
    pub fn with_undo(mut self, undo: Json) -> Self {
        self.undo = Some(undo);
        self
    }

    /// With a message.
    pub fn with_msg(mut self, msg: impl Into<String>) -> Self {
        self.msg = Some(msg.into());
        self
    }
}

/// Why a module failed.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The host could not be reached or the channel broke.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The step's timeout ended the command.
    #[error("timed out after {}", humantime::format_duration(*after))]
    TimedOut {
        /// The timeout.
        after: Duration,
        /// What it had printed by then.
        output: CommandOutput,
    },
    /// The module ran and failed.
    #[error("{message}")]
    Failed {
        /// Why.
        message: String,
        /// The command's output, when a command failed.
        output: Option<CommandOutput>,
    },
    /// An argument is wrong once rendered.
    #[error("argument error: {0}")]
    Args(String),
    /// In a dry run: what the step reads does not exist yet (an earlier step of the
    /// plan would make it, e.g. a repository its `init` creates), so what it would do
    /// cannot be known. The plan reports the node `unknown` with this reason; it never
    /// fails the plan. Outside a dry run it is a failure.
    #[error("cannot be known before the run: {0}")]
    Unknown(String),
}

impl ModuleError {
    /// A plain failure.
    pub fn failed(message: impl Into<String>) -> Self {
        ModuleError::Failed {
            message: message.into(),
            output: None,
        }
    }
}

/// A module.
#[async_trait]
pub trait Module: Send + Sync {
    /// Its self-description.
    fn doc(&self) -> &'static ModuleDoc;

    /// Checks beyond argument types, at load time (mutually exclusive arguments...).
    fn validate(&self, _args: &Node, _file: &SourceFile) -> Vec<SourceError> {
        Vec::new()
    }

    /// Whether the step never changes anything (so it runs in a dry run too).
    fn read_only(&self) -> bool {
        false
    }

    /// Whether the module records on the host that it started, before it changes
    /// anything there (the exactly-once markers of `command` and `shell`): a resumed
    /// run can then learn from the host whether it started, and the run does not wait
    /// for the controller's disk before it starts (see the executor's `start_on_disk`).
    fn marks_its_start(&self) -> bool {
        false
    }

    /// String arguments rendered with shell quoting of interpolated values.
    fn shell_args(&self) -> &'static [&'static str] {
        &[]
    }

    /// Arguments left unrendered: expressions the module evaluates itself.
    fn raw_args(&self) -> &'static [&'static str] {
        &[]
    }

    /// Runs (or with `ctx.check`, predicts) the step with rendered arguments.
    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError>;

    /// Undoes what `run` did, from the state it captured.
    async fn undo(
        &self,
        _ctx: &ModuleContext,
        _args: &Json,
        _undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        Ok(Outcome::ok().with_msg("nothing to undo"))
    }
}

/// Every module, by name.
pub fn registry() -> &'static IndexMap<&'static str, Arc<dyn Module>> {
    static REGISTRY: std::sync::OnceLock<IndexMap<&'static str, Arc<dyn Module>>> =
        std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| {
        let all: Vec<Arc<dyn Module>> = vec![
            Arc::new(command::Command),
            Arc::new(shell::Shell),
            Arc::new(copy::Copy),
            Arc::new(template::Template),
            Arc::new(file::File),
            Arc::new(fetch::Fetch),
            Arc::new(wait_for::WaitFor),
            Arc::new(assert::Assert),
            Arc::new(set_fact::SetFact),
            Arc::new(debug::Debug),
            Arc::new(service::Service),
            Arc::new(mysql_dump::MysqlDump),
            Arc::new(mysql_restore::MysqlRestore),
            Arc::new(mysql_query::MysqlQuery),
            Arc::new(mysql_checksum::MysqlChecksum),
            Arc::new(mariadb_backup::MariadbBackup),
            Arc::new(galera_rejoin::GaleraRejoin),
            Arc::new(rsync::Rsync),
            Arc::new(archive::Archive),
            Arc::new(unarchive::Unarchive),
            Arc::new(manifest::Manifest),
            Arc::new(verify_manifest::VerifyManifest),
            Arc::new(move_aside::MoveAside),
            Arc::new(prune::Prune),
            Arc::new(restic::Restic),
        ];
        all.into_iter().map(|m| (m.doc().name, m)).collect()
    })
}

/// A group of modules, named `group/NAME` in `module_defaults:`: a default given to the
/// group applies to each member for the arguments that member takes.
#[derive(Debug, Clone, Copy)]
pub struct ModuleGroup {
    /// The group's name, without `group/`.
    pub name: &'static str,
    /// What its members share.
    pub doc: &'static str,
    /// Its modules, by name.
    pub members: &'static [&'static str],
}

/// How `module_defaults:` names a group: `group/mysql`.
pub const GROUP_PREFIX: &str = "group/";

/// Every module group, declared once.
pub const GROUPS: &[ModuleGroup] = &[ModuleGroup {
    name: "mysql",
    doc: "the MariaDB/MySQL modules, which all take the login arguments (login_host, \
          login_port, login_socket, login_user, login_password, defaults_file)",
    members: &[
        "mysql_dump",
        "mysql_restore",
        "mysql_query",
        "mysql_checksum",
        "mariadb_backup",
        "galera_rejoin",
    ],
}];

/// The group named `name` (without `group/`).
pub fn group(name: &str) -> Option<&'static ModuleGroup> {
    GROUPS.iter().find(|g| g.name == name)
}

/// The groups a module belongs to, in declaration order.
pub fn groups_of(module: &str) -> impl Iterator<Item = &'static ModuleGroup> + '_ {
    GROUPS.iter().filter(move |g| g.members.contains(&module))
}

/// The module of this name.
pub fn lookup(name: &str) -> Option<Arc<dyn Module>> {
    registry().get(name).cloned()
}

/// Turns a step's module value into an argument mapping: a scalar or list fills the
/// module's free-form argument.
pub fn normalize_args(doc: &ModuleDoc, value: &Node) -> Node {
    match (&value.value, doc.free_form) {
        (Value::Map(_), _) | (Value::Null, _) => value.clone(),
        (_, Some(free)) => Node {
            value: Value::Map(vec![(
                Node {
                    value: Value::Str(free.to_string()),
                    line: value.line,
                    column: value.column,
                },
                value.clone(),
            )]),
            line: value.line,
            column: value.column,
        },
        _ => value.clone(),
    }
}

/// Checks a step's arguments against the module's spec: known keys (with a
/// suggestion), required keys, and types; then the module's own checks.
pub fn validate_args(
    module: &dyn Module,
    key: &Node,
    value: &Node,
    file: &SourceFile,
) -> Vec<SourceError> {
    let doc = module.doc();
    let args = normalize_args(doc, value);
    let mut errors = Vec::new();
    let entries: &[(Node, Node)] = match &args.value {
        Value::Map(m) => m,
        Value::Null => &[],
        _ => {
            errors.push(
                value
                    .error(
                        file,
                        format!(
                            "`{}` takes a mapping of arguments, found {}",
                            doc.name,
                            value.kind()
                        ),
                    )
                    .with_help(format!("see `lifeboat modules {}`", doc.name)),
            );
            return errors;
        }
    };
    for (k, v) in entries {
        let name = k.scalar_text().unwrap_or_default();
        match doc.args.iter().find(|a| a.name == name) {
            None if doc.open_args => {}
            None => {
                let mut e = k.error(
                    file,
                    format!("unknown argument `{name}` for module `{}`", doc.name),
                );
                e = match did_you_mean(&name, doc.args.iter().map(|a| a.name)) {
                    Some(s) => e.with_help(format!("did you mean `{s}`?")),
                    None => e.with_help(format!(
                        "`{}` takes: {}",
                        doc.name,
                        doc.args
                            .iter()
                            .map(|a| a.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                errors.push(e);
            }
            Some(spec) => errors.extend(check_arg_type(doc.name, spec, v, file)),
        }
    }
    for spec in doc.args.iter().filter(|a| a.required) {
        if !entries.iter().any(|(k, _)| k.as_str() == Some(spec.name)) {
            errors.push(
                key.error(
                    file,
                    format!("module `{}` needs the argument `{}`", doc.name, spec.name),
                )
                .with_help(format!("{}: {}", spec.name, spec.doc)),
            );
        }
    }
    if errors.is_empty() {
        errors.extend(module.validate(&args, file));
    }
    errors
}

/// Checks one argument's value against its type (a template passes: it is checked once
/// rendered); `None` when it fits. `owner` names the module (or group) in the message.
pub fn check_arg_type(
    owner: &str,
    spec: &ArgSpec,
    v: &Node,
    file: &SourceFile,
) -> Option<SourceError> {
    if spec.kind.accepts(v) {
        return None;
    }
    let e = v.error(
        file,
        format!(
            "argument `{}` of `{owner}` must be a {}, found {}",
            spec.name,
            spec.kind.describe(),
            v.kind()
        ),
    );
    Some(if spec.kind == ArgKind::Mode {
        e.with_help("quote modes so YAML keeps them as written, e.g. mode: \"0644\"")
    } else {
        e
    })
}

/// Reads rendered arguments into a module's typed struct.
pub fn parse_args<T: DeserializeOwned>(module: &str, args: &Json) -> Result<T, ModuleError> {
    serde_json::from_value(args.clone()).map_err(|e| ModuleError::Args(format!("{module}: {e}")))
}

/// Parses `30s`, `5m`, `1h 30m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a duration"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 30s, 5m, 1h"))
}

/// A duration argument, as a number of seconds or a string.
pub fn duration_arg(v: &Json) -> Result<Duration, ModuleError> {
    match v {
        Json::Number(n) => n
            .as_f64()
            .and_then(|f| Duration::try_from_secs_f64(f).ok())
            .ok_or_else(|| ModuleError::Args(format!("`{n}` is not a duration"))),
        Json::String(s) => parse_duration(s).map_err(ModuleError::Args),
        other => Err(ModuleError::Args(format!("`{other}` is not a duration"))),
    }
}

/// Parses an octal mode string such as `"0644"` or `"755"`.
pub fn parse_mode(s: &str) -> Result<u32, ModuleError> {
    u32::from_str_radix(s.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            ModuleError::Args(format!("mode `{s}` is not an octal mode such as \"0644\""))
        })
}

/// A unified diff between two texts, labelled with the path.
pub fn unified_diff(path: &str, before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .header(&format!("{path} (before)"), &format!("{path} (after)"))
        .to_string()
}
