//! Where a local user's mail goes after the SMTP session accepted it: the one
//! `Route` interface between the session and the destinations (capture now;
//! accounts and pools plug in here).
//!
//! A route opens a transaction at MAIL FROM, gives a verdict per RCPT, and a
//! verdict for the message at the end of DATA. The session relays those
//! verdicts to the client unchanged, so nothing is acknowledged that the
//! destination did not accept.

use std::sync::Arc;

use crate::capture::{self, Capture};
use crate::config::SendVia;
use crate::smtp::codec::{MailParams, Path, Reply};

/// A destination for a user's mail.
#[derive(Debug, Clone)]
pub enum Route {
    Capture(Arc<Capture>),
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
}

/// Maps a user's `send_via` to a route.
#[derive(Debug)]
pub struct Router {
    capture: Arc<Capture>,
}

impl Router {
    pub fn new(capture: Arc<Capture>) -> Router {
        Router { capture }
    }

    pub fn route(&self, via: &SendVia) -> Option<Route> {
        match via {
            SendVia::Capture => Some(Route::Capture(self.capture.clone())),
            SendVia::Account(_) | SendVia::Pool(_) => None,
        }
    }
}

impl Route {
    /// MAIL FROM: open a transaction, or say why not.
    pub async fn open(&self, _info: &SessionInfo, from: &Path, _params: &MailParams) -> Result<Transaction, Reply> {
        match self {
            Route::Capture(sink) => Ok(Transaction::Capture {
                sink: sink.clone(),
                from: from.clone(),
                rcpts: Vec::new(),
            }),
        }
    }
}

impl Transaction {
    /// MAIL FROM's reply once the transaction is open.
    pub fn mail_reply(&self) -> Reply {
        match self {
            Transaction::Capture { .. } => Reply::new(250, "2.1.0", "Sender OK (capture)"),
        }
    }

    /// RCPT TO: the destination's verdict for this recipient.
    pub async fn rcpt(&mut self, to: &Path) -> Reply {
        match self {
            Transaction::Capture { rcpts, .. } => {
                rcpts.push(to.clone());
                Reply::new(250, "2.1.5", "Recipient OK (capture)")
            }
        }
    }

    /// End of DATA: the destination's verdict for the whole message.
    pub async fn data(&mut self, info: &SessionInfo, message: &[u8]) -> Reply {
        match self {
            Transaction::Capture { sink, from, rcpts } => {
                let env = capture::Envelope {
                    user: &info.user,
                    mail_from: from,
                    rcpts,
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
        }
    }

    /// The client reset or abandoned the transaction.
    pub async fn abort(self) {}
}
