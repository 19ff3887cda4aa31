//! Tenancy errors. The server turns them into RESP error replies in one place.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TenancyError {
    #[error("invalid tenant id '{0}': use 1 to 64 characters of A-Z a-z 0-9 _ . -")]
    InvalidId(String),
    #[error("no such tenant '{0}'")]
    UnknownTenant(String),
    #[error("tenant '{0}' already exists")]
    AlreadyExists(String),
    #[error("too many tenants (max_tenants is {0}, the default tenant included)")]
    TooManyTenants(usize),
    #[error("the default tenant cannot be {0}")]
    DefaultTenant(&'static str),
    #[error("tenant '{id}' has {clients} connected client(s); use FORCE to delete it anyway")]
    HasClients { id: String, clients: u64 },
    #[error("tenant '{id}' is being migrated ({migration}); use FORCE to delete it anyway")]
    Migrating { id: String, migration: String },
    #[error("invalid username-password pair or user is disabled.")]
    WrongPass,
    #[error("tenant '{id}' is {state}")]
    WrongState { id: String, state: &'static str },
    /// The change could not be made durable (persistence failed to write the tenant catalog).
    #[error("Errors writing the tenant catalog to disk: {0}")]
    Persist(String),
}
