//! The IMAP codec's tests: known-answer tables (input, expected value,
//! bytes left) for the framer, the parsers and the encoders, and the
//! properties (any chunking frames alike; decode(encode(x)) == x). Shared
//! helpers here; one file per part.

use super::*;
use bytes::BytesMut;
use proptest::prelude::*;

use super::encode::{clean_continue_text, clean_status_text};
use crate::secret::Secret;

fn t(s: &str) -> Option<Tag> {
    Some(Tag::new(s).expect("valid tag"))
}

fn tag(s: &str) -> Tag {
    Tag::new(s).expect("valid tag")
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// What the framer yielded, with frame bytes visible (tests only).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    F(Vec<u8>),
    Cont(usize),
    E(FrameError),
}

fn f(b: &[u8]) -> Ev {
    Ev::F(b.to_vec())
}

/// Decodes until `Incomplete` or a fatal error; true if stopped.
fn drain(framer: &mut Framer, src: &mut BytesMut, events: &mut Vec<Ev>) -> bool {
    loop {
        match framer.decode(src) {
            Ok(Decoded::Incomplete) => return false,
            Ok(Decoded::NeedContinuation { size, .. }) => events.push(Ev::Cont(size)),
            Ok(Decoded::Frame(frame)) => events.push(Ev::F(frame.as_bytes().to_vec())),
            Err(e) => {
                let fatal = e.is_fatal();
                events.push(Ev::E(e));
                if fatal {
                    return true;
                }
            }
        }
    }
}

/// (side, limits, input, events, bytes left in the buffer)
type FrameCase = (Side, Limits, &'static [u8], Vec<Ev>, &'static [u8]);
/// (input, parsed first frame, bytes left for the next frame)
type CommandCase = (&'static [u8], Result<Command, ParseError>, &'static [u8]);
type ResponseCase = (&'static [u8], Result<Response, ParseError>, &'static [u8]);
type EncodeCase = (
    CommandKind,
    LiteralSupport,
    Result<Vec<Vec<u8>>, EncodeError>,
);

const SMALL: Limits = Limits {
    max_line: 16,
    max_literal: 8,
    max_nonsync_literal: 4,
    max_frame: 32,
};

#[derive(Clone, Copy, Debug)]
enum Side {
    Cmd,
    Resp,
}

fn framer(side: Side, limits: Limits) -> Framer {
    match side {
        Side::Cmd => Framer::for_commands(limits),
        Side::Resp => Framer::for_responses(limits),
    }
}

fn ltl(tag: Option<Tag>, size: u64, limit: usize, fatal: bool) -> Ev {
    Ev::E(FrameError::LiteralTooLarge {
        tag,
        size,
        limit,
        fatal,
    })
}

fn long(tag: Option<Tag>, limit: usize) -> Ev {
    Ev::E(FrameError::LineTooLong { tag, limit })
}

mod commands;
mod encoders;
mod frames;
mod props;
mod responses;

fn auth_response_cases() -> Vec<(&'static [u8], Result<AuthResponse, ParseError>)> {
    use crate::imap::codec::ParseErrorKind as E;
    vec![
        (
            b"AGFsaWNl\r\n",
            Ok(AuthResponse::Data(Secret::new("AGFsaWNl"))),
        ),
        (b"YQ==\n", Ok(AuthResponse::Data(Secret::new("YQ==")))),
        (b"\r\n", Ok(AuthResponse::Data(Secret::new("")))),
        (b"*\r\n", Ok(AuthResponse::Cancel)),
        (b"=\r\n", Err(perr(None, E::Base64))),
        (b"abc\r\n", Err(perr(None, E::Base64))),
        (b"* \r\n", Err(perr(None, E::Base64))),
        (b"YW Jj\r\n", Err(perr(None, E::Base64))),
        (b"YWJj", Err(perr(None, E::LineEnd))),
        (b"YWJj\r\nx", Err(perr(None, E::Trailing))),
    ]
}

fn auth(mechanism: &str, initial: Option<&str>) -> CommandKind {
    CommandKind::Authenticate {
        mechanism: mechanism.to_owned(),
        initial: initial.map(Secret::new),
    }
}

fn command_cases() -> Vec<CommandCase> {
    use crate::imap::codec::CommandKind as K;
    use crate::imap::codec::ParseErrorKind as E;
    let a = || t("a");
    #[rustfmt::skip]
    let cases: Vec<CommandCase> = vec![
        (b"a CAPABILITY\r\n", cmd("a", K::Capability), b""),
        (b"A1 capability\r\nb NOOP\r\n", cmd("A1", K::Capability), b"b NOOP\r\n"),
        (b"a Noop\r\n", cmd("a", K::Noop), b""),
        (b"a NOOP\n", cmd("a", K::Noop), b""),
        (b"a LOGOUT\r\n", cmd("a", K::Logout), b""),
        (b"a StartTLS\r\nleft", cmd("a", K::StartTls), b"left"),
        (b"a]b.c-1 NOOP\r\n", cmd("a]b.c-1", K::Noop), b""),
        (b"a LOGIN alice secret\r\n", cmd("a", login("alice", "secret")), b""),
        (b"a login alice]x pw\r\n", cmd("a", login("alice]x", "pw")), b""),
        (b"a LOGIN \"al ice\" \"p\\\"w\\\\d\"\r\n", cmd("a", login("al ice", "p\"w\\d")), b""),
        (b"a LOGIN \"\" \"\"\r\n", cmd("a", login("", "")), b""),
        (b"a LOGIN {5}\r\nalice {6+}\r\nsecret\r\n", cmd("a", login("alice", "secret")), b""),
        (b"a LOGIN {0}\r\n {2}\r\n\r\n\r\n", cmd("a", login("", "\r\n")), b""),
        (b"a LOGIN \"\xc3\xbc\" {2}\r\n\xc3\xa9\r\n", cmd("a", login("\u{fc}", "\u{e9}")), b""),
        (b"a AUTHENTICATE PLAIN\r\n", cmd("a", auth("PLAIN", None)), b""),
        (b"a authenticate plain AGFsaWNlAHNlY3JldA==\r\n", cmd("a", auth("PLAIN", Some("AGFsaWNlAHNlY3JldA=="))), b""),
        (b"a AUTHENTICATE XOAUTH2 =\r\n", cmd("a", auth("XOAUTH2", Some(""))), b""),
        (b"a AUTHENTICATE PLAIN YWJj\r\n", cmd("a", auth("PLAIN", Some("YWJj"))), b""),
        (b"a ID NIL\r\n", cmd("a", K::Id(None)), b""),
        (b"a id nil\r\n", cmd("a", K::Id(None)), b""),
        (b"a ID ()\r\n", cmd("a", id(&[])), b""),
        (b"a ID (\"name\" \"sodr\" \"version\" NIL)\r\n", cmd("a", id(&[("name", Some("sodr")), ("version", None)])), b""),
        (b"a ID ({4}\r\nname {1+}\r\nx)\r\n", cmd("a", id(&[("name", Some("x"))])), b""),
        (b"a SELECT INBOX\r\n", cmd("a", K::Other { name: "SELECT".into() }), b""),
        (b"a x-Foo \"whatever\r\n", cmd("a", K::Other { name: "x-Foo".into() }), b""),
        // no usable tag: answer `* BAD`
        (b"\r\n", Err(perr(None, E::Tag)), b""),
        (b" NOOP\r\n", Err(perr(None, E::Tag)), b""),
        (b"a+ NOOP\r\n", Err(perr(None, E::Tag)), b""),
        (b"+ NOOP\r\n", Err(perr(None, E::Tag)), b""),
        (b"* NOOP\r\n", Err(perr(None, E::Tag)), b""),
        (b"a(b NOOP\r\n", Err(perr(None, E::Tag)), b""),
        (b"a\"b NOOP\r\n", Err(perr(None, E::Tag)), b""),
        (b"\xc3\xa9 NOOP\r\n", Err(perr(None, E::Tag)), b""),
        // tag known: answer `a BAD`
        (b"a\r\n", Err(perr(a(), E::CommandName)), b""),
        (b"a  NOOP\r\n", Err(perr(a(), E::CommandName)), b""),
        (b"a \"NOOP\"\r\n", Err(perr(a(), E::CommandName)), b""),
        (b"a NOOP x\r\n", Err(perr(a(), E::LineEnd)), b""),
        (b"a CAPABILITY \r\n", Err(perr(a(), E::LineEnd)), b""),
        (b"a LOGIN\r\n", Err(perr(a(), E::Space)), b""),
        (b"a LOGIN alice\r\n", Err(perr(a(), E::Space)), b""),
        (b"a LOGIN alice \r\n", Err(perr(a(), E::Argument)), b""),
        (b"a LOGIN (x) y\r\n", Err(perr(a(), E::Argument)), b""),
        (b"a LOGIN \xff y\r\n", Err(perr(a(), E::Argument)), b""),
        (b"a LOGIN x y z\r\n", Err(perr(a(), E::LineEnd)), b""),
        (b"a LOGIN \"open y\r\n", Err(perr(a(), E::Quoted)), b""),
        (b"a LOGIN \"bad\\x\" y\r\n", Err(perr(a(), E::Quoted)), b""),
        (b"a LOGIN \"a\0\" y\r\n", Err(perr(a(), E::Quoted)), b""),
        (b"a LOGIN {3-}\r\nabc y\r\n", Err(perr(a(), E::Literal)), b"abc y\r\n"),
        (b"a LOGIN {3} y\r\n", Err(perr(a(), E::Literal)), b""),
        (b"a LOGIN {}\r\n", Err(perr(a(), E::Literal)), b""),
        (b"a LOGIN {3}\r\na\0c y\r\n", Err(perr(a(), E::Literal)), b""),
        (b"a LOGIN {1}\r\n\xff y\r\n", Err(perr(a(), E::Utf8)), b""),
        (b"a LOGIN \"\xc3\" y\r\n", Err(perr(a(), E::Utf8)), b""),
        (b"a AUTHENTICATE\r\n", Err(perr(a(), E::Space)), b""),
        (b"a AUTHENTICATE \r\n", Err(perr(a(), E::Atom)), b""),
        (b"a AUTHENTICATE (PLAIN)\r\n", Err(perr(a(), E::Atom)), b""),
        (b"a AUTHENTICATE PLAIN \r\n", Err(perr(a(), E::Base64)), b""),
        (b"a AUTHENTICATE PLAIN abc\r\n", Err(perr(a(), E::Base64)), b""),
        (b"a AUTHENTICATE PLAIN ab=c\r\n", Err(perr(a(), E::Base64)), b""),
        (b"a AUTHENTICATE PLAIN a===\r\n", Err(perr(a(), E::Base64)), b""),
        (b"a AUTHENTICATE PLAIN ==\r\n", Err(perr(a(), E::Base64)), b""),
        (b"a AUTHENTICATE PLAIN YW Jj\r\n", Err(perr(a(), E::Base64)), b""),
        (b"a AUTHENTICATE PLAIN(\r\n", Err(perr(a(), E::LineEnd)), b""),
        (b"a ID\r\n", Err(perr(a(), E::Space)), b""),
        (b"a ID name\r\n", Err(perr(a(), E::IdList)), b""),
        (b"a ID NILS\r\n", Err(perr(a(), E::IdList)), b""),
        (b"a ID (name \"x\")\r\n", Err(perr(a(), E::IdList)), b""),
        (b"a ID (\"name\")\r\n", Err(perr(a(), E::IdList)), b""),
        (b"a ID (\"name\" x)\r\n", Err(perr(a(), E::IdList)), b""),
        (b"a ID (\"a\" \"b\"\r\n", Err(perr(a(), E::IdList)), b""),
        (b"a ID (\"a\" \"b\"  \"c\" NIL)\r\n", Err(perr(a(), E::IdList)), b""),
        (b"a ID (\"a\" \"b\")x\r\n", Err(perr(a(), E::LineEnd)), b""),
        (b"a ID (\"a\\q\" NIL)\r\n", Err(perr(a(), E::Quoted)), b""),
    ];
    cases
}

fn id(pairs: &[(&str, Option<&str>)]) -> CommandKind {
    CommandKind::Id(Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect(),
    ))
}

fn login(user: &str, password: &str) -> CommandKind {
    CommandKind::Login {
        user: user.to_owned(),
        password: Secret::new(password),
    }
}

fn perr(tag: Option<Tag>, kind: ParseErrorKind) -> ParseError {
    ParseError { tag, kind }
}

/// Inputs the framer never yields (no line end, bytes after it): the parser
/// still answers, without a panic.
fn raw_command_cases() -> Vec<(&'static [u8], Result<Command, ParseError>)> {
    use crate::imap::codec::ParseErrorKind as E;
    vec![
        (b"", Err(perr(None, E::Tag))),
        (b"a", Err(perr(None, E::Tag))),
        (b"a NOOP", Err(perr(t("a"), E::LineEnd))),
        (b"a NOOP\r", Err(perr(t("a"), E::LineEnd))),
        (b"a NOOP\r\nb NOOP\r\n", Err(perr(t("a"), E::Trailing))),
        (b"a LOGIN {10}\r\nabc\r\n", Err(perr(t("a"), E::Literal))),
        (
            b"a LOGIN {99999999999999999999}\r\n",
            Err(perr(t("a"), E::Literal)),
        ),
        (b"a LOGIN \"x", Err(perr(t("a"), E::Quoted))),
        (b"a LOGIN \"x\\", Err(perr(t("a"), E::Quoted))),
    ]
}

fn cmd(tag_s: &str, kind: CommandKind) -> Result<Command, ParseError> {
    Ok(Command {
        tag: tag(tag_s),
        kind,
    })
}

/// Frames `input` as a client's stream and parses the first frame; returns
/// the result and the bytes left for the next frame.
fn first_command(input: &[u8]) -> (Result<Command, ParseError>, Vec<u8>) {
    let mut fr = Framer::for_commands(Limits::PRE_AUTH);
    let mut src = BytesMut::from(input);
    loop {
        match fr.decode(&mut src).expect("frames") {
            Decoded::Frame(frame) => return (parse_command(frame.as_bytes()), src.to_vec()),
            Decoded::NeedContinuation { .. } => {}
            Decoded::Incomplete => panic!("no complete frame in {input:?}"),
        }
    }
}

fn caps_code(v: &[&str]) -> Option<Code> {
    Some(Code::Capability(strings(v)))
}

fn other_code(name: &str, args: Option<&str>) -> Option<Code> {
    Some(Code::Other {
        name: name.to_owned(),
        args: args.map(str::to_owned),
    })
}

fn status(tag: Option<Tag>, status: Status, code: Option<Code>, text: &str) -> Response {
    Response::Status(StatusResponse {
        tag,
        status,
        code,
        text: text.to_owned(),
    })
}

fn first_response(input: &[u8]) -> (Result<Response, ParseError>, Vec<u8>) {
    let mut fr = Framer::for_responses(Limits::PRE_AUTH);
    let mut src = BytesMut::from(input);
    match fr.decode(&mut src).expect("frames") {
        Decoded::Frame(frame) => (parse_response(frame.as_bytes()), src.to_vec()),
        other => panic!("no frame in {input:?}: {other:?}"),
    }
}

fn response_cases() -> Vec<ResponseCase> {
    use crate::imap::codec::ParseErrorKind as E;
    use crate::imap::codec::Status::{Bad, Bye, No, PreAuth};
    const OK: Status = Status::Ok;
    let a1 = || t("a1");
    #[rustfmt::skip]
    let cases: Vec<ResponseCase> = vec![
        (b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR] Gimap ready\r\n",
            Ok(status(None, OK, caps_code(&["IMAP4rev1", "AUTH=XOAUTH2", "SASL-IR"]), "Gimap ready")), b""),
        (b"* OK Dovecot ready.\r\na1 OK x\r\n", Ok(status(None, OK, None, "Dovecot ready.")), b"a1 OK x\r\n"),
        (b"* PREAUTH ready\r\n", Ok(status(None, PreAuth, None, "ready")), b""),
        (b"* BYE shutting down\r\n", Ok(status(None, Bye, None, "shutting down")), b""),
        (b"* NO [ALERT] quota\r\n", Ok(status(None, No, other_code("ALERT", None), "quota")), b""),
        (b"* bad x\r\n", Ok(status(None, Bad, None, "x")), b""),
        (b"* ok\r\n", Ok(status(None, OK, None, "")), b""),
        (b"* OK \r\n", Ok(status(None, OK, None, "")), b""),
        (b"* OK [capability IMAP4rev2] x\r\n", Ok(status(None, OK, caps_code(&["IMAP4rev2"]), "x")), b""),
        (b"* OK [CAPABILITY] x\r\n", Ok(status(None, OK, caps_code(&[]), "x")), b""),
        (b"* CAPABILITY IMAP4rev1 LITERAL+  ID\r\n", Ok(Response::Capability(strings(&["IMAP4rev1", "LITERAL+", "ID"]))), b""),
        (b"* CAPABILITY IMAP4rev1 \r\n", Ok(Response::Capability(strings(&["IMAP4rev1"]))), b""),
        (b"* CAPABILITY\r\n", Ok(Response::Capability(vec![])), b""),
        (b"a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n",
            Ok(status(a1(), OK, caps_code(&["IMAP4rev1", "IDLE"]), "Logged in")), b""),
        (b"a1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n",
            Ok(status(a1(), No, other_code("AUTHENTICATIONFAILED", None), "Invalid credentials (Failure)")), b""),
        (b"a1 BAD [BADCHARSET (UTF-8)] x\r\n", Ok(status(a1(), Bad, other_code("BADCHARSET", Some("(UTF-8)")), "x")), b""),
        (b"a1 OK [ALERT]\r\n", Ok(status(a1(), OK, other_code("ALERT", None), "")), b""),
        (b"a1 ok done \xff\r\n", Ok(status(a1(), OK, None, "done \u{fffd}")), b""),
        (b"+ \r\n", Ok(Response::Continue(String::new())), b""),
        (b"+\r\n", Ok(Response::Continue(String::new())), b""),
        (b"+ eyJzdGF0dXMiOiI0MDAifQ==\r\n", Ok(Response::Continue("eyJzdGF0dXMiOiI0MDAifQ==".into())), b""),
        (b"+ Ready for literal\r\n", Ok(Response::Continue("Ready for literal".into())), b""),
        (b"* 3 EXISTS\r\n", Ok(Response::Other(b"* 3 EXISTS\r\n".to_vec())), b""),
        (b"* 1 FETCH (BODY[] {3}\r\nabc)\r\n", Ok(Response::Other(b"* 1 FETCH (BODY[] {3}\r\nabc)\r\n".to_vec())), b""),
        (b"* (weird)\r\n", Ok(Response::Other(b"* (weird)\r\n".to_vec())), b""),
        (b"* ID (\"name\" \"Dovecot\")\r\n", Ok(Response::Id(Some(vec![("name".into(), Some("Dovecot".into()))]))), b""),
        (b"* ID NIL\r\n", Ok(Response::Id(None)), b""),
        (b"* ID garbage\r\n", Ok(Response::Other(b"* ID garbage\r\n".to_vec())), b""),
        // errors
        (b"a1 PREAUTH x\r\n", Err(perr(a1(), E::Status)), b""),
        (b"a1 BYE x\r\n", Err(perr(a1(), E::Status)), b""),
        (b"a1 OK[x\r\n", Err(perr(a1(), E::Status)), b""),
        (b"a1 CAPABILITY X\r\n", Err(perr(a1(), E::Status)), b""),
        (b"a1\r\n", Err(perr(a1(), E::Space)), b""),
        (b"a1 OK\tx\r\n", Err(perr(a1(), E::Space)), b""),
        (b"*OK\r\n", Err(perr(None, E::Space)), b""),
        (b"(x\r\n", Err(perr(None, E::Tag)), b""),
        (b"a1 OK [ALERT x\r\n", Err(perr(a1(), E::Code)), b""),
        (b"a1 OK []\r\n", Err(perr(a1(), E::Code)), b""),
        (b"a1 OK [ALERT ] x\r\n", Err(perr(a1(), E::Code)), b""),
        (b"a1 OK [ALERT]x\r\n", Err(perr(a1(), E::Code)), b""),
        // fuzz/corpus/imap_response/regression-nul-in-code-args
        (b"a1 NO [X a\0b] text\r\n", Err(perr(a1(), E::Code)), b""),
        (b"* OK [CAPABILITY IMAP4rev1 (x)] hi\r\n", Err(perr(None, E::Code)), b""),
        (b"* OK [CAPABILITY IMAP4rev1\r\n", Err(perr(None, E::Code)), b""),
        (b"* CAPABILITY IMAP4rev1 (x)\r\n", Err(perr(None, E::Capability)), b""),
        (b"* CAPABILITY IMAP4rev1]\r\n", Err(perr(None, E::LineEnd)), b""),
    ];
    cases
}

fn raw_response_cases() -> Vec<(&'static [u8], Result<Response, ParseError>)> {
    use crate::imap::codec::ParseErrorKind as E;
    vec![
        (b"", Err(perr(None, E::Tag))),
        (b"a1 OK x", Err(perr(t("a1"), E::LineEnd))),
        (b"a1 OK x\r\ny", Err(perr(t("a1"), E::Trailing))),
        (b"+ x\r", Err(perr(None, E::LineEnd))),
        (b"* CAPABILITY A\r\n\r\n", Err(perr(None, E::Trailing))),
        (b"*", Err(perr(None, E::Space))),
    ]
}

fn greeting_cases() -> Vec<(&'static [u8], Result<StatusResponse, ParseError>)> {
    use crate::imap::codec::ParseErrorKind as E;
    let ok = |status, code, text: &str| {
        Ok(StatusResponse {
            tag: None,
            status,
            code,
            text: text.to_owned(),
        })
    };
    vec![
        (
            b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n",
            ok(Status::Ok, caps_code(&["IMAP4rev1", "STARTTLS"]), "hi"),
        ),
        (b"* PREAUTH x\r\n", ok(Status::PreAuth, None, "x")),
        (b"* BYE busy\r\n", ok(Status::Bye, None, "busy")),
        (b"* NO x\r\n", Err(perr(None, E::Greeting))),
        (b"* BAD x\r\n", Err(perr(None, E::Greeting))),
        (b"a1 OK x\r\n", Err(perr(None, E::Greeting))),
        (b"+ x\r\n", Err(perr(None, E::Greeting))),
        (b"* CAPABILITY X\r\n", Err(perr(None, E::Greeting))),
        (b"* 1 EXISTS\r\n", Err(perr(None, E::Greeting))),
        (b"HTTP/1.1 400\r\n", Err(perr(None, E::Greeting))),
        (b"(x\r\n", Err(perr(None, E::Greeting))),
    ]
}
