//! `archive`: not written yet (issue 4); registered so its name is reserved.

use async_trait::async_trait;
use serde_json::Value as Json;

use super::{Module, ModuleContext, ModuleDoc, ModuleError, Outcome};

/// The `archive` module.
pub struct Archive;

static DOC: ModuleDoc = ModuleDoc {
    name: "archive",
    summary: "(not implemented yet)",
    description: "",
    free_form: None,
    args: &[],
    open_args: true,
    example: "",
    returns: &[],
    rollback: "",
};

#[async_trait]
impl Module for Archive {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }
    async fn run(&self, _ctx: &ModuleContext, _args: &Json) -> Result<Outcome, ModuleError> {
        Err(ModuleError::failed(
            "the archive module is not implemented yet",
        ))
    }
}
