//! lifeboat: declarative backup and recovery runbooks over SSH.
//!
//! A playbook ([`playbook`]) is read against an inventory ([`inventory`]) into a
//! dependency graph of (step, host) nodes ([`graph`]); the [`executor`] schedules the
//! graph over [`connection`]s, running [`modules`], and [`rollback`] undoes a failed
//! run in reverse dependency order. [`output`] shows and records what happened.

pub mod cli;
pub mod connection;
pub mod drill;
pub mod error;
pub mod executor;
pub mod graph;
pub mod inventory;
pub mod journal;
pub mod keys;
pub mod lock;
pub mod marker;
pub mod modules;
pub mod output;
pub mod playbook;
pub mod random;
pub mod report;
pub mod rollback;
pub mod schema;
pub mod template;
pub mod vars;
pub mod yaml;
