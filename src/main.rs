//! The `postern` command line: parse arguments, load the config, call the library.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use postern::config::Config;
use postern::secret::Secret;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "postern",
    version,
    about = "Local SMTP/IMAP gateway: plain logins on localhost, modern auth to the provider"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, default_value = "config/postern.toml")]
    config: PathBuf,
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Run,
    /// Check the configuration and print the resolved setup (no secrets).
    CheckConfig,
    /// Read a password on standard input and print its argon2id hash.
    HashPassword,
    /// Print the built-in provider presets.
    Providers,
    /// Check an account end to end: DNS, TCP, TLS mode, authentication.
    Doctor { account: String },
    /// Get OAuth consent for an account and save its tokens (encrypted) in data_dir.
    Auth {
        account: String,
        /// Do not open a browser: print the address, then paste back the
        /// address the browser was sent to (for machines without a browser).
        #[arg(long)]
        no_browser: bool,
        /// Use the device flow: print a code to enter on another device
        /// (Microsoft; Google does not allow it for mail).
        #[arg(long, conflicts_with = "no_browser")]
        device: bool,
    },
    /// Show the state that `run` keeps: tokens, quotas, parked mailboxes.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The outbound queue: list it (no subcommand), or show, retry or
    /// delete messages. Works while `run` runs.
    Queue {
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: Option<QueueCmd>,
    },
    /// Make the running instance (found by the pid file in data_dir)
    /// re-read its config file, and print what it did.
    Reload {
        /// Seconds to wait for its answer.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Guided setup of a mailbox: `postern account add EMAIL`.
    Account {
        #[command(subcommand)]
        command: AccountCmd,
    },
    /// Local logins: `postern user add NAME --send-via ACCOUNT`.
    User {
        #[command(subcommand)]
        command: UserCmd,
    },
    /// Operate on the quota store.
    Quota {
        #[command(subcommand)]
        command: QuotaCmd,
    },
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Add a mailbox: finds its provider from the address, asks only what
    /// that provider needs (or takes it from flags), writes the account and
    /// a local user into the config file (its comments kept), and runs
    /// `doctor` on it.
    Add(Box<postern::setup::AccountArgs>),
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a local login; its password is asked with the echo off and
    /// stored as an argon2id hash.
    Add(postern::setup::UserArgs),
}

#[derive(Subcommand)]
enum QueueCmd {
    /// One message: its envelope, history and headers.
    Show { id: String },
    /// Try now: one message, or every one with --all.
    Retry {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Drop a message from the queue (no report is sent).
    Delete { id: String },
}

#[derive(Subcommand)]
enum QuotaCmd {
    /// Accept that the shared (Redis) quota store lost its counters, so
    /// sending resumes: the counts it lost are not restored.
    AcceptReset,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("postern: {}", chain(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes, each cause said once: many errors repeat their
/// source in their own text (`cannot listen on …: Address already in use`).
fn chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    Ok(Config::load(&cli.config)?)
}

fn init_logging(level: Option<&str>, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let mut filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => v,
        _ => level.unwrap_or("info").to_owned(),
    };
    // rustls warns of every TLS client that connects to an IP address and
    // sends it as SNI (RFC 6066 forbids it, most clients do it): normal,
    // nothing for an operator to act on. Named rustls directives win.
    if !filter.contains("rustls") {
        filter.push_str(",rustls::msgs::handshake=error");
    }
    let filter = EnvFilter::new(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Cmd::Providers => {
            print!("{}", postern::providers::render_table());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::HashPassword => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("Password (input is echoed; pipe it in to avoid that): ");
                let _ = std::io::stderr().flush();
            }
            let mut line = String::new();
            stdin
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let pw = line.strip_suffix('\n').unwrap_or(&line);
            let pw = pw.strip_suffix('\r').unwrap_or(pw);
            if pw.is_empty() {
                bail!("empty password: write the password on standard input, e.g. `echo -n secret | postern hash-password`");
            }
            println!("{}", postern::auth::users::hash_password(&Secret::new(pw)));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CheckConfig => {
            let config = load(&cli)?;
            print!("{}", config.describe());
            let warnings = config.warnings();
            if !warnings.is_empty() {
                println!();
                for w in &warnings {
                    println!("WARNING {w}");
                }
            }
            let missing = postern::auth::credentials::missing_secrets(&config);
            if !missing.is_empty() {
                println!();
                for m in &missing {
                    println!("MISSING SECRET {m}");
                }
                bail!(
                    "{}: {} secret(s) missing; set them, or mark the account enabled = false",
                    config.file.display(),
                    missing.len()
                );
            }
            println!("\nconfig OK");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run => {
            let config = load(&cli)?;
            init_logging(config.log_level.as_deref(), cli.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Account {
            command: AccountCmd::Add(args),
        } => {
            let mut prompt = postern::setup::Prompt::stdin();
            let added = postern::setup::account_add(&cli.config, args, &mut prompt)?;
            if !added.doctor {
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("Checking it (postern doctor {}):", added.account);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(postern::doctor::run(&added.config, &added.account));
            print!("{}", report.text);
            if !report.ok {
                eprintln!(
                    "The account is written; fix what doctor says, then run `postern doctor {}`.",
                    added.account
                );
                return Ok(ExitCode::from(1));
            }
            if postern::control::PidFile::running(&added.config.data_dir).is_some() {
                eprintln!("Postern is running: `postern reload` serves the new account.");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::User {
            command: UserCmd::Add(args),
        } => {
            let mut prompt = postern::setup::Prompt::stdin();
            postern::setup::user_add(&cli.config, args, &mut prompt)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Doctor { account } => {
            let config = load(&cli)?;
            if !config.accounts.contains_key(account) {
                bail!("no account \"{account}\" in {}", config.file.display());
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(postern::doctor::run(&config, account));
            print!("{}", report.text);
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Auth {
            account,
            no_browser,
            device,
        } => {
            let config = load(&cli)?;
            if !config.accounts.contains_key(account) {
                bail!("no account \"{account}\" in {}", config.file.display());
            }
            init_logging(Some("warn"), cli.log_format);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let opts = postern::auth::oauth::ConsentOptions {
                no_browser: *no_browser,
                device: *device,
            };
            let mut say = |line: &str| println!("{line}");
            let done = rt.block_on(postern::auth::oauth::consent(
                &config, account, opts, &mut say,
            ))?;
            println!(
                "Saved the authorization of account {} in {} (access token valid until {}).",
                done.account,
                done.store_file.display(),
                humantime::format_rfc3339_seconds(done.valid_until)
            );
            println!("A running `postern run` uses it at the next login; no restart needed.");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Queue { json, command } => {
            let config = load(&cli)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let out = rt.block_on(queue_command(&config, command.as_ref(), *json))?;
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Reload { wait } => {
            // A file that does not load is said here, before any signal.
            let config = load(&cli).context("the config file is invalid; nothing was reloaded")?;
            let o =
                postern::control::reload(&config.data_dir, std::time::Duration::from_secs(*wait))?;
            if o.ok {
                println!("postern (pid {}): {}", o.pid, o.message);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("postern (pid {}): reload refused: {}", o.pid, o.message);
                Ok(ExitCode::from(1))
            }
        }
        Cmd::Quota {
            command: QuotaCmd::AcceptReset,
        } => {
            let config = load(&cli)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let said = rt.block_on(async {
                let store = postern::pool::Store::open(&config)
                    .await
                    .context("opening the quota store")?;
                anyhow::Ok(store.accept_reset().await?)
            })?;
            println!("{said}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json } => {
            let config = load(&cli)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            if *json {
                let v = rt.block_on(async {
                    let store = postern::pool::Store::open(&config)
                        .await
                        .context("opening the quota store")?;
                    let pools = postern::pool::Pools::new(&config, store)?;
                    let queue = open_queue(&config)?;
                    anyhow::Ok(postern::status::json(&config, &pools, &queue).await?)
                })?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let quota = rt.block_on(quota_status(&config))?;
                let queue = rt.block_on(async {
                    open_queue(&config)?
                        .summary()
                        .await
                        .map_err(anyhow::Error::from)
                })?;
                let caps =
                    postern::gate::Board::read(&config.data_dir.join(postern::gate::BOARD_FILE));
                print!("{}", postern::auth::oauth::status_report(&config));
                print!("{quota}");
                print!("{}", queue_report(&queue, &caps));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The queue and connection-cap part of `postern status`.
fn queue_report(
    queue: &[postern::queue::RouteSummary],
    caps: &[postern::gate::GateStatus],
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let now = jiff::Timestamp::now();
    if queue.is_empty() {
        let _ = writeln!(out, "queue: empty");
    }
    for r in queue {
        let age = humantime::format_duration(std::time::Duration::from_secs(
            (now - r.oldest).as_secs().max(0) as u64,
        ));
        let _ = writeln!(
            out,
            "queue {}: {} message(s), {} bytes, oldest {age} old, next try {:.0}",
            r.route, r.messages, r.bytes, r.next_try
        );
    }
    for c in caps.iter().filter(|c| c.lowered_until.is_some()) {
        let _ = writeln!(
            out,
            "connections {}: cap lowered to {} (max_connections {}) until {:.0}: {}",
            c.account,
            c.cap,
            c.configured,
            c.lowered_until.unwrap_or(now),
            c.lowered_reason.as_deref().unwrap_or("")
        );
    }
    out
}

fn open_queue(config: &Config) -> anyhow::Result<postern::queue::Queue> {
    let path = config.data_dir.join(postern::queue::QUEUE_FILE);
    postern::queue::Queue::open(
        &path,
        postern::queue::Caps {
            max_messages: config.queue.max_messages,
            max_bytes: config.queue.max_bytes,
        },
    )
    .with_context(|| format!("opening the queue {}", path.display()))
}

fn parse_id(id: &str) -> anyhow::Result<postern::queue::QueueId> {
    id.parse().map_err(|e: String| anyhow::anyhow!(e))
}

/// `postern queue …`: what to print.
async fn queue_command(
    config: &Config,
    cmd: Option<&QueueCmd>,
    json: bool,
) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let queue = open_queue(config)?;
    let now = jiff::Timestamp::now();
    let mut out = String::new();
    match cmd {
        None => {
            let list = queue.list().await?;
            if json {
                return Ok(serde_json::to_string_pretty(&list)? + "\n");
            }
            if list.is_empty() {
                return Ok("the queue is empty\n".into());
            }
            let _ = writeln!(
                out,
                "{:<10}  {:<12} {:<16} {:>5} {:>8} {:>4}  {:<20} last error",
                "id", "user", "route", "rcpts", "age", "try", "next try"
            );
            for e in &list {
                let age = humantime::format_duration(std::time::Duration::from_secs(
                    (now - e.received).as_secs().max(0) as u64,
                ));
                let next = match e.in_flight {
                    Some(_) => "in flight".to_owned(),
                    None => format!("{:.0}", e.next_try),
                };
                let flag = if e.crashed {
                    " [was in flight at a crash: may arrive twice]"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "{:<10}  {:<12} {:<16} {:>5} {:>8} {:>4}  {:<20} {}{flag}",
                    e.id,
                    e.user,
                    e.route,
                    e.rcpts.len(),
                    age.to_string(),
                    e.attempts,
                    next,
                    e.last_error.as_deref().unwrap_or("-"),
                );
            }
            let _ = writeln!(out, "{} message(s)", list.len());
        }
        Some(QueueCmd::Show { id }) => {
            let id = parse_id(id)?;
            let (m, events) = queue.show(id).await?;
            if json {
                let v = serde_json::json!({
                    "message": m.as_ref().map(|m| &m.entry),
                    "headers": m.as_ref().map(|m| String::from_utf8_lossy(postern::queue::dsn::header_block(&m.body)).into_owned()),
                    "events": events,
                });
                return Ok(serde_json::to_string_pretty(&v)? + "\n");
            }
            match &m {
                Some(m) => {
                    let e = &m.entry;
                    let _ = writeln!(out, "id:        {}", e.id);
                    let _ = writeln!(out, "user:      {}", e.user);
                    let _ = writeln!(out, "route:     {}", e.route);
                    let _ = writeln!(out, "from:      <{}>", e.mail_from);
                    for r in &e.rcpts {
                        let _ = writeln!(out, "to:        <{r}>");
                    }
                    let _ = writeln!(out, "size:      {} bytes", e.size);
                    let _ = writeln!(out, "received:  {:.0}", e.received);
                    let _ = writeln!(out, "attempts:  {}", e.attempts);
                    let _ = writeln!(out, "next try:  {:.0}", e.next_try);
                    if let Some(err) = &e.last_error {
                        let _ = writeln!(out, "last error: {err}");
                    }
                    if e.crashed {
                        let _ = writeln!(out, "note:      it was being delivered when Postern stopped: it may arrive twice");
                    }
                    let _ = writeln!(out, "\nheaders:");
                    out.push_str(&String::from_utf8_lossy(postern::queue::dsn::header_block(
                        &m.body,
                    )));
                }
                None => {
                    let _ = writeln!(out, "{id} is not in the queue (any more)");
                }
            }
            let _ = writeln!(out, "\nhistory:");
            for ev in &events {
                let _ = writeln!(out, "  {:.0}  {:<9} {}", ev.at, ev.kind, ev.text);
            }
            if m.is_none() && events.is_empty() {
                anyhow::bail!("no message {id} in the queue or its history");
            }
        }
        Some(QueueCmd::Retry { id, all }) => {
            let id = match (id, all) {
                (Some(id), _) => Some(parse_id(id)?),
                (None, true) => None,
                (None, false) => anyhow::bail!("give a queue id, or --all"),
            };
            let n = queue.retry(id, now).await?;
            let _ = writeln!(
                out,
                "{n} message(s) due now; a running Postern takes them within seconds"
            );
        }
        Some(QueueCmd::Delete { id }) => {
            let id = parse_id(id)?;
            queue
                .remove(id, "deleted", "by `postern queue delete`".into(), now)
                .await?;
            let _ = writeln!(out, "{id} deleted (no report is sent)");
        }
    }
    Ok(out)
}

/// The quota state `run` keeps (SQLite in data_dir, or Redis), read while
/// `run` may be running.
async fn quota_status(config: &Config) -> anyhow::Result<postern::pool::Status> {
    let store = postern::pool::Store::open(config)
        .await
        .context("opening the quota store")?;
    let pools = postern::pool::Pools::new(config, store)?;
    Ok(pools.status(jiff::Timestamp::now()).await?)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let server = postern::server::Server::bind(&config, shutdown.clone()).await?;
    tracing::info!(config = %config.file.display(), data_dir = %config.data_dir.display(), "postern starting");
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received");
        signals.cancel();
        // A second signal while draining ends the process at once.
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    // SIGHUP (`systemctl reload`, `postern reload`) applies the config
    // file to new sessions; a file that does not load is refused and the
    // running config stays. Each outcome is logged and recorded for
    // `postern reload` to print.
    let pid_file = postern::control::PidFile::create(&config.data_dir)
        .with_context(|| format!("cannot write the pid file in {}", config.data_dir.display()))?;
    let file = config.file.clone();
    let data_dir = config.data_dir.clone();
    let reloader = server.reloader();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        let mut generation = 0;
        while hup.recv().await.is_some() {
            generation += 1;
            tracing::info!(config = %file.display(), "SIGHUP: reloading the config file");
            let outcome = match Config::load(&file) {
                Err(e) => {
                    tracing::error!(config = %file.display(), error = %e, "reload refused: the config file is invalid; the running config is unchanged");
                    Err(format!("the config file is invalid: {e}"))
                }
                Ok(config) => {
                    let (done, answer) = tokio::sync::oneshot::channel();
                    if reloader
                        .send(postern::server::ReloadRequest { config, done })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    answer
                        .await
                        .unwrap_or_else(|_| Err("the server is shutting down".into()))
                }
            };
            postern::control::record(&data_dir, generation, &outcome);
        }
    });
    server.run().await;
    drop(pid_file);
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
