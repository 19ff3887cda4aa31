//! Hostile tenants and strangers (issue 10): one test per finding, each against real `ferrite`
//! processes with real clients. What each limit is and why is in docs/security.md.

#[path = "../common/mod.rs"]
mod common;

mod acl_users;
mod amplification;
mod auth_limit;
mod connections;
mod credentials;
mod info_scoping;
mod lua_crashes;
mod metrics_endpoint;
mod preauth;
mod requests;
mod secret_logs;
mod secure_defaults;
mod tenant_clients;
mod util;
