//! Self-description generated from the same tables the loader checks against: the JSON
//! Schema of the playbook format (`lifeboat schema`, for editors such as
//! yaml-language-server) and each module's help page (`lifeboat modules NAME`).

use serde_json::{Map, Value as Json, json};

use crate::modules::{ArgKind, ModuleDoc, registry};

fn kind_schema(kind: ArgKind) -> Json {
    match kind {
        ArgKind::Str => json!({"type": ["string", "number"]}),
        ArgKind::StrOrList => {
            json!({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})
        }
        ArgKind::Int => {
            json!({"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "\\{\\{"}]})
        }
        ArgKind::Bool => {
            json!({"anyOf": [{"type": "boolean"}, {"type": "string", "pattern": "\\{\\{"}]})
        }
        ArgKind::List => {
            json!({"anyOf": [{"type": "array"}, {"type": "string", "pattern": "\\{\\{"}]})
        }
        ArgKind::Map => {
            json!({"anyOf": [{"type": "object"}, {"type": "string", "pattern": "\\{\\{"}]})
        }
        ArgKind::Duration => json!({"type": ["string", "number"]}),
        ArgKind::Mode => json!({"type": "string"}),
        ArgKind::Any => json!({}),
    }
}

fn module_schema(doc: &ModuleDoc) -> Json {
    let mut props = Map::new();
    for a in doc.args {
        let mut s = kind_schema(a.kind);
        if let Json::Object(m) = &mut s {
            m.insert("description".into(), Json::String(a.doc.to_string()));
        }
        props.insert(a.name.to_string(), s);
    }
    let required: Vec<&str> = doc
        .args
        .iter()
        .filter(|a| a.required)
        .map(|a| a.name)
        .collect();
    let mapping = json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": doc.open_args,
    });
    match doc.free_form {
        Some(free) => {
            let free_kind = doc
                .args
                .iter()
                .find(|a| a.name == free)
                .map_or(ArgKind::Any, |a| a.kind);
            json!({"description": doc.summary, "anyOf": [kind_schema(free_kind), mapping]})
        }
        None => json!({"description": doc.summary, "allOf": [mapping]}),
    }
}

/// The JSON Schema of a playbook file.
pub fn playbook_schema() -> Json {
    let duration =
        json!({"type": ["string", "number"], "description": "a duration: 30s, 5m, 1h30m"});
    let string_list =
        json!({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]});
    let mut module_props = Map::new();
    for (name, m) in registry() {
        module_props.insert((*name).to_string(), module_schema(m.doc()));
    }
    let action = json!({
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": module_props.clone(),
        "additionalProperties": false,
    });
    let mut step_props: Map<String, Json> = Map::new();
    let common = [
        (
            "id",
            json!({"type": "string", "description": "unique id; what `needs` refers to"}),
        ),
        ("name", json!({"type": "string"})),
        (
            "hosts",
            json!({"type": "string", "description": "host pattern"}),
        ),
        ("needs", string_list.clone()),
        (
            "when",
            json!({"type": ["string", "boolean"], "description": "expression without braces"}),
        ),
        ("loop", json!({"type": ["array", "string"]})),
        ("register", json!({"type": "string"})),
        ("become", json!({"type": "boolean"})),
        ("become_user", json!({"type": "string"})),
        ("become_method", json!({"enum": ["sudo", "su"]})),
        ("timeout", duration.clone()),
        ("retries", json!({"type": "integer", "minimum": 0})),
        ("retry_delay", duration.clone()),
        ("ignore_errors", json!({"type": "boolean"})),
        ("read_only", json!({"type": "boolean"})),
        ("run_once", json!({"type": "boolean"})),
        ("delegate_to", json!({"type": "string"})),
        ("tags", string_list.clone()),
        ("no_log", json!({"type": "boolean"})),
        ("vars", json!({"type": "object"})),
        ("phase", json!({"type": "string"})),
        (
            "rollback",
            json!({"anyOf": [{"enum": ["auto", "none"]}, action.clone(), {"type": "array", "items": action}]}),
        ),
    ];
    for (k, v) in common {
        step_props.insert(k.into(), v);
    }
    step_props.extend(module_props);
    let import = json!({
        "type": "object",
        "required": ["import"],
        "properties": {
            "import": {"type": "string", "description": "a playbook file whose steps are brought in, ids prefixed"},
            "id": {"type": "string"}, "vars": {"type": "object"}, "needs": string_list,
            "hosts": {"type": "string"}, "tags": string_list, "phase": {"type": "string"}
        },
        "additionalProperties": false,
    });
    let step = json!({"type": "object", "properties": step_props, "additionalProperties": false});
    let steps = json!({"type": "array", "items": {"anyOf": [import, step]}});
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "lifeboat playbook",
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "hosts": {"type": "string", "description": "default host pattern of the steps"},
            "vars": {"type": "object"},
            "vars_files": string_list,
            "secrets": {"type": "object", "additionalProperties": {
                "type": "object", "minProperties": 1, "maxProperties": 1,
                "properties": {"env": {"type": "string"}, "file": {"type": "string"}, "command": {"type": "string"}, "value": {"type": "string"}}
            }},
            "defaults": {"type": "object"},
            "steps": steps,
            "phases": {"type": "object", "additionalProperties": steps},
            "rto_target": duration,
            "rpo_target": duration,
        },
        "additionalProperties": false,
    })
}

/// `lifeboat modules NAME`: what the module does, its arguments, an example, its result.
pub fn module_help(doc: &ModuleDoc) -> String {
    let mut out = format!(
        "{} - {}\n\n{}\n\nARGUMENTS\n",
        doc.name, doc.summary, doc.description
    );
    if doc.args.is_empty() {
        out.push_str(if doc.open_args {
            "  any key: a variable to set\n"
        } else {
            "  (none)\n"
        });
    }
    for a in doc.args {
        let req = if a.required { " (required)" } else { "" };
        let free = if doc.free_form == Some(a.name) {
            " [may be given as the module's value]"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {:<16} {}{req}{free}\n  {:<16} {}\n",
            a.name,
            a.kind.describe(),
            "",
            a.doc
        ));
    }
    out.push_str("\nEXAMPLE\n");
    for line in doc.example.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str("\nRESULT (register)\n  rc, stdout, stderr, changed, failed, msg, and data:\n");
    if doc.returns.is_empty() {
        out.push_str("    (no module-specific data)\n");
    }
    for (k, v) in doc.returns {
        out.push_str(&format!("    data.{k:<14} {v}\n"));
    }
    out.push_str(&format!("\nROLLBACK (auto)\n  {}\n", doc.rollback));
    out
}
