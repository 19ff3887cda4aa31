//! The set of tenants on this server.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::RwLock;

use crate::credential::Credential;
use crate::error::TenancyError;
use crate::tenant::{Tenant, TenantLimits, TenantState, valid_tenant_id};

/// Name of the tenant that unbound connections use.
pub const DEFAULT_TENANT: &str = "default";

/// Tenancy settings that the registry applies.
#[derive(Debug, Clone)]
pub struct TenancySettings {
    pub max_tenants: usize,
    /// Limits given to a new tenant when TENANT.CREATE does not say otherwise.
    pub default_limits: TenantLimits,
    /// Longest a throttled command is delayed before it is refused.
    pub throttle_max_delay_ms: u64,
}

impl Default for TenancySettings {
    fn default() -> Self {
        TenancySettings {
            max_tenants: 1000,
            default_limits: TenantLimits::default(),
            throttle_max_delay_ms: 1000,
        }
    }
}

/// Where tenant records are made durable (persistence implements it, see
/// [`Registry::set_store`]). Each call returns once the change is on disk.
pub trait TenantStore: Send + Sync {
    /// A tenant was created, or its credential, limits, state or moved address changed.
    fn save(&self, t: &Arc<Tenant>) -> Result<(), String>;
    /// A tenant was deleted, its data with it.
    fn delete(&self, t: &Arc<Tenant>) -> Result<(), String>;
    /// An import was staged: its data is journaled, but it is not a tenant of this server until
    /// [`TenantStore::save`] records it (activation); after a restart it is gone.
    fn staged(&self, t: &Arc<Tenant>);
    /// A staged import was abandoned: its data is dropped.
    fn unstaged(&self, t: &Arc<Tenant>);
}

/// All tenants, by id.
pub struct Registry {
    tenants: RwLock<HashMap<Arc<str>, Arc<Tenant>>>,
    settings: RwLock<TenancySettings>,
    store: RwLock<Option<Arc<dyn TenantStore>>>,
}

/// Options of TENANT.CREATE.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The hashed password (`Credential::from_password`); `None`: nobody can AUTH as the tenant.
    pub credential: Option<Credential>,
    pub maxmemory: Option<u64>,
    pub maxkeys: Option<u64>,
    pub ops: Option<u64>,
    pub maxclients: Option<u64>,
}

impl Registry {
    pub fn new(settings: TenancySettings) -> Registry {
        let reg = Registry {
            tenants: RwLock::new(HashMap::new()),
            settings: RwLock::new(settings),
            store: RwLock::new(None),
        };
        let default = Arc::new(Tenant::new(DEFAULT_TENANT, None, TenantLimits::default()));
        reg.tenants.write().insert(DEFAULT_TENANT.into(), default);
        reg
    }

    /// Makes every later tenant change durable through `store` (persistence, at startup).
    pub fn set_store(&self, store: Arc<dyn TenantStore>) {
        *self.store.write() = Some(store);
    }

    fn store(&self) -> Option<Arc<dyn TenantStore>> {
        self.store.read().clone()
    }

    /// The one function that makes a tenant's current record (credential, limits, state, moved
    /// address) durable: call it after every such change; it returns once the record is on disk
    /// (immediately when persistence is off). The cutover calls it after marking a tenant
    /// `moved` and before activating the target, so a restarted source never serves it again.
    pub fn persist(&self, t: &Arc<Tenant>) -> Result<(), TenancyError> {
        match self.store() {
            Some(s) => s.save(t).map_err(TenancyError::Persist),
            None => Ok(()),
        }
    }

    /// The hand-over of a migration's cutover, the one way a tenant becomes `moved` to another
    /// server: the tenant answers MOVED to `to` once that is durable ([`Registry::persist`]); an
    /// error leaves it served here (and the cutover fails before it activates the target).
    /// The cutover's gate is closed meanwhile, so no client sees the moved state undone.
    pub fn mark_moved(&self, tenant: &Arc<Tenant>, to: &str) -> Result<(), TenancyError> {
        let before = tenant.state();
        tenant.set_moved(to);
        if let Err(e) = self.persist(tenant) {
            tenant.set_state(before);
            return Err(e);
        }
        Ok(())
    }

    /// Undoes a hand-over whose target never activated the tenant: served here again once that
    /// is durable; on error it stays moved (a restarted source must not serve a tenant another
    /// server may be serving).
    pub fn reclaim(&self, tenant: &Arc<Tenant>) -> Result<(), TenancyError> {
        tenant.set_state(TenantState::Active);
        if let Err(e) = self.persist(tenant) {
            tenant.set_state(TenantState::Moved);
            return Err(e);
        }
        Ok(())
    }

    /// Puts a tenant read from disk at startup in the registry (replacing one of the same id,
    /// e.g. the built-in default tenant).
    pub fn restore(&self, t: Arc<Tenant>) {
        self.tenants.write().insert(t.id().into(), t);
    }

    pub fn settings(&self) -> TenancySettings {
        self.settings.read().clone()
    }

    pub fn update_settings(&self, f: impl FnOnce(&mut TenancySettings)) {
        f(&mut self.settings.write());
    }

    pub fn get(&self, id: &str) -> Option<Arc<Tenant>> {
        self.tenants.read().get(id).cloned()
    }

    pub fn default_tenant(&self) -> Arc<Tenant> {
        match self.get(DEFAULT_TENANT) {
            Some(t) => t,
            None => {
                // The default tenant is never deleted; recreate it rather than fail if it was.
                let t = Arc::new(Tenant::new(DEFAULT_TENANT, None, TenantLimits::default()));
                self.tenants
                    .write()
                    .insert(DEFAULT_TENANT.into(), t.clone());
                t
            }
        }
    }

    /// All tenants, sorted by id.
    pub fn list(&self) -> Vec<Arc<Tenant>> {
        let mut v: Vec<_> = self.tenants.read().values().cloned().collect();
        v.sort_by(|a, b| a.id().cmp(b.id()));
        v
    }

    pub fn len(&self) -> usize {
        self.tenants.read().len()
    }

    /// The data of all tenants together, in the keyspaces' own accounting (what the
    /// administrator's INFO `used_memory` reports and the server-wide `maxmemory` caps).
    pub fn used_bytes(&self) -> u64 {
        self.tenants
            .read()
            .values()
            .map(|t| t.used_bytes())
            .fold(0u64, u64::saturating_add)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn validate_id(id: &[u8]) -> Result<&str, TenancyError> {
        match std::str::from_utf8(id) {
            Ok(s) if valid_tenant_id(id) => Ok(s),
            _ => Err(TenancyError::InvalidId(
                String::from_utf8_lossy(id).into_owned(),
            )),
        }
    }

    pub fn create(&self, id: &str, opts: CreateOptions) -> Result<Arc<Tenant>, TenancyError> {
        Self::validate_id(id.as_bytes())?;
        let settings = self.settings();
        let d = settings.default_limits;
        let limits = TenantLimits {
            maxmemory: opts.maxmemory.unwrap_or(d.maxmemory),
            maxkeys: opts.maxkeys.unwrap_or(d.maxkeys),
            ops: opts.ops.unwrap_or(d.ops),
            maxclients: opts.maxclients.unwrap_or(d.maxclients),
        };
        let mut map = self.tenants.write();
        if map.contains_key(id) {
            return Err(TenancyError::AlreadyExists(id.into()));
        }
        if map.len() >= settings.max_tenants {
            return Err(TenancyError::TooManyTenants(settings.max_tenants));
        }
        let t = Arc::new(Tenant::new(id, opts.credential, limits));
        map.insert(id.into(), t.clone());
        drop(map);
        if let Some(store) = self.store()
            && let Err(e) = store.save(&t)
        {
            // Not durable: not created.
            let mut map = self.tenants.write();
            if map.get(id).is_some_and(|x| Arc::ptr_eq(x, &t)) {
                map.remove(id);
            }
            t.mark_deleted();
            return Err(TenancyError::Persist(e));
        }
        Ok(t)
    }

    /// Inserts a tenant built elsewhere (an import being staged); fails if the id is taken by a
    /// tenant that is not `Moved`. A `Moved` record (a copy left by an earlier migration away) is
    /// replaced, which is how a tenant comes back in a reverse migration.
    pub fn insert_import(&self, tenant: Arc<Tenant>) -> Result<Option<Arc<Tenant>>, TenancyError> {
        let mut map = self.tenants.write();
        if let Some(old) = map.get(tenant.id()) {
            if old.state() != TenantState::Moved {
                return Err(TenancyError::WrongState {
                    id: tenant.id().into(),
                    state: old.state().name(),
                });
            }
        } else if map.len() >= self.settings.read().max_tenants {
            return Err(TenancyError::TooManyTenants(
                self.settings.read().max_tenants,
            ));
        }
        let previous = map.insert(tenant.id().into(), tenant.clone());
        drop(map);
        if let Some(store) = self.store() {
            store.staged(&tenant);
        }
        Ok(previous)
    }

    /// Puts back a record replaced by [`Registry::insert_import`] (the import was abandoned), or
    /// removes the staged tenant when there was none.
    ///
    /// Connections bound to the staged tenant (answered TRYAGAIN while the import ran, or moved
    /// here by a cutover that was then rolled back) are sent back: the staged record becomes a
    /// `moved` record pointing at `source`. It leaves the registry all the same, so the target
    /// ends without the tenant and new connections are refused as for any unknown tenant.
    pub fn restore_after_import(
        &self,
        staged: &Arc<Tenant>,
        previous: Option<Arc<Tenant>>,
        source: &str,
    ) {
        let mut map = self.tenants.write();
        let is_staged = map.get(staged.id()).is_some_and(|t| Arc::ptr_eq(t, staged));
        if !is_staged {
            return;
        }
        staged.set_moved(source);
        staged.mark_deleted();
        match previous {
            Some(p) => {
                map.insert(p.id().into(), p);
            }
            None => {
                map.remove(staged.id());
            }
        }
        drop(map);
        if let Some(store) = self.store() {
            store.unstaged(staged);
        }
    }

    /// Deletes a tenant. Without `force`, refuses while clients are connected; `migrating` names
    /// a running migration of the tenant (checked by the caller, which owns migrations).
    pub fn delete(
        &self,
        id: &str,
        force: bool,
        migrating: Option<String>,
    ) -> Result<Arc<Tenant>, TenancyError> {
        if id == DEFAULT_TENANT {
            return Err(TenancyError::DefaultTenant("deleted"));
        }
        let mut map = self.tenants.write();
        let Some(t) = map.get(id).cloned() else {
            return Err(TenancyError::UnknownTenant(id.into()));
        };
        if !force {
            if let Some(m) = migrating {
                return Err(TenancyError::Migrating {
                    id: id.into(),
                    migration: m,
                });
            }
            let clients = t.stats.clients.load(Relaxed);
            if clients > 0 {
                return Err(TenancyError::HasClients {
                    id: id.into(),
                    clients,
                });
            }
        }
        map.remove(id);
        t.mark_deleted();
        drop(map);
        if let Some(store) = self.store() {
            // The tenant is gone from memory either way; a record that could not be removed
            // from disk would bring it back after a restart, so say so.
            store.delete(&t).map_err(TenancyError::Persist)?;
        }
        Ok(t)
    }

    /// Checks `AUTH <tenant> <password>`.
    pub fn authenticate(&self, id: &[u8], password: &[u8]) -> Result<Arc<Tenant>, TenancyError> {
        let id = std::str::from_utf8(id).map_err(|_| TenancyError::WrongPass)?;
        match self.get(id) {
            Some(t) if t.check_password(password) => Ok(t),
            _ => Err(TenancyError::WrongPass),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_delete_auth() {
        let r = Registry::new(TenancySettings {
            max_tenants: 3,
            ..Default::default()
        });
        let t = r
            .create(
                "acme",
                CreateOptions {
                    credential: Some(Credential::from_password(b"pw")),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            r.create("acme", CreateOptions::default()).unwrap_err(),
            TenancyError::AlreadyExists("acme".into())
        );
        assert!(matches!(
            r.create("bad id", CreateOptions::default()),
            Err(TenancyError::InvalidId(_))
        ));
        r.create("b", CreateOptions::default()).unwrap();
        assert_eq!(
            r.create("c", CreateOptions::default()).unwrap_err(),
            TenancyError::TooManyTenants(3)
        );
        assert!(r.authenticate(b"acme", b"pw").is_ok());
        assert_eq!(
            r.authenticate(b"acme", b"no").unwrap_err(),
            TenancyError::WrongPass
        );
        assert_eq!(
            r.authenticate(b"b", b"").unwrap_err(),
            TenancyError::WrongPass,
            "a tenant without password cannot be AUTHed into"
        );
        t.stats.clients.fetch_add(1, Relaxed);
        assert!(matches!(
            r.delete("acme", false, None),
            Err(TenancyError::HasClients { .. })
        ));
        assert!(r.delete("acme", true, None).is_ok());
        assert!(t.is_deleted());
        assert!(r.get("acme").is_none());
        assert!(r.delete(DEFAULT_TENANT, true, None).is_err());
    }
}
