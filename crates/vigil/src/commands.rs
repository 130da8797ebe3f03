//! One module per command (or family of commands), each owning its clap arguments and its
//! `run`. They build on the shared argument groups in [`crate::args`], the `serve`
//! configuration in [`crate::config`] and the printers in [`crate::output`], never on each
//! other.

pub mod admin;
pub mod bench;
pub mod events;
pub mod generate;
pub mod import;
pub mod reindex;
pub mod serve;
pub mod verify;
