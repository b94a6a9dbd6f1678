//! What a run tells the world. The executor emits [`Event`]s to every [`Observer`]: the
//! live console view ([`console`]), the JSON-lines event file ([`events`]) and the JUnit
//! report ([`junit`]). Observers only listen; they never steer the run.

pub mod console;
pub mod emitter;
pub mod event;
pub mod events;
pub mod junit;

pub use emitter::{Emitter, MASK};
pub use event::{Event, NodeStatus, Observer, RollbackStatus, RunOutcome};
