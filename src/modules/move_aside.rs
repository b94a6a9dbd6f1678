//! `move_aside`: not written yet (issue 4); registered so its name is reserved.

use async_trait::async_trait;
use serde_json::Value as Json;

use super::{Module, ModuleContext, ModuleDoc, ModuleError, Outcome};

/// The `move_aside` module.
pub struct MoveAside;

static DOC: ModuleDoc = ModuleDoc {
    name: "move_aside",
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
impl Module for MoveAside {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }
    async fn run(&self, _ctx: &ModuleContext, _args: &Json) -> Result<Outcome, ModuleError> {
        Err(ModuleError::failed(
            "the move_aside module is not implemented yet",
        ))
    }
}
