//! The sandbox's POP3 server: after the local login (the proxy's own
//! AUTHORIZATION state), the user's inbox of captured mail is the maildrop
//! (RFC 1939 TRANSACTION and UPDATE states): STAT, LIST, UIDL, RETR, TOP,
//! DELE, RSET, NOOP, CAPA, QUIT. The maildrop is fixed at login, as RFC
//! 1939 has it; deletions happen at QUIT. RETR gives the message exactly as
//! it was submitted (without Postern's `X-Postern-*` lines).

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use super::codec::{self, Command};
use super::proxy::{End, Session};
use crate::sandbox::index::Search;

/// One message of the maildrop.
struct Drop {
    id: String,
    size: u64,
    deleted: bool,
}

/// `msg` as RFC 1939 numbers it (1-based), if it exists and is not deleted.
fn pick<'a>(drops: &'a [Drop], arg: &str) -> Result<(usize, &'a Drop), &'static str> {
    let n: usize = arg
        .split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or("Invalid message number")?;
    match drops.get(n.wrapping_sub(1)) {
        Some(d) if !d.deleted => Ok((n, d)),
        Some(_) => Err("Message already deleted"),
        None => Err("No such message"),
    }
}

/// Dot-stuffed, CRLF-terminated lines and the final dot (RFC 1939 §3);
/// with `lines`, only the headers, the blank line and that many body lines.
fn stuffed(raw: &[u8], lines: Option<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 50 + 8);
    let mut in_body = false;
    let mut body_lines = 0;
    for line in raw.split_inclusive(|b| *b == b'\n') {
        if in_body && lines.is_some_and(|max| body_lines >= max) {
            break;
        }
        let content = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if content.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
        if in_body {
            body_lines += 1;
        } else if content.is_empty() {
            in_body = true;
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// The TRANSACTION state over `inbox`; returns how the session ended.
    pub(super) async fn mailbox(&mut self, inbox: &str) -> End {
        match self.serve_mailbox(inbox).await {
            Ok(end) | Err(end) => end,
        }
    }

    async fn serve_mailbox(&mut self, inbox: &str) -> Result<End, End> {
        let Some(capture) = self.ctx.sandbox.clone() else {
            return Err(End::IoError);
        };
        let mut drops: Vec<Drop> = match capture.index().mailbox(inbox.to_owned()).await {
            Ok(v) => v
                .into_iter()
                .map(|(id, size)| Drop {
                    id,
                    size,
                    deleted: false,
                })
                .collect(),
            Err(e) => {
                warn!(error = %e, "sandbox POP3: the inbox could not be read");
                self.err(Some("SYS/TEMP"), "The inbox cannot be read now, try again")
                    .await?;
                return Ok(End::IoError);
            }
        };
        let total: u64 = drops.iter().map(|d| d.size).sum();
        self.ok(&format!(
            "Logged in: inbox {} has {} messages ({total} octets)",
            crate::text::sanitize(inbox, 100),
            drops.len()
        ))
        .await?;
        loop {
            let line = self.next_line(codec::MAX_COMMAND).await?;
            let cmd = match codec::parse_command(&line) {
                Ok(c) => c,
                Err(e) => {
                    self.bad(None, &e.to_string()).await?;
                    continue;
                }
            };
            match cmd {
                Command::Quit => {
                    let gone: Vec<String> = drops
                        .iter()
                        .filter(|d| d.deleted)
                        .map(|d| d.id.clone())
                        .collect();
                    let n = gone.len();
                    if n > 0 {
                        if let Err(e) = capture.delete(gone).await {
                            warn!(error = %e, "sandbox POP3: deleting at QUIT failed");
                            self.err(Some("SYS/TEMP"), "Some deleted messages were not removed")
                                .await?;
                            return Ok(End::Quit);
                        }
                        info!(inbox, deleted = n, "sandbox POP3: messages deleted at QUIT");
                    }
                    self.ok(&format!(
                        "Postern sandbox signing off ({n} messages deleted)"
                    ))
                    .await?;
                    return Ok(End::Quit);
                }
                Command::Noop => self.ok("").await?,
                Command::Rset => {
                    for d in &mut drops {
                        d.deleted = false;
                    }
                    self.ok("Maildrop reset").await?;
                }
                Command::Capa => {
                    let caps: Vec<String> = [
                        "TOP",
                        "UIDL",
                        "USER",
                        "RESP-CODES",
                        "PIPELINING",
                        "IMPLEMENTATION Postern sandbox",
                    ]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
                    let mut out = b"+OK Capability list follows\r\n".to_vec();
                    out.extend_from_slice(&codec::encode_multiline(&caps));
                    self.write(&out).await?;
                }
                Command::Other { verb, args } => {
                    self.transaction(&capture, &mut drops, &verb, &args).await?;
                }
                _ => {
                    self.bad(None, "Already logged in").await?;
                }
            }
        }
    }

    async fn transaction(
        &mut self,
        capture: &crate::capture::Capture,
        drops: &mut [Drop],
        verb: &str,
        args: &str,
    ) -> Result<(), End> {
        let live = || drops.iter().filter(|d| !d.deleted);
        match verb {
            "STAT" => {
                let (n, size) = live().fold((0, 0), |(n, s), d| (n + 1, s + d.size));
                self.ok(&format!("{n} {size}")).await
            }
            "LIST" | "UIDL" => {
                let uidl = verb == "UIDL";
                let item = |n: usize, d: &Drop| {
                    if uidl {
                        format!("{n} {}", d.id)
                    } else {
                        format!("{n} {}", d.size)
                    }
                };
                if !args.trim().is_empty() {
                    return match pick(drops, args) {
                        Ok((n, d)) => {
                            let l = item(n, d);
                            self.ok(&l).await
                        }
                        Err(e) => self.err(None, e).await,
                    };
                }
                let lines: Vec<String> = drops
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| !d.deleted)
                    .map(|(i, d)| item(i + 1, d))
                    .collect();
                let mut out = format!("+OK {} messages\r\n", lines.len()).into_bytes();
                out.extend_from_slice(&codec::encode_multiline(&lines));
                self.write(&out).await
            }
            "RETR" | "TOP" => {
                let (id, size) = match pick(drops, args) {
                    Ok((_, d)) => (d.id.clone(), d.size),
                    Err(e) => return self.err(None, e).await,
                };
                let top = if verb == "TOP" {
                    match args.split_whitespace().nth(1).and_then(|n| n.parse().ok()) {
                        Some(n) => Some(n),
                        None => return self.bad(None, "syntax: TOP msg n").await,
                    }
                } else {
                    None
                };
                let raw = match capture.read(&id).await {
                    Ok(Some((_, raw))) => raw,
                    Ok(None) => return self.err(None, "The message was deleted meanwhile").await,
                    Err(e) => {
                        warn!(error = %e, "sandbox POP3: reading a message failed");
                        return self
                            .err(Some("SYS/TEMP"), "The message cannot be read now")
                            .await;
                    }
                };
                let body = tokio::task::spawn_blocking(move || stuffed(&raw, top))
                    .await
                    .map_err(|_| End::IoError)?;
                let mut out = format!("+OK {size} octets\r\n").into_bytes();
                out.extend_from_slice(&body);
                self.write(&out).await?;
                if top.is_none() {
                    let _ = capture
                        .index()
                        .set_read(vec![id], None, Search::default(), true)
                        .await;
                }
                Ok(())
            }
            "DELE" => match pick(drops, args) {
                Ok((n, _)) => {
                    drops[n - 1].deleted = true;
                    self.ok(&format!("Message {n} deleted")).await
                }
                Err(e) => self.err(None, e).await,
            },
            _ => self.bad(None, "Unknown command").await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stuffed;

    #[test]
    fn stuffing_and_top() {
        let raw = b"Subject: x\r\nFrom: a@b\r\n\r\n.dot\nline2\r\nline3\r\n";
        assert_eq!(
            stuffed(raw, None),
            b"Subject: x\r\nFrom: a@b\r\n\r\n..dot\r\nline2\r\nline3\r\n.\r\n".to_vec()
        );
        assert_eq!(
            stuffed(raw, Some(1)),
            b"Subject: x\r\nFrom: a@b\r\n\r\n..dot\r\n.\r\n".to_vec()
        );
        assert_eq!(
            stuffed(raw, Some(0)),
            b"Subject: x\r\nFrom: a@b\r\n\r\n.\r\n".to_vec()
        );
        assert_eq!(stuffed(b"no end", None), b"no end\r\n.\r\n".to_vec());
    }
}
