//! `shell`: runs a script with the host's shell (bash with `pipefail` when present,
//! else /bin/sh). Interpolated values are shell-quoted unless marked `| safe`.

use async_trait::async_trait;
use serde_json::Value as Json;

use super::command::{run_command, validate_command};
use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg};
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `shell` module.
pub struct Shell;

static DOC: ModuleDoc = ModuleDoc {
    name: "shell",
    summary: "Run a shell script on the host (pipefail on)",
    description: "Runs the script with bash -o pipefail when the host has bash, else /bin/sh, so a \
failure anywhere in a pipe fails the step. Values interpolated with {{ }} are shell-quoted: they \
arrive as data, never as code; write `{{ x | safe }}` to splice shell syntax on purpose. Fails when \
the exit status is not 0. In a dry run it does not run (unless the step is `read_only: true`). In \
a real run it records its completion on the host, so `lifeboat resume` after the controller was \
killed adopts its result instead of running it twice (docs/playbooks.md, Exactly-once steps); its \
output reaches the controller when it ends.",
    free_form: Some("cmd"),
    args: &[
        arg("cmd", ArgKind::Str, true, "the script"),
        arg(
            "creates",
            ArgKind::Str,
            false,
            "a host path; when it exists the script is not run",
        ),
        arg(
            "removes",
            ArgKind::Str,
            false,
            "a host path; when it does not exist the script is not run",
        ),
        arg("chdir", ArgKind::Str, false, "directory to run in"),
        arg(
            "stdin",
            ArgKind::Str,
            false,
            "text written to the script's standard input",
        ),
        arg(
            "env",
            ArgKind::Map,
            false,
            "environment variables for the script",
        ),
    ],
    open_args: false,
    example: "- id: dump\n  shell: mariadb-dump --all-databases | gzip > {{ dest }}\n  rollback:\n    shell: rm -f {{ dest }}\n",
    returns: &[],
    rollback: "none of its own: give the step a `rollback:` command",
};

#[async_trait]
impl Module for Shell {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }
    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        validate_command(args, file, false)
    }
    fn shell_args(&self) -> &'static [&'static str] {
        &["cmd"]
    }
    fn marks_its_start(&self) -> bool {
        true
    }
    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        run_command(ctx, "shell", args, true).await
    }
}
