//! `assert`: checks expressions and fails the step when one is false. Runs in dry runs.

use async_trait::async_trait;
use serde_json::Value as Json;

use super::{ArgKind, Module, ModuleContext, ModuleDoc, ModuleError, Outcome, arg};
use crate::error::{SourceError, SourceFile};
use crate::template::Templates;
use crate::yaml::Node;

/// The `assert` module.
pub struct Assert;

static DOC: ModuleDoc = ModuleDoc {
    name: "assert",
    summary: "Fail unless every expression is true",
    description: "Each entry of `that` is an expression without braces, like `when`. The first false \
one fails the step with `fail_msg` (or the expression). Never changes anything.",
    free_form: Some("that"),
    args: &[
        arg(
            "that",
            ArgKind::StrOrList,
            true,
            "an expression or a list of them",
        ),
        arg(
            "fail_msg",
            ArgKind::Str,
            false,
            "the message when one is false",
        ),
        arg(
            "success_msg",
            ArgKind::Str,
            false,
            "the message when all are true",
        ),
    ],
    open_args: false,
    example: "- id: check-dump\n  needs: [dump]\n  assert:\n    that:\n      - dump.rc == 0\n      - dump.data.size > 0\n    fail_msg: the dump is empty\n",
    returns: &[("evaluated", "the expressions checked")],
    rollback: "nothing to undo",
};

fn expressions(args: &Json) -> Vec<String> {
    match args.get("that") {
        Some(Json::String(s)) => vec![s.clone()],
        Some(Json::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[async_trait]
impl Module for Assert {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }
    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        let templates = Templates::new();
        let Some(that) = args.get("that") else {
            return Vec::new();
        };
        let items: Vec<&Node> = match that.as_seq() {
            Some(seq) => seq.iter().collect(),
            None => vec![that],
        };
        items
            .into_iter()
            .filter_map(|n| {
                let s = n.as_str()?;
                templates
                    .check_expression(s)
                    .err()
                    .map(|e| n.error(file, format!("invalid expression: {e}")))
            })
            .collect()
    }
    fn read_only(&self) -> bool {
        true
    }
    fn raw_args(&self) -> &'static [&'static str] {
        &["that"]
    }
    async fn run(&self, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let exprs = expressions(args);
        for expr in &exprs {
            let ok = ctx
                .templates
                .eval_bool(expr, &ctx.vars)
                .map_err(|e| ModuleError::failed(format!("assert `{expr}`: {e}")))?;
            if !ok {
                let msg = args.get("fail_msg").and_then(Json::as_str).map_or_else(
                    || format!("assertion failed: {expr}"),
                    |m| format!("{m} (false: {expr})"),
                );
                return Err(ModuleError::failed(msg));
            }
        }
        let msg = args
            .get("success_msg")
            .and_then(Json::as_str)
            .map_or_else(|| "all assertions passed".to_string(), str::to_string);
        Ok(Outcome::ok()
            .with_msg(msg)
            .with_data(serde_json::json!({ "evaluated": exprs })))
    }
}
