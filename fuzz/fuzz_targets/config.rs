//! `config`: any text as a config file.
//!
//! Input: any bytes, read as UTF-8 (lossily, as a config file with a bad byte
//! would be after the UTF-8 check; `Config::load` itself refuses such a file).
//! Property: `Config::from_str` returns `Ok` or `Err`, never panics, and its
//! error prints (the message the user sees) without panicking either.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use postern::config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Config::from_str(&text, Path::new("fuzz.toml")) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
