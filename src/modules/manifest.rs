//! `manifest`: not written yet (issue 4); registered so its name is reserved.

use async_trait::async_trait;
use serde_json::Value as Json;

use super::{Module, ModuleContext, ModuleDoc, ModuleError, Outcome};

/// The `manifest` module.
pub struct Manifest;

static DOC: ModuleDoc = ModuleDoc {
    name: "manifest",
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
impl Module for Manifest {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }
    async fn run(&self, _ctx: &ModuleContext, _args: &Json) -> Result<Outcome, ModuleError> {
        Err(ModuleError::failed(
            "the manifest module is not implemented yet",
        ))
    }
}
