//! Zsets commands (to be filled in).

use crate::spec::CommandSpec;

pub const COMMANDS: &[CommandSpec] = &[];
