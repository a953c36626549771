//! The configuration as written: serde types that mirror the TOML, with
//! unknown keys refused. Only [`super::check`] reads them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::types::{opt_duration, AuthMethod, Delivery, FromPolicy, OAuthConfig, Ramp, Strategy};
use crate::providers::{TlsMode, Window};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) data_dir: Option<PathBuf>,
    pub(super) log_level: Option<String>,
    pub(super) hostname: Option<String>,
    pub(super) smtp: Option<RawListener>,
    pub(super) imap: Option<RawListener>,
    pub(super) pop3: Option<RawListener>,
    pub(super) http: Option<RawHttp>,
    pub(super) sandbox: Option<RawSandbox>,
    #[serde(default)]
    pub(super) faults: Vec<crate::sandbox::faults::FaultSpec>,
    pub(super) tls: Option<RawTls>,
    #[serde(default)]
    pub(super) users: BTreeMap<String, RawUser>,
    #[serde(default)]
    pub(super) accounts: BTreeMap<String, RawAccount>,
    #[serde(default)]
    pub(super) pools: BTreeMap<String, RawPool>,
    pub(super) limits: Option<RawLimits>,
    pub(super) queue: Option<RawQueue>,
    pub(super) events: Option<RawEvents>,
    pub(super) quota_store: Option<String>,
    #[serde(default)]
    pub(super) trace_header: bool,
    pub(super) key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub(super) fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(x) => vec![x],
            OneOrMany::Many(v) => v,
        }
    }
}

/// One `listen` entry: `"127.0.0.1:2525"` (the section's `tls`) or
/// `{ addr = "127.0.0.1:465", tls = "implicit" }`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawBind {
    Addr(String),
    Table(RawBindTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBindTable {
    pub(super) addr: String,
    pub(super) tls: Option<TlsMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) listen: OneOrMany<RawBind>,
    pub(super) tls: Option<TlsMode>,
    /// SMTP only: the user a client that sends MAIL without AUTH is
    /// treated as, from the addresses in `allow_from`.
    pub(super) anonymous_user: Option<String>,
    pub(super) allow_from: Option<Vec<String>>,
}

/// `[http]`: the one HTTP listener (sandbox UI and API).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: OneOrMany<String>,
    pub(super) password_hash: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) token_file: Option<PathBuf>,
}

/// `[sandbox]`: captured mail's POP3 server, retention, release.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSandbox {
    pub(super) pop3: Option<OneOrMany<RawBind>>,
    pub(super) max_messages: Option<u64>,
    #[serde(default, with = "opt_duration")]
    pub(super) max_age: Option<Duration>,
    pub(super) release_via: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub(super) password_hash: String,
    pub(super) send_via: Option<String>,
    pub(super) read_via: Option<String>,
    pub(super) delivery: Option<Delivery>,
    pub(super) bounce: Option<String>,
    pub(super) allowed_senders: Option<Vec<String>>,
    pub(super) allowed_recipients: Option<Vec<String>>,
    pub(super) inbox: Option<String>,
    pub(super) redirect: Option<String>,
    pub(super) allowlist: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: TlsMode,
}

/// An account's `pop3`: a server, or `true` / `false` for the preset's.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawPop3 {
    Preset(bool),
    Server(RawEndpoint),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub(super) enabled: Option<bool>,
    pub(super) provider: Option<String>,
    pub(super) email: String,
    pub(super) username: Option<String>,
    pub(super) smtp: Option<RawEndpoint>,
    pub(super) imap: Option<RawEndpoint>,
    pub(super) pop3: Option<RawPop3>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) tls_pin: Option<String>,
    pub(super) auth: Option<AuthMethod>,
    pub(super) token_command: Option<String>,
    pub(super) oauth: Option<OAuthConfig>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) daily_limit: Option<u32>,
    pub(super) window: Option<Window>,
    pub(super) time_zone: Option<String>,
    #[serde(default, with = "opt_duration")]
    pub(super) min_interval: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(super) jitter: Option<Duration>,
    pub(super) ramp: Option<Ramp>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_per_minute: Option<u32>,
    #[serde(default, with = "opt_duration")]
    pub(super) window_length: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) accounts: Vec<String>,
    pub(super) strategy: Option<Strategy>,
    #[serde(default)]
    pub(super) weights: BTreeMap<String, u32>,
    pub(super) from_policy: Option<FromPolicy>,
    pub(super) delivery: Option<Delivery>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    #[serde(default, with = "opt_duration")]
    pub(super) max_queue_age: Option<Duration>,
    pub(super) max_queue_size: Option<RawQueueSize>,
    pub(super) retry: Option<Vec<String>>,
    pub(super) bounce: Option<String>,
    pub(super) workers: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueueSize {
    pub(super) messages: Option<u64>,
    pub(super) bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_connections: Option<usize>,
    #[serde(default, with = "opt_duration")]
    pub(super) idle_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(super) imap_idle_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(super) data_timeout: Option<Duration>,
    pub(super) max_message_size: Option<usize>,
    pub(super) max_recipients: Option<usize>,
    pub(super) max_bad_commands: Option<u32>,
    #[serde(default, with = "opt_duration")]
    pub(super) auth_failure_delay: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(super) auth_backoff_max: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(super) shutdown_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(super) upstream_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(super) upstream_data_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(super) upstream_keepalive: Option<Duration>,
    pub(super) upstream_pool: Option<usize>,
}

/// `[events]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvents {
    pub(super) command: Option<String>,
    pub(super) webhook: Option<String>,
    #[serde(default, with = "opt_duration")]
    pub(super) timeout: Option<Duration>,
    pub(super) kinds: Option<Vec<String>>,
}
