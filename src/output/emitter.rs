//! The run's one mouthpiece: stamps events with the run clock, hides secrets and
//! `no_log` values, and hands each event to every observer.
//!
//! Secret values are held in [`Zeroizing`] strings, so their memory is wiped when the
//! emitter (and its [`Masker`]) is dropped. A secret is masked in the forms it takes in
//! text: as is, shell-quoted (in a command line, also as part of a longer quoted word,
//! see [`crate::template::shell_quote`]), JSON-escaped (the journal, registered data
//! printed as JSON), and JSON-escaped shell-quoted (a command line inside JSON).
//! Streamed output (`-v`) comes in chunks that may cut a secret in two: the emitter
//! holds back, per stream, the end of a chunk that could be the start of a secret until
//! the next chunk (or the node's end) tells.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use zeroize::Zeroizing;

use super::{Event, Observer};

/// What replaces a secret in every output.
pub const MASK: &str = "********";

/// The secret values to hide and every form they take in text, longest first.
#[derive(Default)]
pub struct Masker {
    forms: Vec<Zeroizing<String>>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} forms)", self.forms.len())
    }
}

impl Masker {
    /// A masker of these values (empty values are ignored).
    pub fn new(values: impl IntoIterator<Item = Zeroizing<String>>) -> Masker {
        let mut m = Masker::default();
        for v in values {
            m.add(v);
        }
        m
    }

    /// Adds a value to hide, with its quoted and escaped forms.
    pub fn add(&mut self, value: Zeroizing<String>) {
        if value.is_empty() {
            return;
        }
        // In a command line, rendered from a template or quoted by a module (both quote
        // the same way, whatever surrounds the value): as it is, or between single
        // quotes, which stay visible around the mask.
        let in_quotes = Zeroizing::new(crate::template::sq_content(&value));
        // JSON-escaped once (a JSON document) or twice (JSON inside a JSON string: the
        // journal's record of a `debug: var=`).
        let mut forms = vec![
            json_inner(&json_inner(&value)),
            json_inner(&json_inner(&in_quotes)),
            json_inner(&value),
            json_inner(&in_quotes),
            in_quotes,
            value,
        ];
        forms.retain(|f| !f.is_empty());
        for f in forms {
            if !self.forms.iter().any(|g| **g == *f) {
                self.forms.push(f);
            }
        }
        // Longest first, so a secret containing another is masked whole.
        self.forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// Whether there is nothing to hide.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// Masks every secret in a text.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.forms {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    /// Where to cut `buf` so that what comes before can be shown now: past the cut is
    /// only what could be the start of a secret, cut short by the end of the chunk. A
    /// whole secret is never cut: the cut moves past it, so it is masked whole, as it
    /// would be in one piece.
    fn safe_cut(&self, buf: &str) -> usize {
        let mut cut = self.hold_from(buf, 0);
        loop {
            let across = self.forms.iter().find_map(|f| {
                buf.match_indices(f.as_str())
                    .map(|(start, m)| start + m.len())
                    .find(|&end| end > cut && end - f.len() < cut)
            });
            match across {
                Some(end) => cut = self.hold_from(buf, end),
                None => return cut,
            }
        }
    }

    /// The start of the longest end of `buf`, at or after `min`, that is the beginning
    /// of a secret but shorter than it (`buf.len()` when there is none).
    fn hold_from(&self, buf: &str, min: usize) -> usize {
        let longest = self.forms.first().map_or(0, |f| f.len());
        let from = buf.len().saturating_sub(longest.saturating_sub(1)).max(min);
        buf.char_indices()
            .map(|(i, _)| i)
            .filter(|&i| i >= from)
            .find(|&i| {
                let tail = &buf[i..];
                self.forms
                    .iter()
                    .any(|f| f.len() > tail.len() && f.starts_with(tail))
            })
            .unwrap_or(buf.len())
    }
}

/// How the journal refers to a named secret: `@@lifeboat-secret:NAME:FORM@@`, where FORM
/// says what the token stands for once the journal's JSON is read: `v` the value, `sq`
/// its content between shell single quotes, `jv` and `jsq` those JSON-escaped (JSON
/// inside a JSON string). ASCII without JSON escapes: it survives the journal as it is.
const REF_OPEN: &str = "@@lifeboat-secret:";
const REF_CLOSE: &str = "@@";

/// The journal's mask of the named secrets (the playbook's `secrets:`, the inventory's
/// passwords): each form a secret takes in a record's text is written as a reference
/// to the secret's name, never as the value, so that `resume` and `rollback` can put
/// the value back once its source gives it again ([`unrefer`]).
#[derive(Default)]
pub struct Referencer {
    forms: Vec<(Zeroizing<String>, String)>,
}

impl Referencer {
    /// A referencer of these (name, value) pairs (empty values are ignored).
    pub fn new(named: &[(String, Zeroizing<String>)]) -> Referencer {
        let mut forms: Vec<(Zeroizing<String>, String)> = Vec::new();
        for (name, value) in named {
            if value.is_empty() {
                continue;
            }
            let sq = Zeroizing::new(crate::template::sq_content(value));
            // JSON-escaping changes nothing in a plain value: its plain name then.
            let (jv, jsq) = (
                if *json_inner(value) == **value {
                    "v"
                } else {
                    "jv"
                },
                if *json_inner(&sq) == *sq { "sq" } else { "jsq" },
            );
            // As the record's text holds them, and what each is once the JSON is read.
            for (text, form) in [
                (json_inner(&json_inner(value)), jv),
                (json_inner(&json_inner(&sq)), jsq),
                (json_inner(value), "v"),
                (json_inner(&sq), "sq"),
                (sq.clone(), "sq"),
                (value.clone(), "v"),
            ] {
                if !text.is_empty() && !forms.iter().any(|(t, _)| **t == *text) {
                    forms.push((text, format!("{REF_OPEN}{name}:{form}{REF_CLOSE}")));
                }
            }
        }
        // Longest first, so a secret containing another is referred to whole.
        forms.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Referencer { forms }
    }

    /// Refers to one more named value from now on (a module argument that is secret by
    /// nature, known once its step renders it); a value already referred to keeps its
    /// first name.
    pub fn add(&mut self, name: &str, value: &str) {
        let more = Referencer::new(&[(name.to_string(), Zeroizing::new(value.to_string()))]);
        for (t, r) in more.forms {
            if !self.forms.iter().any(|(u, _)| **u == *t) {
                self.forms.push((t, r));
            }
        }
        self.forms.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
    }

    /// A record's text with every named secret replaced by its reference.
    pub fn refer(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (t, reference) in &self.forms {
            if out.contains(t.as_str()) {
                out = out.replace(t.as_str(), reference);
            }
        }
        out
    }
}

/// Whether a value read from a journal refers to a named secret whose name starts with
/// `prefix`.
pub fn refers_to(value: &serde_json::Value, prefix: &str) -> bool {
    use serde_json::Value as J;
    match value {
        J::String(s) => s.contains(&format!("{REF_OPEN}{prefix}")),
        J::Array(items) => items.iter().any(|v| refers_to(v, prefix)),
        J::Object(m) => m.values().any(|v| refers_to(v, prefix)),
        _ => false,
    }
}

/// Puts the named secrets back into a value read from a journal: every reference in
/// its strings becomes the secret's value (`value_of` NAME), in the form it stood for.
/// A secret `value_of` does not give is an error naming it.
pub fn unrefer(
    value: &mut serde_json::Value,
    value_of: &dyn Fn(&str) -> Option<Zeroizing<String>>,
) -> Result<(), String> {
    unrefer_but(value, value_of, &|_| false)
}

/// [`unrefer`], leaving the references to the names `later` says as they are (another
/// part puts them back: a module argument's, from its step).
pub fn unrefer_but(
    value: &mut serde_json::Value,
    value_of: &dyn Fn(&str) -> Option<Zeroizing<String>>,
    later: &dyn Fn(&str) -> bool,
) -> Result<(), String> {
    use serde_json::Value as J;
    match value {
        J::String(s) if s.contains(REF_OPEN) => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(at) = rest.find(REF_OPEN) {
                out.push_str(&rest[..at]);
                let after = &rest[at + REF_OPEN.len()..];
                let Some(end) = after.find(REF_CLOSE) else {
                    out.push_str(&rest[at..]);
                    rest = "";
                    break;
                };
                let inner = &after[..end];
                let (name, form) = inner.rsplit_once(':').unwrap_or((inner, "v"));
                if later(name) {
                    out.push_str(&rest[at..at + REF_OPEN.len() + end + REF_CLOSE.len()]);
                    rest = &after[end + REF_CLOSE.len()..];
                    continue;
                }
                let v = value_of(name).ok_or_else(|| name.to_string())?;
                let sq = Zeroizing::new(crate::template::sq_content(&v));
                let text = match form {
                    "sq" => sq,
                    "jv" => json_inner(&v),
                    "jsq" => json_inner(&sq),
                    _ => v,
                };
                out.push_str(&text);
                rest = &after[end + REF_CLOSE.len()..];
            }
            out.push_str(rest);
            *s = out;
            Ok(())
        }
        J::Array(items) => items
            .iter_mut()
            .try_for_each(|v| unrefer_but(v, value_of, later)),
        J::Object(m) => m
            .values_mut()
            .try_for_each(|v| unrefer_but(v, value_of, later)),
        _ => Ok(()),
    }
}

/// A JSON value with every string in it (keys kept) replaced by [`MASK`]: how a record
/// that must not show a `no_log` step's values keeps its shape.
pub fn mask_strings(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        J::String(s) if s.is_empty() => J::String(String::new()),
        J::String(_) => J::String(MASK.to_string()),
        J::Array(items) => J::Array(items.iter().map(mask_strings).collect()),
        J::Object(map) => J::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), mask_strings(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A value as it appears inside a JSON string (without the quotes).
fn json_inner(s: &str) -> Zeroizing<String> {
    let json = Zeroizing::new(serde_json::to_string(s).unwrap_or_default());
    let inner = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or_default();
    Zeroizing::new(inner.to_string())
}

/// A (step, host, stream) key of streamed output.
type StreamKey = (String, String, String);

/// Sends events to observers, secrets replaced by `********`.
pub struct Emitter {
    observers: Vec<Arc<dyn Observer>>,
    start: Instant,
    masker: RwLock<Masker>,
    /// The journal's references to named secrets (see [`Referencer`]).
    referencer: RwLock<Referencer>,
    /// Per stream, streamed output held back because it may be a cut secret's start.
    held: Mutex<HashMap<StreamKey, String>>,
}

impl Emitter {
    /// An emitter over these observers; `secrets` are masked wherever they appear. The
    /// values are moved into zeroizing storage.
    pub fn new(observers: Vec<Arc<dyn Observer>>, secrets: Vec<String>) -> Self {
        Emitter {
            observers,
            start: Instant::now(),
            masker: RwLock::new(Masker::new(secrets.into_iter().map(Zeroizing::new))),
            referencer: RwLock::new(Referencer::default()),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds since the run began.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Hides one more value from now on (a value only known once the run is under way,
    /// such as a `no_log` step's output).
    pub fn add_secret(&self, value: &str) {
        let mut m = self.masker.write().unwrap_or_else(|e| e.into_inner());
        m.add(Zeroizing::new(value.to_string()));
    }

    /// The journal refers to these named secrets by name (see [`Referencer`]).
    pub fn refer_to(&self, named: &[(String, Zeroizing<String>)]) {
        *self.referencer.write().unwrap_or_else(|e| e.into_inner()) = Referencer::new(named);
    }

    /// Hides one more value from now on, in outputs as a mask and in the journal as a
    /// reference to `name` (a module argument that is secret by nature).
    pub fn add_named_secret(&self, name: &str, value: &str) {
        self.add_secret(value);
        self.referencer
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .add(name, value);
    }

    /// A journal record's text: named secrets as references, any other secret masked.
    pub fn for_journal(&self, text: &str) -> String {
        let referred = self
            .referencer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .refer(text);
        self.redact(&referred)
    }

    /// Masks every secret in a text.
    pub fn redact(&self, text: &str) -> String {
        self.masker
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .redact(text)
    }

    fn redact_in_place(&self, text: &mut String) {
        let m = self.masker.read().unwrap_or_else(|e| e.into_inner());
        if m.forms.iter().any(|f| text.contains(f.as_str())) {
            *text = m.redact(text);
        }
    }

    fn redact_opt(&self, text: &mut Option<String>) {
        if let Some(t) = text {
            self.redact_in_place(t);
        }
    }

    /// Sends one event to every observer.
    pub fn emit(&self, mut event: Event) {
        match &mut event {
            Event::RunStart {
                playbook, hosts, ..
            } => {
                self.redact_in_place(playbook);
                hosts.iter_mut().for_each(|h| self.redact_in_place(h));
            }
            Event::Plan { waves } => {
                for (step, host) in waves.iter_mut().flatten() {
                    self.redact_in_place(step);
                    self.redact_in_place(host);
                }
            }
            Event::NodeStart {
                step, name, host, ..
            } => {
                self.redact_in_place(step);
                self.redact_in_place(name);
                self.redact_in_place(host);
            }
            Event::NodeFinish {
                step,
                name,
                host,
                msg,
                diff,
                stdout,
                stderr,
                ..
            } => {
                // What the node streamed and held back comes before its end.
                self.flush_held(Some((step.as_str(), host.as_str())));
                self.redact_in_place(step);
                self.redact_in_place(name);
                self.redact_in_place(host);
                self.redact_opt(msg);
                self.redact_opt(diff);
                self.redact_in_place(stdout);
                self.redact_in_place(stderr);
            }
            Event::NodeOutput { .. } => {
                self.stream(event);
                return;
            }
            Event::RollbackStart { reason, .. } => {
                self.flush_held(None);
                self.redact_in_place(reason);
            }
            Event::RollbackNode {
                step,
                name,
                host,
                msg,
                ..
            } => {
                self.redact_in_place(step);
                self.redact_in_place(name);
                self.redact_in_place(host);
                self.redact_opt(msg);
            }
            Event::Warning { msg } => self.redact_in_place(msg),
            Event::RollbackFinish { left_undone, .. } => {
                for (step, host, why) in left_undone.iter_mut() {
                    self.redact_in_place(step);
                    self.redact_in_place(host);
                    self.redact_in_place(why);
                }
            }
            Event::RunEnd { recap, .. } => {
                self.flush_held(None);
                recap
                    .iter_mut()
                    .for_each(|r| self.redact_in_place(&mut r.host));
            }
        }
        self.send(&event);
    }

    fn send(&self, event: &Event) {
        for o in &self.observers {
            o.event(event);
        }
    }

    /// A chunk of streamed output: shown up to what could be a cut secret's start, the
    /// rest held back for the next chunk of the same stream.
    fn stream(&self, event: Event) {
        let Event::NodeOutput {
            step,
            host,
            stream,
            text,
        } = event
        else {
            return;
        };
        // Held while sending, so the chunks of a stream keep their order.
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let key = (step, host, stream);
        let mut buf = held.remove(&key).unwrap_or_default();
        buf.push_str(&text);
        let (shown, rest) = {
            let m = self.masker.read().unwrap_or_else(|e| e.into_inner());
            let cut = m.safe_cut(&buf);
            (m.redact(&buf[..cut]), buf[cut..].to_string())
        };
        if !rest.is_empty() {
            held.insert(key.clone(), rest);
        }
        if !shown.is_empty() {
            let (step, host, stream) = key;
            self.send(&Event::NodeOutput {
                step: self.redact(&step),
                host: self.redact(&host),
                stream,
                text: shown,
            });
        }
    }

    /// Shows what is held back: of one node, or of every stream.
    fn flush_held(&self, node: Option<(&str, &str)>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<StreamKey> = held
            .keys()
            .filter(|(s, h, _)| node.is_none_or(|(ns, nh)| ns == s && nh == h))
            .cloned()
            .collect();
        for key in keys {
            if let Some(rest) = held.remove(&key) {
                let (step, host, stream) = key;
                self.send(&Event::NodeOutput {
                    step: self.redact(&step),
                    host: self.redact(&host),
                    stream,
                    text: self.redact(&rest),
                });
            }
        }
    }

    /// Flushes every observer (and any streamed output still held back).
    pub fn finish(&self) -> std::io::Result<()> {
        self.flush_held(None);
        for o in &self.observers {
            o.finish()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_refers_to_named_secrets_and_gets_them_back() {
        let pw = "p4ss 'q' \"dq\" $(x) \\ end";
        let named = vec![("restic_pw".to_string(), Zeroizing::new(pw.to_string()))];
        let r = Referencer::new(&named);
        let cmd = format!("restic -p '{}' snapshots", crate::template::sq_content(pw));
        let inner = serde_json::json!({ "password": pw }).to_string();
        let record = serde_json::json!({
            "args": { "password": pw, "cmd": cmd, "as_json": inner },
            "list": [pw, "plain"],
        });
        let text = r.refer(&record.to_string());
        assert!(!text.contains("p4ss"), "{text}");
        assert!(text.contains("@@lifeboat-secret:restic_pw:"), "{text}");
        let mut back: serde_json::Value = serde_json::from_str(&text).expect("still JSON");
        assert_ne!(back, record);
        let known = |n: &str| (n == "restic_pw").then(|| Zeroizing::new(pw.to_string()));
        unrefer(&mut back, &known).expect("known");
        assert_eq!(back, record);
        // A secret the source no longer gives: named.
        let mut again: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(unrefer(&mut again, &|_| None), Err("restic_pw".to_string()));
    }

    fn masker(values: &[&str]) -> Masker {
        Masker::new(values.iter().map(|v| Zeroizing::new(v.to_string())))
    }

    #[test]
    fn forms_of_a_secret_are_masked() {
        let m = masker(&["it's \"x\" \\ y"]);
        let secret = "it's \"x\" \\ y";
        let quoted = crate::connection::quote(secret);
        let json = serde_json::to_string(secret).unwrap_or_default();
        let json_quoted = serde_json::to_string(&quoted).unwrap_or_default();
        for text in [
            format!("a {secret} b"),
            format!("echo {quoted}"),
            format!("{{\"v\":{json}}}"),
            format!("{{\"cmd\":{json_quoted}}}"),
        ] {
            let out = m.redact(&text);
            assert!(out.contains(MASK), "{text} -> {out}");
            assert!(!out.contains("it's"), "{text} -> {out}");
            assert!(!out.contains("it'"), "{text} -> {out}");
        }
    }

    #[test]
    fn a_json_form_ending_in_a_quote_keeps_its_escape() {
        let m = masker(&["ab\""]);
        assert_eq!(m.redact(r#"{"v":"ab\""}"#), format!(r#"{{"v":"{MASK}"}}"#));
    }

    #[test]
    fn mask_strings_keeps_the_shape() {
        let v = serde_json::json!({"rc": 0, "stdout": "x", "lines": ["a", ""], "ok": true});
        assert_eq!(
            mask_strings(&v),
            serde_json::json!({"rc": 0, "stdout": MASK, "lines": [MASK, ""], "ok": true})
        );
    }

    #[test]
    fn the_cut_keeps_a_possible_secret_start_back() {
        let m = masker(&["topsecret"]);
        assert_eq!(m.safe_cut("hello tops"), 6);
        assert_eq!(m.safe_cut("hello world"), 11);
        assert_eq!(m.safe_cut("topsecret"), 9);
        assert_eq!(m.safe_cut("héllo t"), "héllo ".len());
        let m = masker(&["abc", "cde"]);
        // `cd` may start `cde`, but `abc` is whole: it goes out masked, as in one piece.
        assert_eq!(m.safe_cut("xabcd"), 5);
        assert_eq!(m.safe_cut("xabcdc"), 5);
        assert_eq!(masker(&[]).safe_cut("anything"), 8);
    }
}
