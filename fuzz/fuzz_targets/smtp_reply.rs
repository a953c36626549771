//! `smtp_reply`: the parser for upstream SMTP replies, multi-line included.
//!
//! Input: what an upstream server sends (one or more replies).
//! Properties, for every reply parsed off the front of the stream:
//! - `Done(r, n)`: `n` is within the input, the reply ends at a line end, the
//!   code is 200..=599 and every line has it; every shorter prefix of those `n`
//!   bytes is `Incomplete`, and bytes after them do not change the result;
//! - re-encoding `r` (`Reply::encode`) and parsing gives `Done(r, len)` again,
//!   whenever each encoded line fits `MAX_REPLY_LINE` (an encoded line can be
//!   longer than the one received: a bare LF becomes CRLF, `250` alone becomes
//!   `250 `, and invalid UTF-8 becomes U+FFFD);
//! - errors are final: parsing more of the same stream gives the same error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::smtp::codec::{parse_reply, ReplyParse, MAX_REPLY_LINE};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // At most a few replies per input keep the prefix checks cheap.
    for _ in 0..64 {
        match parse_reply(rest) {
            Ok(ReplyParse::Incomplete) => break,
            Err(e) => {
                // A longer stream cannot repair a broken front.
                let mut more = rest.to_vec();
                more.extend_from_slice(b"250 ok\r\n");
                assert_eq!(parse_reply(&more), Err(e), "error changed with more input");
                break;
            }
            Ok(ReplyParse::Done(r, n)) => {
                assert!(n > 0 && n <= rest.len());
                assert_eq!(rest[n - 1], b'\n', "a reply ends with its line end");
                assert!((200..=599).contains(&r.code), "code {}", r.code);
                assert!(!r.lines.is_empty());
                let code = r.code.to_string();
                for line in rest[..n].split_inclusive(|&b| b == b'\n') {
                    assert!(line.starts_with(code.as_bytes()), "a line without the code");
                }
                // Exactly these n bytes: a shorter prefix is incomplete...
                assert_eq!(parse_reply(&rest[..n - 1]), Ok(ReplyParse::Incomplete));
                assert_eq!(parse_reply(&rest[..n / 2]), Ok(ReplyParse::Incomplete));
                // ... and they alone give the same reply.
                assert_eq!(parse_reply(&rest[..n]), Ok(ReplyParse::Done(r.clone(), n)));

                let wire = r.to_bytes();
                let fits = wire
                    .split_inclusive(|&b| b == b'\n')
                    .all(|l| l.len() <= MAX_REPLY_LINE);
                if fits {
                    assert_eq!(
                        parse_reply(&wire),
                        Ok(ReplyParse::Done(r.clone(), wire.len())),
                        "re-encoded as {:?}",
                        String::from_utf8_lossy(&wire)
                    );
                }
                rest = &rest[n..];
            }
        }
    }
});
