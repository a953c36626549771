//! The `token_command` token source: a helper program (pizauth, oama, …)
//! prints an access token on stdout. A token is cached until it is
//! rejected, or for at most [`COMMAND_TOKEN_TTL`] since helpers refresh on
//! their own schedule; the command runs for one caller at a time.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

use crate::auth::token::{BearerSource, Token, TokenError, TokenFuture, TokenSource};
use crate::secret::Secret;

/// How long a token from a command is reused before the command runs again.
pub const COMMAND_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);
/// How long the command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest token accepted from a command.
const MAX_TOKEN: usize = 16 * 1024;

#[derive(Debug)]
pub struct CommandSource {
    account: String,
    command: String,
    timeout: Duration,
    cached: Mutex<Option<(Secret, Instant)>>,
    runs: std::sync::atomic::AtomicU64,
}

impl CommandSource {
    /// How many times the command ran (for tests and `status`).
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn token(&self) -> Result<Token, TokenError> {
        // Holding the lock while the command runs is the single-flight: the
        // others wait and then find the cached token.
        let mut cached = self.cached.lock().await;
        if let Some((t, at)) = cached.as_ref() {
            if at.elapsed() < COMMAND_TOKEN_TTL {
                return Ok(Token {
                    secret: t.clone(),
                    fresh: false,
                });
            }
        }
        let t = self.run().await?;
        *cached = Some((t.clone(), Instant::now()));
        Ok(Token {
            secret: t,
            fresh: true,
        })
    }

    async fn invalidate(&self, rejected: &Secret) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|(t, _)| t == rejected) {
            *cached = None;
        }
    }

    async fn run(&self) -> Result<Secret, TokenError> {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let account = self.account.clone();
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TokenError::Spawn {
                account: account.clone(),
                reason: e.to_string(),
            })?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let work = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut so = (&mut stdout).take(MAX_TOKEN as u64 + 1);
            let mut se = (&mut stderr).take(4096);
            let (r1, r2) = tokio::join!(so.read_to_end(&mut out), se.read_to_end(&mut err));
            r1.and(r2)?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out, err))
        };
        let (status, out, err) = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                return Err(TokenError::Spawn {
                    account,
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                return Err(TokenError::Timeout {
                    account,
                    secs: self.timeout.as_secs(),
                })
            }
        };
        if !status.success() {
            // stderr may help the user; log its first line at debug level only
            // (a helper could print a token there by mistake).
            let first = String::from_utf8_lossy(&err)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            tracing::debug!(account = %account, stderr = %first, "token_command failed");
            return Err(TokenError::Failed {
                account,
                status: status.to_string(),
            });
        }
        let text = String::from_utf8_lossy(&out);
        let token = text.trim();
        if token.is_empty() || token.len() > MAX_TOKEN || token.contains(char::is_whitespace) {
            return Err(TokenError::Empty { account });
        }
        tracing::debug!(account = %account, "token_command gave a token");
        Ok(Secret::new(token))
    }
}

impl CommandSource {
    /// A source that runs `command` (through `/bin/sh -c`) for `account`.
    pub fn new(account: &str, command: &str) -> Arc<CommandSource> {
        Arc::new(CommandSource {
            account: account.to_owned(),
            command: command.to_owned(),
            timeout: COMMAND_TIMEOUT,
            cached: Mutex::new(None),
            runs: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The source as a [`TokenSource`].
    pub fn source(account: &str, command: &str) -> TokenSource {
        TokenSource::new(CommandSource::new(account, command))
    }
}

impl BearerSource for CommandSource {
    fn token(&self) -> TokenFuture<'_, Result<Token, TokenError>> {
        Box::pin(CommandSource::token(self))
    }

    fn invalidate<'a>(&'a self, rejected: &'a Secret) -> TokenFuture<'a, ()> {
        Box::pin(CommandSource::invalidate(self, rejected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn command_token_cached_and_invalidated() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("n");
        let cmd = format!("echo x >> {0}; echo tok-$(wc -l < {0})", counter.display());
        let src = CommandSource::source("a", &cmd);
        let t1 = src.token().await.unwrap();
        assert!(t1.fresh);
        assert_eq!(t1.secret.expose(), "tok-1");
        let t2 = src.token().await.unwrap();
        assert!(!t2.fresh);
        assert_eq!(t2.secret.expose(), "tok-1");
        src.invalidate(&Secret::new("other")).await;
        assert!(!src.token().await.unwrap().fresh);
        src.invalidate(&t1.secret).await;
        let t3 = src.token().await.unwrap();
        assert!(t3.fresh);
        assert_eq!(t3.secret.expose(), "tok-2");
    }

    #[tokio::test]
    async fn concurrent_callers_run_the_command_once() {
        let c = CommandSource::new("a", "sleep 0.2; echo tok");
        let src = TokenSource::new(c.clone());
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let s = src.clone();
                tokio::spawn(async move { s.token().await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().secret.expose(), "tok");
        }
        assert_eq!(c.runs(), 1);
    }

    #[tokio::test]
    async fn failures_are_typed_and_secret_free() {
        let e = CommandSource::source("a", "echo leaked-secret >&2; exit 3")
            .token()
            .await
            .unwrap_err();
        assert!(matches!(e, TokenError::Failed { .. }));
        assert!(!e.to_string().contains("leaked-secret"));
        let e = CommandSource::source("a", "true")
            .token()
            .await
            .unwrap_err();
        assert!(matches!(e, TokenError::Empty { .. }));
    }
}
