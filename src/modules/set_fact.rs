//! `set_fact`: sets variables on the host for later steps (and for other hosts, through
//! `hostvars`). Changes nothing on the host; runs in dry runs.

use async_trait::async_trait;
use serde_json::Value as Json;

use super::{Module, ModuleContext, ModuleDoc, ModuleError, Outcome};
use crate::error::{SourceError, SourceFile};
use crate::yaml::Node;

/// The `set_fact` module.
pub struct SetFact;

static DOC: ModuleDoc = ModuleDoc {
    name: "set_fact",
    summary: "Set variables on the host for later steps",
    description: "Every key becomes a variable of the host, rendered now, visible to steps that \
run later (order them with `needs`) and to other hosts as hostvars[host].key. Facts rank with \
registered results in the variable precedence. Runs in dry runs too.",
    free_form: None,
    args: &[],
    open_args: true,
    example: "- id: stamp\n  set_fact:\n    stamp: \"{{ now() }}\"\n    target: \"/srv/backup/{{ inventory_hostname }}\"\n",
    returns: &[("<key>", "each variable set, with its value")],
    rollback: "nothing to undo",
};

#[async_trait]
impl Module for SetFact {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }
    fn validate(&self, args: &Node, file: &SourceFile) -> Vec<SourceError> {
        match args.as_map() {
            Some(m) if !m.is_empty() => Vec::new(),
            _ => vec![args.error(
                file,
                "`set_fact` takes a mapping of variable names to values",
            )],
        }
    }
    fn read_only(&self) -> bool {
        true
    }
    async fn run(&self, _ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
        let map = args.as_object().cloned().unwrap_or_default();
        let mut outcome = Outcome::ok().with_data(Json::Object(map.clone()));
        outcome.facts = map.into_iter().collect();
        Ok(outcome)
    }
}
