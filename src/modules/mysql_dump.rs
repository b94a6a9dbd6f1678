//! `mysql_dump`: not written yet (issue 4); registered so its name is reserved.

use async_trait::async_trait;
use serde_json::Value as Json;

use super::{Module, ModuleContext, ModuleDoc, ModuleError, Outcome};

/// The `mysql_dump` module.
pub struct MysqlDump;

static DOC: ModuleDoc = ModuleDoc {
    name: "mysql_dump",
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
impl Module for MysqlDump {
    fn doc(&self) -> &'static ModuleDoc {
        &DOC
    }
    async fn run(&self, _ctx: &ModuleContext, _args: &Json) -> Result<Outcome, ModuleError> {
        Err(ModuleError::failed(
            "the mysql_dump module is not implemented yet",
        ))
    }
}
