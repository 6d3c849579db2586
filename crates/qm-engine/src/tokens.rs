//! API tokens: who a bearer token is ([`Principal`]), minted with 256 bits from the kernel's
//! random source, kept as a SHA-256 hash only (in memory and in the store), compared in
//! constant time, with expiry and revocation that take effect on the next request. The admin
//! token from the bootstrap file is checked the same way, against its hash.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use qm_proto::{
    FieldProblem, StoredToken as Stored, TokenCreated, TokenDoc, TokenRequest, format_rfc3339,
};
use qm_store::{Batch, Op, Store};
use sha2::{Digest, Sha256};

use crate::{EngineError, unix_ms};

/// What a token may do, as the spec's roles define it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Operator,
    Agent,
    Observer,
}

impl Role {
    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin" => Self::Admin,
            "operator" => Self::Operator,
            "agent" => Self::Agent,
            "observer" => Self::Observer,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Agent => "agent",
            Self::Observer => "observer",
        }
    }
}

/// The identity behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id (`bootstrap` for the admin token file, `anonymous` with `--auth none`).
    pub token_id: String,
    pub name: String,
    pub role: Role,
    /// The agent an `agent` token is bound to.
    pub agent: Option<String>,
    /// The pool an `agent` token is held to.
    pub pool: Option<String>,
    /// An `agent` token may spawn `<agent>.<suffix>`.
    pub spawn: bool,
}

impl Principal {
    /// The admin of the bootstrap token file (or of a daemon without auth).
    pub fn admin(token_id: &str, name: &str) -> Self {
        Self {
            token_id: token_id.to_owned(),
            name: name.to_owned(),
            role: Role::Admin,
            agent: None,
            pool: None,
            spawn: false,
        }
    }
}

#[derive(Debug)]
struct Entry {
    stored: Stored,
    hash: [u8; 32],
    principal: Arc<Principal>,
}

/// The token registry; clones share it.
#[derive(Debug, Clone)]
pub struct Tokens {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    admin: Option<[u8; 32]>,
    admin_principal: Arc<Principal>,
    by_id: RwLock<HashMap<String, Entry>>,
}

/// SHA-256 of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal in time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0_u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// `n` random bytes from the kernel, as lowercase hex.
pub fn random_hex(n: usize) -> Result<String, EngineError> {
    let mut buf = vec![0_u8; n];
    getrandom::fill(&mut buf)
        .map_err(|e| EngineError::Internal(format!("no randomness from the kernel: {e}")))?;
    Ok(qm_store::audit::hex(&buf))
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0_u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hi = char::from(chunk[0]).to_digit(16)?;
        let lo = char::from(chunk[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// The id part of `qm_<id>_<secret>`.
fn id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("qm_")?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && secret.len() == 64).then_some(id)
}

fn principal_of(doc: &TokenDoc) -> Principal {
    Principal {
        token_id: doc.id.clone(),
        name: doc.name.clone(),
        role: Role::parse(&doc.role).unwrap_or(Role::Observer),
        agent: doc.agent.clone(),
        pool: doc.pool.clone(),
        spawn: doc.spawn,
    }
}

impl Tokens {
    /// The registry over `store`'s tokens; `admin` is the SHA-256 of the bootstrap admin token.
    pub fn load(store: Store, admin: Option<[u8; 32]>) -> Result<Self, qm_store::StoreError> {
        let mut by_id = HashMap::new();
        for (id, body) in store.tokens()? {
            let Ok(stored) = qm_proto::from_json::<Stored>(&body) else {
                tracing::warn!(token = %id, "skipping an unreadable token record");
                continue;
            };
            let Some(hash) = unhex(&stored.sha256) else {
                continue;
            };
            let principal = Arc::new(principal_of(&stored.doc));
            by_id.insert(
                id,
                Entry {
                    stored,
                    hash,
                    principal,
                },
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                admin,
                admin_principal: Arc::new(Principal::admin("bootstrap", "admin-token-file")),
                by_id: RwLock::new(by_id),
            }),
        })
    }

    /// Who `token` is, if it is a live token: known, unexpired and not revoked.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Principal>> {
        let hash = digest(token);
        if let Some(id) = id_of(token)
            && let Ok(map) = self.inner.by_id.read()
            && let Some(e) = map.get(id)
        {
            if !same(&e.hash, &hash) {
                return None;
            }
            if e.stored.expires_ms.is_some_and(|x| unix_ms() >= x) {
                return None;
            }
            return Some(Arc::clone(&e.principal));
        }
        match &self.inner.admin {
            Some(admin) if same(admin, &hash) => Some(Arc::clone(&self.inner.admin_principal)),
            _ => None,
        }
    }

    /// Every token, by id; never a secret.
    pub fn list(&self) -> Vec<TokenDoc> {
        let Ok(map) = self.inner.by_id.read() else {
            return Vec::new();
        };
        let mut items: Vec<TokenDoc> = map.values().map(|e| e.stored.doc.clone()).collect();
        items.sort_by(|a, b| a.id.cmp(&b.id));
        items
    }

    /// Creates a token; answers once its record is durable, with the secret (shown once).
    pub async fn create(
        &self,
        req: &TokenRequest,
        managed: bool,
    ) -> Result<TokenCreated, EngineError> {
        let errors: Vec<FieldProblem> = req.validate();
        if !errors.is_empty() {
            return Err(EngineError::Invalid(errors));
        }
        let id = random_hex(8)?;
        let secret = random_hex(32)?;
        let token = format!("qm_{id}_{secret}");
        let hash = digest(&token);
        let now = unix_ms();
        let expires_ms = req
            .ttl_s
            .map(|t| now.saturating_add((t * 1000.0).round() as u64));
        let doc = TokenDoc {
            id: id.clone(),
            name: req.name.clone(),
            role: req.role.clone(),
            agent: req.agent.clone(),
            pool: req.pool.clone(),
            spawn: req.spawn,
            created_at: format_rfc3339(now),
            expires_at: expires_ms.map(format_rfc3339),
            managed,
        };
        let stored = Stored {
            doc: doc.clone(),
            sha256: qm_store::audit::hex(&hash),
            created_ms: now,
            expires_ms,
        };
        let mut batch = Batch::default();
        batch.push(Op::PutToken {
            id: id.clone(),
            body: qm_proto::to_json(&stored),
        });
        crate::audit::attach(&mut batch);
        commit(&self.inner.store, batch).await?;
        let principal = Arc::new(principal_of(&doc));
        if let Ok(mut map) = self.inner.by_id.write() {
            map.insert(
                id,
                Entry {
                    stored,
                    hash,
                    principal,
                },
            );
        }
        Ok(TokenCreated { doc, token })
    }

    /// Revokes token `id` (durably, then at once for every request after); None when unknown.
    pub async fn revoke(&self, id: &str) -> Result<Option<TokenDoc>, EngineError> {
        let known = self
            .inner
            .by_id
            .read()
            .ok()
            .and_then(|m| m.get(id).map(|e| e.stored.doc.clone()));
        let Some(doc) = known else {
            return Ok(None);
        };
        // Refused at once, even before the deletion is durable.
        let removed = self.inner.by_id.write().ok().and_then(|mut m| m.remove(id));
        let mut batch = Batch::default();
        batch.push(Op::DeleteToken { id: id.to_owned() });
        crate::audit::attach(&mut batch);
        if let Err(e) = commit(&self.inner.store, batch).await {
            // Not durable: the token stays as it was.
            if let (Some(entry), Ok(mut m)) = (removed, self.inner.by_id.write()) {
                m.insert(id.to_owned(), entry);
            }
            return Err(e);
        }
        Ok(Some(doc))
    }

    /// Revokes every daemon-minted token bound to `agent` (its process ended).
    pub async fn revoke_managed(&self, agent: &str) {
        let ids: Vec<String> = self
            .inner
            .by_id
            .read()
            .map(|m| {
                m.values()
                    .filter(|e| {
                        e.stored.doc.managed && e.stored.doc.agent.as_deref() == Some(agent)
                    })
                    .map(|e| e.stored.doc.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            if let Err(e) = self.revoke(&id).await {
                tracing::warn!(%e, agent, "cannot revoke an ended agent's token");
            }
        }
    }
}

async fn commit(store: &Store, batch: Batch) -> Result<(), EngineError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let marked = crate::audit::on_commit();
    store.commit(
        batch,
        Box::new(move |r| {
            marked(r.is_ok());
            let _ = tx.send(r);
        }),
    );
    rx.await
        .map_err(|_| EngineError::Stopped)?
        .map_err(EngineError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_read_from_the_token_shape() {
        let secret = "a".repeat(64);
        assert_eq!(id_of(&format!("qm_abc_{secret}")), Some("abc"));
        assert_eq!(id_of("qm_abc_short"), None);
        assert_eq!(id_of("bearer"), None);
    }

    #[test]
    fn comparison_is_exact() {
        let a = digest("one");
        assert!(same(&a, &digest("one")));
        assert!(!same(&a, &digest("two")));
        assert_eq!(unhex(&qm_store::audit::hex(&a)), Some(a));
        assert_eq!(unhex("zz"), None);
    }
}
