//! `debug`: prints a message or a variable's value. Changes nothing; runs in dry runs.

use async_trait::async_trait;
use serde_json::Value as Json;

use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg};
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `debug` module.
pub struct Debug;

static DOC: ModuleDoc = ModuleDoc {
    name: "debug",
    summary: "Print a message or a variable",
    description: "Shows `msg` (a template) or the value of the expression `var` in the console and \
in the events. Never changes anything, so it also runs in a dry run.",
    free_form: Some("msg"),
    args: &[
        arg(
            "msg",
            ArgKind::Any,
            false,
            "the message (templates allowed)",
        ),
        arg(
            "var",
            ArgKind::Str,
            false,
            "an expression whose value is shown, e.g. dump.data.sha256",
        ),
    ],
    open_args: false,
    example: "- id: show\n  debug: \"backup written to {{ dest }}\"\n",
    returns: &[
        ("msg", "the message shown"),
        ("value", "the value of `var`"),
    ],
    rollback: "nothing to undo",
};

#[async_trait]
impl Module for Debug {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }
    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        if args.get("msg").is_some() == args.get("var").is_some() {
            return vec![args.error(file, "`debug` takes exactly one of `msg` and `var`")];
        }
        Vec::new()
    }
    fn read_only(&self) -> bool {
        true
    }
    fn raw_args(&self) -> &'static [&'static str] {
        &["var"]
    }
    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        if let Some(expr) = args.get("var").and_then(Json::as_str) {
            let value = ctx
                .templates
                .eval(expr, &ctx.vars)
                .map_err(|e| ModuleError::failed(format!("debug var `{expr}`: {e}")))?;
            let json = serde_json::to_value(&value).unwrap_or(Json::Null);
            return Ok(Outcome::ok()
                .with_msg(format!("{expr} = {json}"))
                .with_data(serde_json::json!({ "value": json })));
        }
        let msg = match args.get("msg") {
            Some(Json::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        Ok(Outcome::ok()
            .with_msg(msg.clone())
            .with_data(serde_json::json!({ "msg": msg })))
    }
}
