//! TOML → validated [`Config`].
//!
//! Owns the configuration contract of DESIGN.md: names, defaults and every
//! check that can be made without a socket. Errors name the file, the key and
//! what is wrong. Reads the config file and nothing else (secrets named by
//! `password_env` / `password_file` are read later, when they are used).

mod check;
mod describe;
mod raw;
mod types;

use std::path::Path;

pub use types::*;

impl Config {
    /// Read and check a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Config::from_str(&text, file)
    }

    /// Check config text as if it had been read from `file`.
    pub fn from_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        check::config(text, file)
    }

    /// The accounts a pool sends through: its listed accounts that are
    /// enabled, in order. The pool's rotation and its route both come from
    /// this one list.
    pub fn pool_members<'a>(&'a self, pool: &'a Pool) -> impl Iterator<Item = &'a Account> + 'a {
        pool.accounts
            .iter()
            .filter_map(|a| self.accounts.get(a))
            .filter(|a| a.enabled)
    }

    /// The effective daily limit of an account: its own, else its preset's.
    pub fn daily_limit(&self, a: &Account) -> Option<u32> {
        a.daily_limit.or(a.provider.map(|p| p.daily_limit))
    }
}

#[cfg(test)]
mod props {
    use super::Config;
    use proptest::prelude::*;
    use std::path::Path;

    /// TOML-ish text: keys, tables and values the config knows, in any order.
    fn tomlish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("[smtp]\n".to_owned()),
            Just("[imap]\n".to_owned()),
            Just("[limits]\n".to_owned()),
            Just("[users.a]\n".to_owned()),
            Just("[accounts.x]\n".to_owned()),
            Just("[pools.p]\n".to_owned()),
            Just("listen = \"127.0.0.1:0\"\n".to_owned()),
            Just("listen = [\"[::1]:1\", \"10.0.0.1:25\"]\n".to_owned()),
            Just("tls = \"implicit\"\n".to_owned()),
            Just("provider = \"gmail\"\n".to_owned()),
            Just("email = \"x@gmail.com\"\n".to_owned()),
            Just("auth = \"oauth2\"\n".to_owned()),
            Just("token_command = \"echo t\"\n".to_owned()),
            Just("accounts = [\"x\", \"x\"]\n".to_owned()),
            Just("send_via = \"pool:p\"\n".to_owned()),
            Just("idle_timeout = \"0s\"\n".to_owned()),
            Just("max_connections = 0\n".to_owned()),
            "[a-z_]{1,12} = \"[ -~]{0,12}\"\n",
            "[ -~\n]{0,20}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        /// Any text loads or gives an error; it never panics.
        #[test]
        fn config_never_panics(text in tomlish()) {
            let _ = Config::from_str(&text, Path::new("prop.toml"));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = Config::from_str(&text, Path::new("prop.toml"));
        }
    }
}
