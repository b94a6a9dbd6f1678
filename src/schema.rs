//! Self-description generated from the same tables the loader checks against: the JSON
//! Schema of the playbook format (`lifeboat schema`, for editors such as
//! yaml-language-server) from the keys of [`crate::keys`] and the modules' argument
//! specs, and each module's help page (`lifeboat modules NAME`). The schema accepts what
//! `lifeboat validate` accepts and refuses what it refuses, as far as a JSON Schema can
//! say it: not template syntax, `needs` naming a step, host patterns, or a module's own
//! checks of how its arguments go together.

use serde_json::{Map, Value as Json, json};

use crate::keys::{self, Key, Place, SECRET_OPTIONAL, SECRET_SOURCES, Shape};
use crate::modules::{ArgKind, ArgSpec, GROUP_PREFIX, GROUPS, ModuleDoc, registry};

/// A string that is a template (`{{ }}` or `{% %}`): accepted for any module argument,
/// and as `loop:`, since only rendering tells its value.
const TEMPLATE: &str = r"\{\{|\{%";

/// A duration as the loader reads one (a number of seconds, or humantime's units).
const DURATION: &str = concat!(
    r"^\s*(?:\+?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?",
    r"|(?:[0-9]+(?:\.[0-9]+)?\s*(?:nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs",
    r"|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w",
    r"|months|month|M|years|year|yrs|yr|y)\s*)+)\s*$"
);

/// A scalar read as text: the loader takes a number or a boolean as its text.
fn text() -> Json {
    json!({"type": ["string", "number", "boolean"]})
}

fn template() -> Json {
    json!({"type": "string", "pattern": TEMPLATE})
}

fn definition(name: &str) -> Json {
    json!({"$ref": format!("#/definitions/{name}")})
}

/// What a value of this shape may be.
fn shape_schema(shape: Shape) -> Json {
    match shape {
        Shape::Text | Shape::Expression => text(),
        Shape::VarName => json!({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}),
        Shape::BecomeMethod => json!({"enum": ["sudo", "su"]}),
        Shape::LoopOrder => json!({"enum": crate::playbook::LOOP_ORDERS}),
        Shape::Severity => json!({"enum": ["error", "warning"]}),
        Shape::Bool => json!({"type": "boolean"}),
        Shape::Count => json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
        Shape::Percent => json!({"type": "integer", "minimum": 0, "maximum": 100}),
        Shape::Duration => json!({"anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": DURATION},
        ]}),
        Shape::Texts | Shape::Ids => json!({"anyOf": [
            {"type": "string"},
            {"type": "array", "items": text()},
        ]}),
        Shape::Loop => json!({"anyOf": [{"type": "array"}, template()]}),
        Shape::Vars => json!({"type": ["object", "null"]}),
        Shape::Rollback => json!({"anyOf": [
            {"enum": ["auto", "none", null]},
            definition("action"),
            {"type": "array", "items": definition("action")},
        ]}),
        Shape::Secrets => json!({"type": "object", "additionalProperties": definition("secret")}),
        Shape::Defaults => definition("defaults"),
        Shape::ModuleDefaults => definition("module_defaults"),
        Shape::Steps => definition("steps"),
        Shape::Phases => json!({"type": "object", "additionalProperties": definition("steps")}),
    }
}

/// A key's schema, with its doc as the description (beside a `$ref`, which draft 7 reads
/// alone, through `allOf`).
fn key_schema(key: &Key) -> Json {
    let shape = shape_schema(key.shape);
    match shape {
        Json::Object(mut m) if !m.contains_key("$ref") => {
            m.insert("description".into(), Json::String(key.doc.into()));
            Json::Object(m)
        }
        other => json!({"description": key.doc, "allOf": [other]}),
    }
}

/// The keys allowed at `place`, as schema properties.
fn properties(place: Place) -> Map<String, Json> {
    keys::at(place)
        .map(|k| (k.name.to_string(), key_schema(k)))
        .collect()
}

/// What the loader accepts for an argument of this kind (a template string is accepted
/// for every kind: only rendering tells its value).
fn kind_schema(kind: ArgKind) -> Json {
    match kind {
        ArgKind::Str => json!({"type": ["string", "number"]}),
        ArgKind::StrOrList => json!({"type": ["string", "array"]}),
        ArgKind::Int => json!({"anyOf": [{"type": "integer"}, template()]}),
        ArgKind::Bool => json!({"anyOf": [{"type": "boolean"}, template()]}),
        ArgKind::List => json!({"anyOf": [{"type": "array"}, template()]}),
        ArgKind::Map => json!({"anyOf": [{"type": "object"}, template()]}),
        ArgKind::Duration => json!({"anyOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "pattern": DURATION},
            template(),
        ]}),
        ArgKind::Mode => json!({"type": "string"}),
        ArgKind::Any => json!({}),
    }
}

/// A module's value in a step: a mapping of its arguments; nothing, when it requires
/// none; or, for a module with a short form, the value of that one argument.
fn module_schema(doc: &ModuleDoc, with_required: bool) -> Json {
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
        .filter(|a| a.required && with_required)
        .map(|a| a.name)
        .collect();
    let mut forms = vec![json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": doc.open_args,
    })];
    if required.is_empty() {
        forms.push(json!({"type": "null"}));
    }
    if let Some(free) = doc.free_form
        && required.iter().all(|r| *r == free)
    {
        let kind = doc
            .args
            .iter()
            .find(|a| a.name == free)
            .map_or(ArgKind::Any, |a| a.kind);
        // A mapping or nothing is read as the arguments, never as the short form.
        forms.push(json!({"not": {"type": ["object", "null"]}, "allOf": [kind_schema(kind)]}));
    }
    json!({"description": doc.summary, "anyOf": forms})
}

/// The arguments a `module_defaults:` entry may give: an object of optional arguments
/// (the step gives the required ones it lacks).
fn defaults_entry_schema(description: String, args: &[&ArgSpec], open: bool) -> Json {
    let props: Map<String, Json> = args
        .iter()
        .map(|a| {
            let mut s = kind_schema(a.kind);
            if let Json::Object(m) = &mut s {
                m.insert("description".into(), Json::String(a.doc.to_string()));
            }
            (a.name.to_string(), s)
        })
        .collect();
    json!({
        "description": description,
        "type": ["object", "null"],
        "properties": props,
        "additionalProperties": open,
    })
}

/// `module_defaults:`: each module by name, and each group as `group/NAME` with the
/// arguments any of its modules takes.
fn module_defaults_schema() -> Json {
    let mut props = Map::new();
    for (name, m) in registry() {
        let doc = m.doc();
        let args: Vec<&ArgSpec> = doc.args.iter().collect();
        props.insert(
            (*name).to_string(),
            defaults_entry_schema(
                format!("default arguments of `{name}` steps"),
                &args,
                doc.open_args,
            ),
        );
    }
    for g in GROUPS {
        let mut args: Vec<&ArgSpec> = Vec::new();
        for doc in g
            .members
            .iter()
            .filter_map(|n| registry().get(n))
            .map(|m| m.doc())
        {
            for a in doc.args {
                if !args.iter().any(|b| b.name == a.name) {
                    args.push(a);
                }
            }
        }
        props.insert(
            format!("{GROUP_PREFIX}{}", g.name),
            defaults_entry_schema(
                format!(
                    "default arguments of the steps of {}: {}",
                    g.members.join(", "),
                    g.doc
                ),
                &args,
                false,
            ),
        );
    }
    json!({
        "description": "module name (or group/NAME) to default arguments of its steps",
        "type": ["object", "null"],
        "properties": props,
        "additionalProperties": false,
    })
}

/// The JSON Schema of a playbook file. Its `definitions` name the parts a fragment may
/// be checked against: `steps` (a list of steps and imports), `step`, `import`,
/// `defaults`, `module_defaults`, `secret`, `action` (a rollback action) and `vars` (a file of variables,
/// as `vars_files` names).
pub fn playbook_schema() -> Json {
    let modules_with = |required: bool| -> Map<String, Json> {
        registry()
            .iter()
            .map(|(name, m)| ((*name).to_string(), module_schema(m.doc(), required)))
            .collect()
    };
    let modules = modules_with(true);
    let one_module: Vec<Json> = modules.keys().map(|m| json!({"required": [m]})).collect();
    // A playbook with `module_defaults` may leave a module's required arguments to them
    // (or to its importer's): its steps are checked without them.
    let step_with = |modules: Map<String, Json>| {
        let mut step_props = properties(Place::Step);
        step_props.extend(modules);
        json!({
            "description": "a step: its keys and exactly one module",
            "type": "object",
            "properties": step_props,
            "additionalProperties": false,
            "oneOf": one_module,
        })
    };
    let step = step_with(modules.clone());
    let step_lenient = step_with(modules_with(false));
    let import = json!({
        "description": "an import of another playbook's steps, their ids prefixed",
        "type": "object",
        "properties": properties(Place::Import),
        "required": ["import"],
        "additionalProperties": false,
    });
    let steps_of = |step: &str| {
        json!({
            "description": "steps and imports (an entry with `import:` is an import)",
            "type": "array",
            "items": {
                "if": {"type": "object", "required": ["import"]},
                "then": definition("import"),
                "else": definition(step),
            },
        })
    };
    let steps = steps_of("step");
    let steps_lenient = steps_of("step_lenient");
    let mut top = properties(Place::Playbook);
    let lists = |steps: &str| {
        json!({"properties": {
            "steps": definition(steps),
            "phases": {"type": "object", "additionalProperties": definition(steps)},
        }})
    };
    for k in keys::at(Place::Playbook).filter(|k| matches!(k.shape, Shape::Steps | Shape::Phases)) {
        top.insert(k.name.to_string(), json!({"description": k.doc}));
    }
    let defaults = json!({
        "description": "values for every step",
        "type": "object",
        "properties": properties(Place::Defaults),
        "additionalProperties": false,
    });
    let module_defaults = module_defaults_schema();
    let mut secret_props: Map<String, Json> = SECRET_SOURCES
        .iter()
        .map(|(name, doc)| {
            let mut s = text();
            if let Json::Object(m) = &mut s {
                m.insert("description".into(), Json::String((*doc).into()));
            }
            ((*name).to_string(), s)
        })
        .collect();
    secret_props.insert(
        SECRET_OPTIONAL.into(),
        json!({"type": "boolean", "description": "true: an unset variable or a missing file leaves the secret undefined"}),
    );
    let one_source: Vec<Json> = SECRET_SOURCES
        .iter()
        .map(|(name, _)| json!({"required": [name]}))
        .collect();
    let secret = json!({
        "description": "where a secret's value comes from: exactly one source",
        "type": "object",
        "properties": secret_props,
        "additionalProperties": false,
        "oneOf": one_source,
    });
    let action = json!({
        "description": "a module invocation",
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": modules,
        "additionalProperties": false,
    });
    // `steps` or `phases`, exactly one.
    let one_list: Vec<Json> = keys::at(Place::Playbook)
        .filter(|k| matches!(k.shape, Shape::Steps | Shape::Phases))
        .map(|k| json!({"required": [k.name]}))
        .collect();
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "lifeboat playbook",
        "type": "object",
        "properties": top,
        "additionalProperties": false,
        "oneOf": one_list,
        "if": {"required": ["module_defaults"]},
        "then": lists("steps_lenient"),
        "else": lists("steps"),
        "definitions": {
            "steps": steps,
            "step": step,
            "steps_lenient": steps_lenient,
            "step_lenient": step_lenient,
            "import": import,
            "defaults": defaults,
            "module_defaults": module_defaults,
            "secret": secret,
            "action": action,
            "vars": {
                "description": "a file of variables (`vars_files`)",
                "type": ["object", "null"],
            },
        },
    })
}

/// `lifeboat modules NAME`: what the module does, its arguments, an example, its result.
pub fn module_help(doc: &ModuleDoc) -> String {
    let mut out = format!("{} - {}\n\n{}\n\n", doc.name, doc.summary, doc.description);
    let groups: Vec<String> = crate::modules::groups_of(doc.name)
        .map(|g| format!("  {}{}: {}\n", crate::modules::GROUP_PREFIX, g.name, g.doc))
        .collect();
    if !groups.is_empty() {
        out.push_str("GROUPS (for module_defaults)\n");
        out.push_str(&groups.concat());
        out.push('\n');
    }
    out.push_str("ARGUMENTS\n");
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
