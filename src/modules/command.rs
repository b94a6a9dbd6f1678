//! `command`: runs a program without a shell. The command line is split into words
//! after rendering, so interpolated values stay single words (they are shell-quoted);
//! `creates` / `removes` make it idempotent. Also home of the argument handling and the
//! run that `shell` shares: in a real run the command goes through the completion
//! marker wrapper ([`crate::marker`]), and a resumed run first adopts what an earlier
//! run's command completed.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value as Json;

use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args};
use crate::connection::{CommandSpec, Program};
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `command` module.
pub struct Command;

static DOC: ModuleDoc = ModuleDoc {
    name: "command",
    summary: "Run a program on the host without a shell",
    description: "The command is a string (split into words like a shell would, after templates are \
rendered; interpolated values are quoted so each stays one word) or a list of words. No pipes, \
redirections or variables: use `shell` for those. Fails when the exit status is not 0. Changed \
unless `creates` exists or `removes` does not. In a dry run it does not run (unless the step is \
`read_only: true`) and reports `would change`, or `ok` when creates/removes say it would be skipped. \
In a real run it records its completion on the host, so `lifeboat resume` after the controller was \
killed adopts its result instead of running it twice (docs/playbooks.md, Exactly-once steps); its \
output reaches the controller when it ends.",
    free_form: Some("cmd"),
    args: &[
        arg(
            "cmd",
            ArgKind::StrOrList,
            false,
            "the command: a string or a list of words (or give `argv`)",
        ),
        arg(
            "argv",
            ArgKind::List,
            false,
            "the command as a list of words",
        ),
        arg(
            "creates",
            ArgKind::Str,
            false,
            "a host path; when it exists the command is not run",
        ),
        arg(
            "removes",
            ArgKind::Str,
            false,
            "a host path; when it does not exist the command is not run",
        ),
        arg("chdir", ArgKind::Str, false, "directory to run in"),
        arg(
            "stdin",
            ArgKind::Str,
            false,
            "text written to the command's standard input",
        ),
        arg(
            "env",
            ArgKind::Map,
            false,
            "environment variables for the command",
        ),
    ],
    open_args: false,
    example: "- id: list-backups\n  command: ls -l {{ backup_dir }}\n  register: listing\n  read_only: true\n",
    returns: &[],
    rollback: "none of its own: give the step a `rollback:` command",
};

/// Arguments shared by `command` and `shell`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandArgs {
    /// The command.
    pub cmd: Option<Json>,
    /// As a list.
    pub argv: Option<Vec<String>>,
    /// Skip when this exists.
    pub creates: Option<String>,
    /// Skip unless this exists.
    pub removes: Option<String>,
    /// Working directory.
    pub chdir: Option<String>,
    /// Standard input.
    pub stdin: Option<String>,
    /// Environment.
    #[serde(default)]
    pub env: indexmap::IndexMap<String, Json>,
}

/// Validation shared by `command` and `shell`: a command must be given once.
pub fn validate_command(args: &Node, file: &SourceFile, allow_argv: bool) -> Vec<SourceError> {
    let has_cmd = args.get("cmd").is_some();
    let has_argv = allow_argv && args.get("argv").is_some();
    let mut errors = match (has_cmd, has_argv) {
        (false, false) => vec![
            args.error(file, "no command given")
                .with_help("write the command after the module name, or give `cmd:`"),
        ],
        (true, true) => vec![
            args.error(file, "both `cmd` and `argv` given")
                .with_help("give the command once"),
        ],
        _ => Vec::new(),
    };
    for (k, _) in args.get("env").and_then(Node::as_map).unwrap_or(&[]) {
        let name = k.scalar_text().unwrap_or_default();
        if !crate::connection::is_env_name(&name) {
            errors.push(
                k.error(
                    file,
                    format!("`{name}` is not a valid environment variable name"),
                )
                .with_help("use letters, digits and _, not starting with a digit"),
            );
        }
    }
    errors
}

/// Runs a command-like module: creates/removes, the dry run, the command, its result.
pub async fn run_command(
    ctx: &ModuleContext,
    name: &str,
    args: &Json,
    shell: bool,
) -> Result<Outcome, ModuleError> {
    let a: CommandArgs = parse_args(name, args)?;
    let program = match (&a.cmd, &a.argv) {
        (Some(Json::String(s)), _) if shell => Program::Shell(s.clone()),
        (Some(Json::String(s)), _) => Program::Argv(shlex::split(s).ok_or_else(|| {
            ModuleError::Args(format!(
                "{name}: cannot split `{s}` into words (unbalanced quotes?)"
            ))
        })?),
        (Some(Json::Array(items)), _) => Program::Argv(items.iter().map(json_word).collect()),
        (None, Some(argv)) => Program::Argv(argv.clone()),
        (Some(other), _) => {
            return Err(ModuleError::Args(format!(
                "{name}: `cmd` must be a string or a list, found {other}"
            )));
        }
        (None, None) => return Err(ModuleError::Args(format!("{name}: no command given"))),
    };
    if matches!(&program, Program::Argv(v) if v.is_empty()) {
        return Err(ModuleError::Args(format!("{name}: the command is empty")));
    }
    let display = CommandSpec::new(program.clone()).display();
    // In a real run the executor gives the command a completion marker; a run resumed
    // after the controller was killed first looks whether the command completed then.
    let marker = crate::marker::current().filter(|_| !ctx.check);
    if let Some(m) = marker.as_ref().filter(|m| !m.adopt_from.is_empty())
        && let Some((out, run)) = crate::marker::adopt(ctx, m).await?
    {
        return command_result(
            out,
            &display,
            Some(format!(
                "not run again: it completed under run {run}, whose controller was stopped; its result is adopted"
            )),
        );
    }
    if let Some(path) = &a.creates
        && ctx.stat(path).await?.is_some()
    {
        return Ok(Outcome::ok().with_msg(format!("skipped: {path} exists")));
    }
    if let Some(path) = &a.removes
        && ctx.stat(path).await?.is_none()
    {
        return Ok(Outcome::ok().with_msg(format!("skipped: {path} does not exist")));
    }
    let mut spec = CommandSpec::new(program);
    if ctx.check {
        return Ok(Outcome::changed().with_msg(format!("would run: {}", spec.display())));
    }
    spec.cwd = a.chdir.clone();
    spec.stdin = a.stdin.map(String::into_bytes);
    if let Some(bad) = a.env.keys().find(|k| !crate::connection::is_env_name(k)) {
        return Err(ModuleError::Args(format!(
            "{name}: `{bad}` is not a valid environment variable name (letters, digits and _)"
        )));
    }
    spec.env = a
        .env
        .iter()
        .map(|(k, v)| (k.clone(), json_word(v)))
        .collect();
    let out = match &marker {
        Some(m) => crate::marker::run(ctx, m, &spec).await?,
        None => ctx.run(spec.clone()).await?,
    };
    command_result(out, &display, None)
}

/// A command's outcome: changed when it exited 0, else a failure with its output.
fn command_result(
    out: crate::connection::CommandOutput,
    display: &str,
    msg: Option<String>,
) -> Result<Outcome, ModuleError> {
    let outcome = Outcome {
        changed: true,
        rc: out.rc,
        stdout: out.stdout_text(),
        stderr: out.stderr_text(),
        msg: msg.clone(),
        ..Outcome::default()
    };
    match out.rc {
        Some(0) => Ok(outcome),
        rc => Err(ModuleError::Failed {
            message: match rc {
                Some(code) => format!("`{display}` exited with status {code}"),
                None => format!("`{display}` ended without an exit status (killed?)"),
            } + &msg.map(|m| format!(" ({m})")).unwrap_or_default(),
            output: Some(out),
        }),
    }
}

/// A JSON value as one command word.
fn json_word(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[async_trait]
impl Module for Command {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }
    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        validate_command(args, file, true)
    }
    fn shell_args(&self) -> &'static [&'static str] {
        &["cmd"]
    }
    fn marks_its_start(&self) -> bool {
        true
    }
    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        run_command(ctx, "command", args, false).await
    }
}
