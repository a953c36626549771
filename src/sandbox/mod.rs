//! The development sandbox around captured mail: the message model in
//! Mailpit's terms ([`message`]), the index and its search ([`index`]), and
//! fault injection ([`faults`]). The web UI and the API over it live in
//! [`crate::http`]; the sandbox POP3 server in [`crate::pop3::mailbox`].

pub mod faults;
pub mod index;
pub mod message;
