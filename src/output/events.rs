//! The JSON-lines event file: one JSON object per [`Event`], each with a `"ts"` field
//! carrying the wall-clock time it was recorded. Every line is flushed as it is written so
//! a run that is killed leaves a readable file behind.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use super::event::{Event, Observer};

/// Writes every event of a run to a file, one JSON object per line.
pub struct EventLog {
    state: Mutex<State>,
}

/// The writer, and the first write error (reported by `finish`).
struct State {
    out: Option<Box<dyn Write + Send>>,
    error: Option<io::Error>,
}

impl EventLog {
    /// Creates (or truncates) the event file at `path`.
    pub fn create(path: &Path) -> io::Result<EventLog> {
        let file = File::create(path)?;
        Ok(EventLog::with_writer(Box::new(BufWriter::new(file))))
    }

    /// An event log writing to any target (tests, pipes).
    pub fn with_writer(writer: Box<dyn Write + Send>) -> EventLog {
        EventLog {
            state: Mutex::new(State {
                out: Some(writer),
                error: None,
            }),
        }
    }

    /// The JSON line for `event` (without the newline), stamped with `ts`.
    fn line(event: &Event, ts: &str) -> io::Result<String> {
        let mut value = serde_json::to_value(event).map_err(io::Error::other)?;
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("ts".to_string(), serde_json::Value::String(ts.to_string()));
        }
        serde_json::to_string(&value).map_err(io::Error::other)
    }
}

impl Observer for EventLog {
    fn event(&self, event: &Event) {
        let ts = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let line = match EventLog::line(event, &ts) {
            Ok(line) => line,
            Err(e) => {
                state.error.get_or_insert(e);
                return;
            }
        };
        if let Some(out) = state.out.as_mut() {
            // An unwritable event file must not stop the run: stop writing to it, and
            // report the error when the run is over.
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                state.out = None;
                state.error.get_or_insert(e);
            }
        }
    }

    fn finish(&self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        match state.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}
