//! Commands that need no daemon: they read files, apply protocol rules, and print.

pub(crate) mod policy;
pub(crate) mod program;
pub(crate) mod replay;
pub(crate) mod schema;
pub(crate) mod source;
