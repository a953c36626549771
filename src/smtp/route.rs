//! Where a local user's mail goes after the SMTP session accepted it: the one
//! `Route` interface between the session and the destinations (capture, a
//! single account; pools plug in here too).
//!
//! A route opens a transaction at MAIL FROM, gives a verdict per RCPT, and a
//! verdict for the message at the end of DATA. The session relays those
//! verdicts to the client, so nothing is acknowledged that the destination
//! did not accept.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::capture::{self, Capture};
use crate::config::{Config, SendVia};
use crate::pool::Pools;
use crate::smtp::codec::{MailParams, Path, Reply};
use crate::smtp::relay::{DirectTransaction, PoolRoute, PoolTransaction};
use crate::smtp::upstream::AccountRelay;

/// A destination for a user's mail.
#[derive(Debug, Clone)]
pub enum Route {
    Capture(Arc<Capture>),
    Account(Arc<AccountRelay>, Arc<Pools>),
    Pool(Arc<PoolRoute>),
}

/// Facts about the session that a route may record or use.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub user: String,
    pub helo: String,
    pub peer: std::net::SocketAddr,
}

/// An open mail transaction on a route.
#[derive(Debug)]
pub enum Transaction {
    Capture {
        sink: Arc<Capture>,
        from: Path,
        rcpts: Vec<Path>,
    },
    Relay(Box<DirectTransaction>),
    Pool(Box<PoolTransaction>),
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Maps a user's `send_via` to a route.
#[derive(Debug)]
pub struct Router {
    capture: Arc<Capture>,
    accounts: BTreeMap<String, Arc<AccountRelay>>,
    pools: Option<Arc<Pools>>,
    pool_routes: BTreeMap<String, Arc<PoolRoute>>,
}

impl Router {
    pub fn new(config: &Config, capture: Arc<Capture>) -> Result<Router, RouterError> {
        Router::with_tokens(config, capture, None)
    }

    /// Like [`Router::new`], with the token manager that serves built-in
    /// OAuth accounts (accounts that need it are left out without one).
    pub fn with_tokens(
        config: &Config,
        capture: Arc<Capture>,
        tokens: Option<&Arc<crate::auth::oauth::TokenManager>>,
    ) -> Result<Router, RouterError> {
        let mut accounts = BTreeMap::new();
        let board = crate::gate::Board::new(config.data_dir.join(crate::gate::BOARD_FILE));
        for a in config.accounts.values() {
            if let Some(relay) = AccountRelay::from_account(
                a,
                &config.hostname,
                &config.limits,
                tokens,
                Some(&board),
            )? {
                accounts.insert(a.name.clone(), Arc::new(relay));
            }
        }
        Ok(Router {
            capture,
            accounts,
            pools: None,
            pool_routes: BTreeMap::new(),
        })
    }

    /// Attach the quota counters: account sends are counted and pools routed.
    pub fn set_pools(&mut self, config: &Config, pools: Arc<Pools>) {
        self.pool_routes.clear();
        for (name, p) in &config.pools {
            let members: BTreeMap<_, _> = config
                .pool_members(p)
                .filter_map(|a| {
                    self.accounts
                        .get(&a.name)
                        .map(|r| (a.name.clone(), r.clone()))
                })
                .collect();
            if members.len() < p.accounts.len() {
                tracing::warn!(pool = %name, "some pool accounts are disabled and left out");
            }
            if members.is_empty() {
                continue;
            }
            self.pool_routes.insert(
                name.clone(),
                Arc::new(PoolRoute {
                    name: name.clone(),
                    pools: pools.clone(),
                    members,
                    from_policy: p.from_policy,
                    trace_header: config.trace_header,
                }),
            );
        }
        self.pools = Some(pools);
    }

    pub fn pools(&self) -> Option<&Arc<Pools>> {
        self.pools.as_ref()
    }

    pub fn account(&self, name: &str) -> Option<&Arc<AccountRelay>> {
        self.accounts.get(name)
    }

    pub fn route(&self, via: &SendVia) -> Option<Route> {
        match via {
            SendVia::Capture => Some(Route::Capture(self.capture.clone())),
            SendVia::Account(a) => {
                let pools = self.pools.clone()?;
                self.accounts
                    .get(a)
                    .map(|r| Route::Account(r.clone(), pools))
            }
            SendVia::Pool(p) => self.pool_routes.get(p).map(|r| Route::Pool(r.clone())),
        }
    }
}

impl Route {
    /// MAIL FROM: open a transaction (with the reply for the client), or
    /// say why not.
    pub async fn open(
        &self,
        _info: &SessionInfo,
        from: &Path,
        params: &MailParams,
    ) -> Result<(Transaction, Reply), Reply> {
        match self {
            Route::Capture(sink) => Ok((
                Transaction::Capture {
                    sink: sink.clone(),
                    from: from.clone(),
                    rcpts: Vec::new(),
                },
                Reply::new(250, "2.1.0", "Sender OK (capture)"),
            )),
            Route::Account(relay, pools) => {
                let (tx, reply) =
                    DirectTransaction::open(relay.clone(), pools.clone(), from, params).await?;
                Ok((Transaction::Relay(Box::new(tx)), reply))
            }
            Route::Pool(route) => {
                let (tx, reply) = PoolTransaction::open(route.clone(), from, params).await?;
                Ok((Transaction::Pool(Box::new(tx)), reply))
            }
        }
    }
}

impl Transaction {
    /// RCPT TO: the destination's verdict for this recipient.
    pub async fn rcpt(&mut self, to: &Path) -> Reply {
        match self {
            Transaction::Capture { rcpts, .. } => {
                rcpts.push(to.clone());
                Reply::new(250, "2.1.5", "Recipient OK (capture)")
            }
            Transaction::Relay(tx) => tx.rcpt(to).await,
            Transaction::Pool(tx) => tx.rcpt(to).await,
        }
    }

    /// End of DATA: the destination's verdict for the whole message.
    pub async fn data(self, info: &SessionInfo, message: &[u8]) -> Reply {
        match self {
            Transaction::Capture { sink, from, rcpts } => {
                let env = capture::Envelope {
                    user: &info.user,
                    mail_from: &from,
                    rcpts: &rcpts,
                    helo: &info.helo,
                    peer: info.peer,
                };
                match sink.store(&env, message).await {
                    Ok(id) => {
                        tracing::info!(id = %id, rcpts = rcpts.len(), size = message.len(), "message captured");
                        Reply::new(250, "2.0.0", format!("Ok: captured as {id}"))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, dir = %sink.dir().display(), "capture failed");
                        Reply::new(451, "4.3.0", "Could not store the message; try again later")
                    }
                }
            }
            Transaction::Relay(tx) => tx.data(message).await,
            Transaction::Pool(tx) => tx.data(message).await,
        }
    }

    /// The client reset or abandoned the transaction.
    pub fn abort(self) {
        match self {
            Transaction::Capture { .. } => {}
            Transaction::Relay(tx) => tx.abort(),
            Transaction::Pool(tx) => tx.abort(),
        }
    }
}
