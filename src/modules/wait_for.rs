//! `wait_for`: placeholder until implemented.

use async_trait::async_trait;
use serde_json::Value as Json;

use super::{Module, ModuleContext, ModuleDoc, ModuleError, Outcome};

/// The `wait_for` module.
pub struct WaitFor;

static DOC: ModuleDoc = ModuleDoc {
    name: "wait_for",
    summary: "",
    description: "",
    free_form: None,
    args: &[],
    open_args: true,
    example: "",
    returns: &[],
    rollback: "",
};

#[async_trait]
impl Module for WaitFor {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }
    async fn run(&self, _ctx: &ModuleContext, _args: &Json) -> Result<Outcome, ModuleError> {
        Err(ModuleError::failed("not implemented"))
    }
}
