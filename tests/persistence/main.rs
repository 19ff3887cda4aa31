//! Integration tests of persistence: real `ferrite` processes on real data directories, stopped
//! cleanly or killed (SIGKILL) and started again; files damaged on purpose; a disk that fills up.

#[path = "../common/mod.rs"]
mod common;

mod util;

mod crash;
mod cutover;
mod faults;
mod group_commit;
mod migrations;
mod readers;
mod restart;
mod resume_auth;
mod streams;
