//! The run's one mouthpiece: stamps events with the run clock, hides secrets and
//! `no_log` values, and hands each event to every observer.

use std::sync::Arc;
use std::time::Instant;

use super::{Event, Observer};

/// Sends events to observers, secrets replaced by `********`.
pub struct Emitter {
    observers: Vec<Arc<dyn Observer>>,
    start: Instant,
    secrets: Vec<String>,
}

/// What replaces a secret in every output.
pub const MASK: &str = "********";

impl Emitter {
    /// An emitter over these observers; `secrets` are masked wherever they appear.
    pub fn new(observers: Vec<Arc<dyn Observer>>, mut secrets: Vec<String>) -> Self {
        secrets.retain(|s| !s.is_empty());
        // A secret also shows up quoted for a shell (in a failed command's line) or
        // escaped as JSON: mask those forms too.
        let forms: Vec<String> = secrets
            .iter()
            .flat_map(|s| {
                let quoted = crate::connection::quote(s);
                let json = serde_json::to_string(s).unwrap_or_default();
                let json_inner = json.trim_matches('"').to_string();
                [quoted, json_inner]
            })
            .filter(|f| !f.is_empty())
            .collect();
        secrets.extend(forms);
        secrets.sort();
        secrets.dedup();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Emitter {
            observers,
            start: Instant::now(),
            secrets,
        }
    }

    /// Seconds since the run began.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Masks every secret in a text.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    fn redact_opt(&self, text: &mut Option<String>) {
        if let Some(t) = text {
            *t = self.redact(t);
        }
    }

    /// Sends one event to every observer.
    pub fn emit(&self, mut event: Event) {
        match &mut event {
            Event::NodeFinish {
                msg,
                diff,
                stdout,
                stderr,
                ..
            } => {
                self.redact_opt(msg);
                self.redact_opt(diff);
                *stdout = self.redact(stdout);
                *stderr = self.redact(stderr);
            }
            Event::NodeOutput { text, .. } => *text = self.redact(text),
            Event::RollbackNode { msg, .. } => self.redact_opt(msg),
            Event::Warning { msg } => *msg = self.redact(msg),
            Event::RollbackFinish { left_undone, .. } => {
                for (_, _, why) in left_undone.iter_mut() {
                    *why = self.redact(why);
                }
            }
            _ => {}
        }
        for o in &self.observers {
            o.event(&event);
        }
    }

    /// Flushes every observer.
    pub fn finish(&self) -> std::io::Result<()> {
        for o in &self.observers {
            o.finish()?;
        }
        Ok(())
    }
}
