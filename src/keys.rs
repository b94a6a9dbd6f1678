//! The keys of the playbook format, each declared once: its name, where it may be
//! written (the playbook's top level, a step, `defaults:`, an import), the shape of its
//! value and a line of documentation. The loader ([`crate::playbook`]) takes from this
//! table which keys each mapping accepts, how each value is checked and what an unknown
//! key's help suggests; `lifeboat schema` ([`crate::schema`]) builds the JSON Schema
//! from it. A key added here is known to both; a key missing here is known to neither.

/// Where a key may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The top level of a playbook file.
    Playbook,
    /// A step (besides its one module key).
    Step,
    /// A playbook's `defaults:` block, for every step.
    Defaults,
    /// An `import:` entry of `steps:`.
    Import,
}

impl Place {
    /// Every place.
    pub const ALL: [Place; 4] = [Place::Playbook, Place::Step, Place::Defaults, Place::Import];

    /// How messages name the mapping (`unknown key `x` in defaults`).
    pub fn word(self) -> &'static str {
        match self {
            Place::Playbook => "playbook",
            Place::Step => "step",
            Place::Defaults => "defaults",
            Place::Import => "import",
        }
    }
}

/// What a key's value may be. The loader checks a value by its key's shape, and the
/// schema describes each shape the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A string; a number or a boolean is read as its text.
    Text,
    /// A variable name: letters, digits and `_`, starting with a letter or `_`.
    VarName,
    /// `sudo` or `su`.
    BecomeMethod,
    /// `together`, `in_order` or `reverse` (a looped import's order).
    LoopOrder,
    /// `error` or `warning`: what a step's failure is.
    Severity,
    /// An expression without braces (`{{ }}` around it is allowed); as [`Shape::Text`].
    Expression,
    /// `true` or `false`.
    Bool,
    /// A whole number, 0 or more.
    Count,
    /// A whole number from 0 to 100.
    Percent,
    /// A duration: `30s`, `5m`, `1h30m`, or a number of seconds (0 or more).
    Duration,
    /// A string or a list of strings.
    Texts,
    /// A step id or a list of them.
    Ids,
    /// A list, or a template that gives one.
    Loop,
    /// A mapping of variable names to values (nothing: no variables).
    Vars,
    /// `auto`, `none` (or nothing), a module invocation or a list of them.
    Rollback,
    /// A mapping of secret names to their source: exactly one of `env`, `file`,
    /// `command` or `value`, and optionally `optional: true|false`.
    Secrets,
    /// A mapping of the keys allowed in [`Place::Defaults`].
    Defaults,
    /// A mapping of module names (or `group/NAME`) to default arguments of their steps.
    ModuleDefaults,
    /// A list of steps and imports.
    Steps,
    /// A mapping of phase names to lists of steps and imports.
    Phases,
}

/// One key of the playbook format.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key as written.
    pub name: &'static str,
    /// Where it may be written.
    pub places: &'static [Place],
    /// What its value may be.
    pub shape: Shape,
    /// What it means, in a line.
    pub doc: &'static str,
}

impl Key {
    /// Whether the key may be written at `place`.
    pub fn at(&self, place: Place) -> bool {
        self.places.contains(&place)
    }
}

use Place::{Defaults as D, Import as I, Playbook as P, Step as S};

/// Every key, in the order the documentation lists them. A name may appear twice only
/// at different places, where it means something different (`hosts` of a playbook is
/// its steps' default; `id` of an import prefixes the ids it brings in).
pub const KEYS: &[Key] = &[
    // The playbook's own keys.
    Key {
        name: "name",
        places: &[P],
        shape: Shape::Text,
        doc: "shown in the output (default: the file name)",
    },
    Key {
        name: "description",
        places: &[P],
        shape: Shape::Text,
        doc: "free text",
    },
    Key {
        name: "hosts",
        places: &[P],
        shape: Shape::Text,
        doc: "default host pattern of the steps (default `all`)",
    },
    Key {
        name: "vars",
        places: &[P],
        shape: Shape::Vars,
        doc: "playbook variables",
    },
    Key {
        name: "vars_files",
        places: &[P],
        shape: Shape::Texts,
        doc: "YAML files of variables, relative to the playbook; `vars` wins over them",
    },
    Key {
        name: "secrets",
        places: &[P],
        shape: Shape::Secrets,
        doc: "name: {env: VAR}, {file: path}, {command: \"...\"} or {value: \"...\"}, with \
              `optional: true` beside it to leave the secret undefined when its source is \
              not there; masked in every output",
    },
    Key {
        name: "defaults",
        places: &[P],
        shape: Shape::Defaults,
        doc: "values for every step",
    },
    Key {
        name: "module_defaults",
        places: &[P, I],
        shape: Shape::ModuleDefaults,
        doc: "module name (or `group/NAME`) to arguments its steps get unless they give them; \
              a module's entry wins over its group's; an import's are for its steps and win \
              over its importer's",
    },
    Key {
        name: "steps",
        places: &[P],
        shape: Shape::Steps,
        doc: "the ordered list of steps and imports",
    },
    Key {
        name: "phases",
        places: &[P],
        shape: Shape::Phases,
        doc: "instead of `steps`: a mapping of phase name to steps (drills)",
    },
    Key {
        name: "rto_target",
        places: &[P],
        shape: Shape::Duration,
        doc: "drill target: the longest the recovery may take",
    },
    Key {
        name: "rpo_target",
        places: &[P],
        shape: Shape::Duration,
        doc: "drill target: the oldest the restored data may be",
    },
    Key {
        name: "max_fail_percentage",
        places: &[P],
        shape: Shape::Percent,
        doc: "share of hosts (0 to 100) that may fail while the run goes on without them \
              (default 0: any failure stops the run)",
    },
    // An import's own keys.
    Key {
        name: "import",
        places: &[I],
        shape: Shape::Text,
        doc: "a playbook file whose steps are brought in, relative to this file",
    },
    Key {
        name: "id",
        places: &[I],
        shape: Shape::Text,
        doc: "prefix of the imported ids (default: the file name); `needs` may name it to \
              wait for every step it brought in",
    },
    // The keys of a step; some also in `defaults:` and imports.
    Key {
        name: "id",
        places: &[S],
        shape: Shape::Text,
        doc: "unique id; `needs` refers to it (default: the name turned into a slug, else \
              stepN)",
    },
    Key {
        name: "name",
        places: &[S],
        shape: Shape::Text,
        doc: "text shown in the output (default: the id)",
    },
    Key {
        name: "hosts",
        places: &[S, D, I],
        shape: Shape::Text,
        doc: "host pattern (default: the playbook's; an import's is for its steps that \
              name none)",
    },
    Key {
        name: "needs",
        places: &[S, I],
        shape: Shape::Ids,
        doc: "ids of steps (or of imports) this waits for; an import's are for its steps \
              with no needs of their own",
    },
    Key {
        name: "when",
        places: &[S],
        shape: Shape::Expression,
        doc: "an expression without braces; false means the node is skipped",
    },
    Key {
        name: "loop",
        places: &[S],
        shape: Shape::Loop,
        doc: "a list, or a template that gives one; the module runs once per item, with \
              `item` set",
    },
    Key {
        name: "register",
        places: &[S],
        shape: Shape::VarName,
        doc: "the variable the result is stored under",
    },
    Key {
        name: "become",
        places: &[S, D],
        shape: Shape::Bool,
        doc: "privilege escalation",
    },
    Key {
        name: "become_user",
        places: &[S, D],
        shape: Shape::Text,
        doc: "the user to become",
    },
    Key {
        name: "become_method",
        places: &[S, D],
        shape: Shape::BecomeMethod,
        doc: "sudo (the default) or su",
    },
    Key {
        name: "timeout",
        places: &[S, D],
        shape: Shape::Duration,
        doc: "time limit of each attempt, e.g. 30s, 5m",
    },
    Key {
        name: "retries",
        places: &[S, D],
        shape: Shape::Count,
        doc: "extra attempts after a failure (default 0)",
    },
    Key {
        name: "retry_delay",
        places: &[S, D],
        shape: Shape::Duration,
        doc: "pause between attempts (default 1s)",
    },
    Key {
        name: "ignore_errors",
        places: &[S, D],
        shape: Shape::Bool,
        doc: "a failure is reported as `failed (ignored)` and the run goes on",
    },
    Key {
        name: "severity",
        places: &[S, D],
        shape: Shape::Severity,
        doc: "`error` (default) or `warning`: a warning step's failure is reported as \
              `warning`, and the run goes on as if it had succeeded (not with \
              `ignore_errors`)",
    },
    Key {
        name: "read_only",
        places: &[S],
        shape: Shape::Bool,
        doc: "the step changes nothing, so it also really runs in a dry run",
    },
    Key {
        name: "run_once",
        places: &[S],
        shape: Shape::Bool,
        doc: "one node, on the first host of the pattern",
    },
    Key {
        name: "finally",
        places: &[S],
        shape: Shape::Bool,
        doc: "runs once what it needs has ended, whatever the outcome: after a failure \
              too, before the rollback (a resync after a desync)",
    },
    Key {
        name: "delegate_to",
        places: &[S],
        shape: Shape::Text,
        doc: "run on this inventory host (a template) with the original host's variables",
    },
    Key {
        name: "tags",
        places: &[S, D, I],
        shape: Shape::Texts,
        doc: "for --tags / --skip-tags; a step tagged `always` runs unless skipped by tag",
    },
    Key {
        name: "no_log",
        places: &[S, D],
        shape: Shape::Bool,
        doc: "hide the step's output, messages and diffs",
    },
    Key {
        name: "vars",
        places: &[S, I],
        shape: Shape::Vars,
        doc: "step variables; an import's win over the imported file's own",
    },
    Key {
        name: "rollback",
        places: &[S, D],
        shape: Shape::Rollback,
        doc: "`auto` (default), `none`, a module invocation, or a list of them",
    },
    Key {
        name: "loop",
        places: &[I],
        shape: Shape::Texts,
        doc: "import the file once per item (words, known when the playbook loads), with \
              the item in `loop_var` and the ids `ITEM-ID`; the import's id stands for all",
    },
    Key {
        name: "loop_var",
        places: &[I],
        shape: Shape::VarName,
        doc: "the variable each expansion of a looped import gets its item in (default \
              `item`)",
    },
    Key {
        name: "loop_order",
        places: &[I],
        shape: Shape::LoopOrder,
        doc: "`together` (default: every expansion at once), `in_order` (each needs the \
              one before) or `reverse` (the same, last item first)",
    },
    Key {
        name: "phase",
        places: &[S, I],
        shape: Shape::Text,
        doc: "drill phase (backup, sabotage, restore, verify)",
    },
];

/// The sources a secret may have (exactly one per secret), each with what it reads.
pub const SECRET_SOURCES: &[(&str, &str)] = &[
    ("env", "an environment variable of the controller"),
    (
        "file",
        "a file on the controller, relative to the playbook (trailing newline removed)",
    ),
    (
        "command",
        "a command's standard output (trailing newline removed)",
    ),
    ("value", "a literal value (for tests and demos)"),
];

/// Beside a secret's source: `true` leaves the secret undefined when its environment
/// variable is unset or its file is missing.
pub const SECRET_OPTIONAL: &str = "optional";

/// The key `name` at `place`, if it may be written there.
pub fn find(place: Place, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name && k.at(place))
}

/// The keys that may be written at `place`, in table order.
pub fn at(place: Place) -> impl Iterator<Item = &'static Key> {
    KEYS.iter().filter(move |k| k.at(place))
}

/// The names of the keys that may be written at `place`, in table order.
pub fn names(place: Place) -> Vec<&'static str> {
    at(place).map(|k| k.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_declared_once_per_place() {
        for place in Place::ALL {
            let names = names(place);
            for (i, n) in names.iter().enumerate() {
                assert!(
                    !names[i + 1..].contains(n),
                    "`{n}` is declared twice at {place:?}"
                );
            }
        }
    }

    #[test]
    fn no_key_is_named_like_a_module() {
        for k in KEYS {
            assert!(
                crate::modules::lookup(k.name).is_none(),
                "`{}` is both a key and a module: a step could not tell them apart",
                k.name
            );
        }
    }

    #[test]
    fn defaults_take_only_step_keys_of_the_same_shape() {
        for d in at(Place::Defaults) {
            let s = find(Place::Step, d.name)
                .unwrap_or_else(|| panic!("`{}` in defaults is no step key", d.name));
            assert_eq!(s.shape, d.shape, "{}", d.name);
        }
    }
}
