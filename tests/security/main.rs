//! Hostile tenants and strangers (issue 10): one test per finding, each against real `ferrite`
//! processes with real clients. What each limit is and why is in docs/security.md.

#[path = "../common/mod.rs"]
mod common;

mod amplification;
mod connections;
mod credentials;
mod preauth;
mod secure_defaults;
mod util;
