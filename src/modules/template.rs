//! `template`: renders a minijinja file from the controller with the host's variables and
//! places the result on the host exactly like `copy` with `content` does (atomic,
//! idempotent, undoable: the shared logic is [`super::copy::place`]).

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value as Json;

use super::copy::{
    Content, GROUP_ARG, MODE_ARG, OWNER_ARG, Placement, mode_arg, place, undo_place, validate_mode,
    word,
};
use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg, parse_args};
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `template` module.
pub struct Template;

static DOC: ModuleDoc = ModuleDoc {
    name: "template",
    summary: "Render a template file from the controller and write the result on the host",
    description: "Reads `src` (a minijinja template on the controller, relative to the playbook), \
renders it with the host's variables (an undefined variable is an error naming it, never an empty \
string) and writes the text to `dest` exactly as `copy` does with `content`: through a temporary \
name and a rename, changed only when the sha256 or a given mode/owner/group differs. The template \
is rendered in a dry run too (so rendering errors show up early); nothing is written, the step \
reports whether it would change and with --diff shows the unified diff.",
    free_form: None,
    args: &[
        arg(
            "src",
            ArgKind::Str,
            true,
            "template file on the controller (relative to the playbook)",
        ),
        arg("dest", ArgKind::Str, true, "host path to write"),
        MODE_ARG,
        OWNER_ARG,
        GROUP_ARG,
    ],
    open_args: false,
    example: "- id: backup-conf\n  template:\n    src: templates/backup.conf.j2\n    dest: /etc/lifeboat/backup.conf\n    mode: \"0600\"\n",
    returns: &[
        ("dest", "the host path written"),
        ("sha256", "sha256 of the rendered text"),
        ("size", "size of the rendered text in bytes"),
        (
            "mode",
            "the file's resulting mode, e.g. \"0600\" (null when unknown in a dry run)",
        ),
        (
            "changed_attributes",
            "what differed: any of content, mode, owner, group",
        ),
    ],
    rollback: "as `copy`: restores the previous content, mode, owner and group atomically, or removes \
the file when it did not exist before.",
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateArgs {
    src: String,
    dest: String,
    mode: Option<String>,
    #[serde(default, deserialize_with = "word")]
    owner: Option<String>,
    #[serde(default, deserialize_with = "word")]
    group: Option<String>,
}

#[async_trait]
impl Module for Template {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }

    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        validate_mode(args, file)
    }

    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let a: TemplateArgs = parse_args("template", args)?;
        let mode = mode_arg(a.mode.as_deref())?;
        let path = ctx.local_path(&a.src);
        let source = tokio::fs::read_to_string(&path).await.map_err(|e| {
            ModuleError::failed(format!("template: cannot read {}: {e}", path.display()))
        })?;
        let text = ctx
            .templates
            .render_str(&source, &ctx.vars, false)
            .map_err(|e| ModuleError::failed(format!("template {}: {e}", path.display())))?;
        place(
            ctx,
            Placement {
                dest: a.dest,
                into_name: None,
                content: Content::Bytes(text.into_bytes()),
                mode,
                owner: a.owner,
                group: a.group,
            },
        )
        .await
    }

    async fn undo(
        &self,
        ctx: &ModuleContext,
        _args: &Json,
        undo: &Json,
    ) -> Result<Outcome, ModuleError> {
        undo_place(ctx, undo).await
    }
}
