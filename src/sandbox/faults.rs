//! Fault injection: rules that make Postern's own SMTP server answer the
//! way a provider really fails (Gmail's daily limit, Microsoft's
//! submission quota, Yahoo's throttle, …), at a chosen stage, for chosen
//! users and recipients, every Nth time or with a seeded probability, a
//! limited number of times. Rules come from `[[faults]]` in the config and
//! from the HTTP API at run time; they apply to every route (capture and
//! relay), since the session answers before the route is asked.
//!
//! The reply texts are the providers' own, with their sources cited next to
//! each; the session tokens Gmail and Microsoft append are generated in
//! the same shape.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::pattern::Pattern;

/// Where in the SMTP dialogue a fault answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Instead of the greeting.
    Connect,
    /// Instead of `235` after a correct local login.
    Auth,
    /// Instead of MAIL FROM's reply.
    Mail,
    /// Instead of RCPT TO's reply.
    Rcpt,
    /// Instead of the reply after the final dot (the message is not kept).
    Data,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Auth => "auth",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
        })
    }
}

/// A named reply: its usual stage, code, lines (enhanced code included in
/// each line, `{token}`/`{ms}`/`{ip}`/`{rcpt}`/`{cmd}` filled in), and
/// whether the server closes the connection after it.
struct Named {
    name: &'static str,
    stage: Stage,
    code: u16,
    lines: &'static [&'static str],
    close: bool,
}

/// The catalogue. Sources:
/// - Gmail: "Gmail SMTP errors and codes", support.google.com/a/answer/3726730, and
///   its sending limits page support.google.com/a/answer/166852; the line
///   wrapping, the double space before the URL and the `<token> - gsmtp`
///   tail are as real Gmail replies show them (captures in public bug
///   reports and test fixtures).
/// - Microsoft: learn.microsoft.com/en-us/exchange/troubleshoot/send-emails/smtp-submission-improvements
///   (SubmissionQuotaExceededException, concurrent connections) and
///   aka.ms/smtp_auth_disabled (5.7.139); the `[HOST … time id]` tail as in
///   real Exchange Online replies.
/// - Yahoo: senders.yahooinc.com/smtp-error-codes ([TSS04]).
/// - Relay denied: Sendmail's reply text (`<rcpt>... Relaying denied`).
const NAMED: &[Named] = &[
    // Google 3726730: 550 5.4.5 "Daily sending quota exceeded"; the reply as sent.
    Named {
        name: "gmail-daily-limit",
        stage: Stage::Data,
        code: 550,
        lines: &[
            "5.4.5 Daily user sending limit exceeded. For more information on Gmail",
            "5.4.5 sending limits go to",
            "5.4.5  https://support.google.com/a/answer/166852 {token} - gsmtp",
        ],
        close: false,
    },
    // Google 3726730: 421 4.7.0 "Try again later, closing connection."
    Named {
        name: "gmail-rate-limit",
        stage: Stage::Mail,
        code: 421,
        lines: &[
            "4.7.0 Try again later, closing connection. ({cmd})",
            "4.7.0 For more information, go to",
            "4.7.0  https://support.google.com/a/answer/3221692 {token} - gsmtp",
        ],
        close: true,
    },
    // Google 3726730: 450 4.2.1 "The user you are trying to contact is receiving mail at a rate …"
    Named {
        name: "gmail-receiving-rate",
        stage: Stage::Rcpt,
        code: 450,
        lines: &[
            "4.2.1 The user you are trying to contact is receiving mail at a rate that",
            "4.2.1 prevents additional messages from being delivered. Please resend your",
            "4.2.1 message at a later time. If the user is able to receive mail at that",
            "4.2.1 time, your message will be delivered. For more information, please",
            "4.2.1 visit",
            "4.2.1  https://support.google.com/mail/?p=ReceivingRate {token} - gsmtp",
        ],
        close: false,
    },
    // Google 3726730: 535 5.7.8 "Username and Password not accepted" (a
    // normal password where an app password is needed).
    Named {
        name: "gmail-auth-app-password",
        stage: Stage::Auth,
        code: 535,
        lines: &[
            "5.7.8 Username and Password not accepted. For more information, go to",
            "5.7.8  https://support.google.com/mail/?p=BadCredentials {token} - gsmtp",
        ],
        close: false,
    },
    // Google (accounts/answer/185833): 534 5.7.9 "Application-specific password required".
    Named {
        name: "gmail-app-password-required",
        stage: Stage::Auth,
        code: 534,
        lines: &[
            "5.7.9 Application-specific password required. For more information, go to",
            "5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor {token} - gsmtp",
        ],
        close: false,
    },
    // Microsoft smtp-submission-improvements: daily recipient quota.
    Named {
        name: "outlook-submission-quota",
        stage: Stage::Data,
        code: 554,
        lines: &["5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"],
        close: false,
    },
    // aka.ms/smtp_auth_disabled: 535 5.7.139 SMTP AUTH disabled for the tenant.
    Named {
        name: "outlook-auth-disabled",
        stage: Stage::Auth,
        code: 535,
        lines: &["5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [{mshost} {ms} {mshex}]"],
        close: false,
    },
    // Microsoft smtp-submission-improvements: more than 3 connections.
    Named {
        name: "outlook-concurrency",
        stage: Stage::Mail,
        code: 432,
        lines: &["4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information. [Hostname={mshost}]"],
        close: true,
    },
    // Exchange Online: From is not a mailbox this login may send as.
    Named {
        name: "outlook-send-as-denied",
        stage: Stage::Data,
        code: 550,
        lines: &["5.7.60 SMTP; Client does not have permissions to send as this sender"],
        close: false,
    },
    // senders.yahooinc.com/smtp-error-codes: [TSS04] deferral.
    Named {
        name: "yahoo-throttle",
        stage: Stage::Mail,
        code: 421,
        lines: &["4.7.0 [TSS04] Messages from {ip} temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"],
        close: true,
    },
    // Sendmail: relaying refused for a recipient.
    Named {
        name: "relay-denied",
        stage: Stage::Rcpt,
        code: 550,
        lines: &["5.7.1 <{rcpt}>... Relaying denied"],
        close: false,
    },
    // Google 3726730: 552 5.2.2 "The email account that you tried to reach is over quota."
    Named {
        name: "mailbox-full",
        stage: Stage::Rcpt,
        code: 552,
        lines: &[
            "5.2.2 The email account that you tried to reach is over quota. Please direct",
            "5.2.2 the recipient to",
            "5.2.2  https://support.google.com/mail/?p=OverQuotaPerm {token} - gsmtp",
        ],
        close: false,
    },
];

/// The names of the built-in replies.
pub fn names() -> impl Iterator<Item = &'static str> {
    NAMED.iter().map(|n| n.name)
}

/// A rule as written in `[[faults]]` or sent to `POST /api/v1/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// An id for the API (made up when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A built-in reply (see [`names`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// A custom reply: code and text (lines separated by `\n`, each with
    /// its enhanced code if it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Where it answers (the built-in reply's stage when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Only for these local users (any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Only for recipients matching (rcpt and data stages; any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Every Nth matching event (1: each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    /// Or with this probability (0–1), from a fixed `seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Wait this long first (`"2s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// Close the connection without a reply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop: bool,
    /// Fire at most this many times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Off rules stay listed but never fire.
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl Default for FaultSpec {
    fn default() -> Self {
        FaultSpec {
            name: None,
            reply: None,
            code: None,
            text: None,
            stage: None,
            users: Vec::new(),
            recipients: Vec::new(),
            every: None,
            probability: None,
            seed: None,
            delay: None,
            drop: false,
            count: None,
            enabled: true,
        }
    }
}

/// A checked rule with its counters.
#[derive(Debug)]
struct Rule {
    spec: FaultSpec,
    id: String,
    stage: Stage,
    reply: Option<(u16, Vec<String>, bool)>,
    users: Vec<String>,
    recipients: Vec<Pattern>,
    delay: Option<Duration>,
    every: u64,
    probability: Option<(f64, rand::rngs::StdRng)>,
    /// Matching events seen, and times fired.
    seen: u64,
    fired: u64,
}

/// What the session must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub rule: String,
    pub delay: Option<Duration>,
    /// `None`: after the delay, carry on as if nothing happened (or drop).
    pub reply: Option<(u16, Vec<String>)>,
    /// Close the connection (after the reply, if any).
    pub close: bool,
}

/// One rule's state, for the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleState {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Stage")]
    pub stage: Stage,
    #[serde(rename = "Seen")]
    pub seen: u64,
    #[serde(rename = "Fired")]
    pub fired: u64,
    #[serde(rename = "Spec")]
    pub spec: FaultSpec,
}

impl FaultSpec {
    /// Checks the rule; `id` is used when it has no name.
    fn check(self, id: String) -> Result<Rule, String> {
        let named = match &self.reply {
            Some(r) => Some(NAMED.iter().find(|n| n.name == r).ok_or_else(|| {
                format!(
                    "unknown reply \"{r}\" (known: {})",
                    names().collect::<Vec<_>>().join(", ")
                )
            })?),
            None => None,
        };
        let reply = match (named, self.code, &self.text) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err("give reply = \"NAME\" or code and text, not both".into())
            }
            (Some(n), None, None) => Some((
                n.code,
                n.lines.iter().map(|l| (*l).to_owned()).collect(),
                n.close,
            )),
            (None, Some(code), text) => {
                if !(200..=599).contains(&code) {
                    return Err(format!("code {code} is not an SMTP reply code (200–599)"));
                }
                let lines: Vec<String> = text
                    .as_deref()
                    .unwrap_or("Fault injected by Postern")
                    .split('\n')
                    .map(|l| crate::text::sanitize(l.trim_end_matches('\r'), 500))
                    .collect();
                Some((code, lines, code == 421))
            }
            (None, None, Some(_)) => return Err("text needs a code".into()),
            (None, None, None) => None,
        };
        let delay = self
            .delay
            .as_deref()
            .map(|d| {
                humantime::parse_duration(d)
                    .map_err(|_| format!("delay \"{d}\" is not a duration like \"2s\""))
            })
            .transpose()?;
        if reply.is_none() && !self.drop && delay.is_none() {
            return Err(format!(
                "a fault needs reply = \"NAME\" (one of: {}), a code and text, drop = true or a delay",
                names().collect::<Vec<_>>().join(", ")
            ));
        }
        if delay.is_some_and(|d| d > Duration::from_secs(600)) {
            return Err("delay may be at most 10m".into());
        }
        let stage = match (self.stage, named) {
            (Some(s), _) => s,
            (None, Some(n)) => n.stage,
            (None, None) => {
                return Err("stage is needed (connect, auth, mail, rcpt or data)".into())
            }
        };
        if !self.recipients.is_empty() && !matches!(stage, Stage::Rcpt | Stage::Data) {
            return Err("recipients only go with stage = \"rcpt\" or \"data\"".into());
        }
        if !self.users.is_empty() && stage == Stage::Connect {
            return Err("at connect no user is known yet: users needs another stage".into());
        }
        let recipients = self
            .recipients
            .iter()
            .map(|p| Pattern::parse(p).map_err(|e| format!("recipient \"{p}\": {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if self.every == Some(0) {
            return Err("every must be at least 1".into());
        }
        let probability = match (self.probability, self.every) {
            (Some(_), Some(_)) => return Err("give every or probability, not both".into()),
            (Some(p), None) if !(0.0..=1.0).contains(&p) => {
                return Err("probability is between 0 and 1".into())
            }
            (Some(p), None) => Some((p, rand::rngs::StdRng::seed_from_u64(self.seed.unwrap_or(0)))),
            (None, _) => None,
        };
        let id = match &self.name {
            Some(n)
                if n.is_empty()
                    || n.len() > 64
                    || !n
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
            {
                return Err("name: letters, digits, '-' and '_', at most 64".into())
            }
            Some(n) => n.clone(),
            None => id,
        };
        Ok(Rule {
            id,
            stage,
            reply,
            users: self.users.clone(),
            recipients,
            delay,
            every: self.every.unwrap_or(1),
            probability,
            seen: 0,
            fired: 0,
            spec: self,
        })
    }
}

/// The rules in force.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<(Vec<Rule>, u64)>,
}

/// What the session knows when it asks.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub stage: Stage,
    pub user: Option<&'a str>,
    /// The recipient (rcpt) or all of them (data).
    pub rcpts: &'a [&'a str],
    pub peer: std::net::IpAddr,
}

impl Faults {
    /// Rules from the config, checked (the error names the rule).
    pub fn from_specs(specs: Vec<FaultSpec>) -> Result<Faults, String> {
        let f = Faults::default();
        for (i, s) in specs.into_iter().enumerate() {
            f.add(s).map_err(|e| format!("faults[{i}]: {e}"))?;
        }
        Ok(f)
    }

    /// Adds a rule; returns its id.
    pub fn add(&self, spec: FaultSpec) -> Result<String, String> {
        let mut g = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.1 += 1;
        let rule = spec.check(format!("f{}", g.1))?;
        if g.0.iter().any(|r| r.id == rule.id) {
            return Err(format!("a fault named \"{}\" exists already", rule.id));
        }
        let id = rule.id.clone();
        g.0.push(rule);
        Ok(id)
    }

    /// Removes one rule (true if it was there), or all with `None`.
    pub fn remove(&self, id: Option<&str>) -> bool {
        let mut g = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = g.0.len();
        match id {
            Some(id) => g.0.retain(|r| r.id != id),
            None => g.0.clear(),
        }
        g.0.len() != before
    }

    /// Switches a rule on or off; false if there is none by that id.
    pub fn set_enabled(&self, id: &str, on: bool) -> bool {
        let mut g = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match g.0.iter_mut().find(|r| r.id == id) {
            Some(r) => {
                r.spec.enabled = on;
                true
            }
            None => false,
        }
    }

    pub fn list(&self) -> Vec<RuleState> {
        let g = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.0.iter()
            .map(|r| RuleState {
                id: r.id.clone(),
                stage: r.stage,
                seen: r.seen,
                fired: r.fired,
                spec: r.spec.clone(),
            })
            .collect()
    }

    /// The first rule that fires for `e`, if any (each matching rule
    /// counts the event, so "every 3rd" is exact per rule).
    pub fn check(&self, e: Event<'_>) -> Option<Action> {
        let mut g = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.0.is_empty() {
            return None;
        }
        let mut out = None;
        for r in g.0.iter_mut() {
            if !r.spec.enabled || r.stage != e.stage || r.spec.count.is_some_and(|c| r.fired >= c) {
                continue;
            }
            if !r.users.is_empty() && !e.user.is_some_and(|u| r.users.iter().any(|x| x == u)) {
                continue;
            }
            if !r.recipients.is_empty()
                && !e
                    .rcpts
                    .iter()
                    .any(|a| r.recipients.iter().any(|p| p.matches(a)))
            {
                continue;
            }
            r.seen += 1;
            let fire = match &mut r.probability {
                Some((p, rng)) => rng.random::<f64>() < *p,
                None => r.seen % r.every == 0,
            };
            if !fire || out.is_some() {
                continue;
            }
            r.fired += 1;
            let reply = r.reply.as_ref().map(|(code, lines, _)| {
                (*code, lines.iter().map(|l| fill(l, &e)).collect::<Vec<_>>())
            });
            out = Some(Action {
                rule: r.id.clone(),
                delay: r.delay,
                close: r.spec.drop || r.reply.as_ref().is_some_and(|x| x.2),
                reply: if r.spec.drop { None } else { reply },
            });
        }
        out
    }
}

/// Fills in a reply template.
fn fill(line: &str, e: &Event<'_>) -> String {
    if !line.contains('{') {
        return line.to_owned();
    }
    let mut rng = rand::rng();
    let alnum = |rng: &mut rand::rngs::ThreadRng, n: usize| -> String {
        (0..n)
            .map(|_| {
                let c = rng.random_range(0..36u8);
                (if c < 10 { b'0' + c } else { b'a' + c - 10 }) as char
            })
            .collect()
    };
    let hex = |rng: &mut rand::rngs::ThreadRng, n: usize| -> String {
        (0..n)
            .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
            .collect()
    };
    // Gmail: `af79cd13be357-8eb9becc72dsm190518885a.34`.
    let token = format!(
        "{}-{}sm{}.{}",
        alnum(&mut rng, 13),
        hex(&mut rng, 10),
        rng.random_range(100_000_000u64..999_999_999),
        rng.random_range(1..99)
    );
    let mshost = format!(
        "{}.{}.PROD.OUTLOOK.COM",
        alnum(&mut rng, 12).to_uppercase(),
        alnum(&mut rng, 8).to_uppercase()
    );
    let ms = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let cmd = match e.stage {
        Stage::Connect => "HELO",
        Stage::Auth => "AUTH",
        Stage::Mail => "MAIL",
        Stage::Rcpt => "RCPT",
        Stage::Data => "DATA",
    };
    line.replace("{token}", &token)
        .replace("{mshost}", &mshost)
        .replace("{mshex}", &hex(&mut rng, 16).to_uppercase())
        .replace("{ms}", &ms)
        .replace("{ip}", &e.peer.to_string())
        .replace("{rcpt}", e.rcpts.first().copied().unwrap_or(""))
        .replace("{cmd}", cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(stage: Stage, user: &'a str, rcpts: &'a [&'a str]) -> Event<'a> {
        Event {
            stage,
            user: Some(user),
            rcpts,
            peer: "127.0.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn every_third_fires_on_the_third_sixth_and_ninth() {
        let f = Faults::default();
        f.add(FaultSpec {
            reply: Some("gmail-daily-limit".into()),
            every: Some(3),
            ..Default::default()
        })
        .unwrap();
        let hits: Vec<usize> = (1..=9)
            .filter(|_| f.check(ev(Stage::Data, "app", &["a@b"])).is_some())
            .collect();
        assert_eq!(hits, vec![3, 6, 9]);
    }

    #[test]
    fn named_replies_have_their_texts_and_stages() {
        let f = Faults::default();
        f.add(FaultSpec {
            reply: Some("gmail-daily-limit".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(f.check(ev(Stage::Rcpt, "app", &["a@b"])).is_none());
        let a = f.check(ev(Stage::Data, "app", &["a@b"])).unwrap();
        let (code, lines) = a.reply.unwrap();
        assert_eq!(code, 550);
        assert_eq!(
            lines[0],
            "5.4.5 Daily user sending limit exceeded. For more information on Gmail"
        );
        assert!(
            lines[2].starts_with("5.4.5  https://support.google.com/a/answer/166852 ")
                && lines[2].ends_with(" - gsmtp")
        );
        assert!(!a.close);
        let f = Faults::default();
        f.add(FaultSpec {
            reply: Some("yahoo-throttle".into()),
            ..Default::default()
        })
        .unwrap();
        let a = f.check(ev(Stage::Mail, "app", &[])).unwrap();
        assert!(a.close);
        assert!(a.reply.unwrap().1[0].contains("Messages from 127.0.0.1 temporarily deferred"));
        for n in names() {
            assert!(Faults::default()
                .add(FaultSpec {
                    reply: Some(n.into()),
                    ..Default::default()
                })
                .is_ok());
        }
    }

    #[test]
    fn users_recipients_count_probability_and_bad_rules() {
        let f = Faults::default();
        f.add(FaultSpec {
            reply: Some("relay-denied".into()),
            users: vec!["app".into()],
            recipients: vec!["*@blocked.test".into()],
            count: Some(2),
            ..Default::default()
        })
        .unwrap();
        assert!(f
            .check(ev(Stage::Rcpt, "other", &["x@blocked.test"]))
            .is_none());
        assert!(f.check(ev(Stage::Rcpt, "app", &["x@fine.test"])).is_none());
        let a = f
            .check(ev(Stage::Rcpt, "app", &["x@blocked.test"]))
            .unwrap();
        assert_eq!(
            a.reply.unwrap().1[0],
            "5.7.1 <x@blocked.test>... Relaying denied"
        );
        assert!(f
            .check(ev(Stage::Rcpt, "app", &["x@blocked.test"]))
            .is_some());
        assert!(
            f.check(ev(Stage::Rcpt, "app", &["x@blocked.test"]))
                .is_none(),
            "count = 2"
        );
        // The same seed gives the same sequence.
        let seq = || {
            let f = Faults::default();
            f.add(FaultSpec {
                code: Some(451),
                text: Some("4.3.0 flaky".into()),
                stage: Some(Stage::Mail),
                probability: Some(0.5),
                seed: Some(7),
                ..Default::default()
            })
            .unwrap();
            (0..32)
                .map(|_| f.check(ev(Stage::Mail, "app", &[])).is_some())
                .collect::<Vec<_>>()
        };
        let a = seq();
        assert_eq!(a, seq());
        assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x));
        for bad in [
            FaultSpec::default(),
            FaultSpec {
                reply: Some("nope".into()),
                ..Default::default()
            },
            FaultSpec {
                code: Some(99),
                stage: Some(Stage::Mail),
                ..Default::default()
            },
            FaultSpec {
                reply: Some("relay-denied".into()),
                every: Some(0),
                ..Default::default()
            },
            FaultSpec {
                reply: Some("gmail-rate-limit".into()),
                recipients: vec!["*".into()],
                ..Default::default()
            },
            FaultSpec {
                code: Some(451),
                ..Default::default()
            },
        ] {
            assert!(Faults::default().add(bad.clone()).is_err(), "{bad:?}");
        }
        assert!(f.set_enabled("f1", false));
        assert!(f.remove(Some("f1")) && !f.remove(Some("f1")));
    }
}
