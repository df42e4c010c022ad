//! The policy language: IAM-style JSON documents of statements.
//!
//! ```json
//! {"statements": [
//!   {"sid": "read-own-dialogs", "effect": "allow",
//!    "actions": ["message:read", "dialog:*"], "resources": ["dialog/*"],
//!    "conditions": {"dialog_member": true, "source_ip": ["10.0.0.0/8", "192.0.2.7"]}}
//! ]}
//! ```
//!
//! * An action pattern is `*` or `<area>:<verb>` of `[a-z_*?]`, and must match at least one
//!   action of the catalogue ([`crate::actions::ACTIONS`]), so a typo is refused.
//! * A resource pattern is `*` or `<kind>/<rest>`: kind of `[a-z_*?]`, rest printable ASCII
//!   without spaces, at most 200 characters in all.
//! * In patterns `*` matches any run of characters and `?` one character; matching is
//!   case-sensitive.
//! * Conditions (all present ones must hold, see [`crate::engine`]): `mfa`,
//!   `mfa_max_age_s`, `source_ip` / `not_source_ip` (CIDRs or bare addresses),
//!   `time_of_day` (UTC, `[after, before)`, wraps midnight when `after > before`),
//!   `weekdays` (UTC), `credential`, `dialog_member`, `breakglass`.
//!
//! [`PolicyDocument::parse`] checks a document and names the offending location in its
//! error (`statements[2].actions[0]: "mesage:read" matches no known action`), never echoing
//! more than the offending value. [`Policy::compile`] checks again and compiles the
//! patterns once.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::actions::ACTIONS;
use crate::engine::CredentialKind;
use crate::glob::Glob;

/// At most this many statements per document.
pub const MAX_STATEMENTS: usize = 100;
/// At most this many action (and, separately, resource) patterns per statement.
pub const MAX_PATTERNS: usize = 50;
/// At most this many characters in a `sid`.
pub const MAX_SID_CHARS: usize = 64;
/// At most this many characters in an action pattern.
pub const MAX_ACTION_CHARS: usize = 64;
/// At most this many characters in a resource pattern.
pub const MAX_RESOURCE_CHARS: usize = 200;
/// At most this many entries in `source_ip` / `not_source_ip`.
pub const MAX_CIDRS: usize = 100;

/// A policy document: a list of statements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    pub statements: Vec<Statement>,
}

/// One statement: an effect on actions and resources, under conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub effect: Effect,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Conditions::is_empty")]
    pub conditions: Conditions,
}

/// Whether a statement allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

/// Conditions of a statement; every present one must hold for the statement to apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// A second factor was proved in this session (`true`) / was not (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<bool>,
    /// The second factor was proved at most this many seconds ago (implies present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_max_age_s: Option<u64>,
    /// The request's IP is inside one of these networks (a bare address is a /32 or /128).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "deserialize_nets")]
    pub source_ip: Option<Vec<IpNet>>,
    /// The request's IP is inside none of these networks.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "deserialize_nets")]
    pub not_source_ip: Option<Vec<IpNet>>,
    /// The request's time of day (UTC) is inside this window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_of_day: Option<TimeWindow>,
    /// The request's day of the week (UTC) is one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekdays: Option<Vec<Day>>,
    /// The caller authenticated with one of these kinds of credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Vec<CredentialKind>>,
    /// The caller is (`true`) / is not (`false`) a member of the dialog named by the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialog_member: Option<bool>,
    /// The caller holds (`true`) / does not hold (`false`) a live break-glass grant for the
    /// dialog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakglass: Option<bool>,
}

impl Conditions {
    /// Whether no condition is present (the statement is unconditional).
    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }
}

/// A window of the day, UTC, `"HH:MM"` each: `[after, before)`. When `after > before` the
/// window wraps midnight (`22:00`–`06:00`); `after == before` is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    pub after: String,
    pub before: String,
}

/// A day of the week (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    /// 0 for Monday .. 6 for Sunday.
    pub fn number_from_monday(self) -> u8 {
        self as u8
    }
}

/// A refused policy document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The document is invalid; the message names the location (`statements[2].actions[0]`).
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid(message.into())
}

/// `value` for an error message: quoted and escaped, cut after `max` characters.
fn quoted(value: &str, max: usize) -> String {
    match value.char_indices().nth(max) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// A field name for an error location: as is when plain, else quoted (and cut).
fn field_name(key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 64
        && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain { key.to_owned() } else { quoted(key, 64) }
}

/// A serde message, cut to a sane length.
fn serde_message(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message,
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{} is not an IP address or CIDR", quoted(s, 64)))
}

fn deserialize_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<IpNet>>, D::Error> {
    let Some(raw) = Option::<Vec<String>>::deserialize(d)? else {
        return Ok(None);
    };
    raw.iter()
        .enumerate()
        .map(|(i, s)| parse_net(s).map_err(|e| D::Error::custom(format!("entry {i}: {e}"))))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

impl PolicyDocument {
    /// Deserializes and validates a document. The error names the offending location.
    pub fn parse(value: Value) -> Result<PolicyDocument, PolicyError> {
        let doc = match PolicyDocument::deserialize(&value) {
            Ok(doc) => doc,
            Err(e) => return Err(locate(&value, &e)),
        };
        doc.validate()?;
        Ok(doc)
    }

    /// Checks the rules of the language (see the module documentation).
    pub fn validate(&self) -> Result<(), PolicyError> {
        let n = self.statements.len();
        if n == 0 {
            return Err(invalid("statements: at least one statement is required"));
        }
        if n > MAX_STATEMENTS {
            return Err(invalid(format!("statements: at most {MAX_STATEMENTS} statements are allowed (got {n})")));
        }
        for (i, statement) in self.statements.iter().enumerate() {
            statement.validate(i)?;
        }
        Ok(())
    }
}

/// Finds where a document that serde refused went wrong, for a located message.
fn locate(value: &Value, e: &serde_json::Error) -> PolicyError {
    let Some(obj) = value.as_object() else {
        return invalid("the policy document must be a JSON object");
    };
    if let Some(key) = obj.keys().find(|k| *k != "statements") {
        return invalid(format!("{}: unknown field", field_name(key)));
    }
    let Some(statements) = obj.get("statements") else {
        return invalid("statements: missing field");
    };
    let Some(statements) = statements.as_array() else {
        return invalid("statements: must be an array of statements");
    };
    for (i, statement) in statements.iter().enumerate() {
        if let Err(e) = Statement::deserialize(statement) {
            return locate_statement(i, statement, &e);
        }
    }
    invalid(serde_message(e))
}

fn check_field<T: DeserializeOwned>(value: &Value, path: impl FnOnce() -> String) -> Result<(), PolicyError> {
    match T::deserialize(value) {
        Ok(_) => Ok(()),
        Err(e) => Err(invalid(format!("{}: {}", path(), serde_message(&e)))),
    }
}

fn locate_statement(i: usize, value: &Value, e: &serde_json::Error) -> PolicyError {
    let Some(obj) = value.as_object() else {
        return invalid(format!("statements[{i}]: must be an object"));
    };
    for (key, v) in obj {
        let path = || format!("statements[{i}].{key}");
        let checked = match key.as_str() {
            "sid" => check_field::<Option<String>>(v, path),
            "effect" => check_field::<Effect>(v, path),
            "actions" | "resources" => check_field::<Vec<String>>(v, path),
            "conditions" => locate_conditions(i, v),
            _ => Err(invalid(format!("statements[{i}].{}: unknown field", field_name(key)))),
        };
        if let Err(located) = checked {
            return located;
        }
    }
    invalid(format!("statements[{i}]: {}", serde_message(e)))
}

const CONDITION_FIELDS: &[&str] = &[
    "mfa",
    "mfa_max_age_s",
    "source_ip",
    "not_source_ip",
    "time_of_day",
    "weekdays",
    "credential",
    "dialog_member",
    "breakglass",
];

fn locate_conditions(i: usize, value: &Value) -> Result<(), PolicyError> {
    let Some(obj) = value.as_object() else {
        return Err(invalid(format!("statements[{i}].conditions: must be an object")));
    };
    for (key, v) in obj {
        if !CONDITION_FIELDS.contains(&key.as_str()) {
            return Err(invalid(format!("statements[{i}].conditions.{}: unknown field", field_name(key))));
        }
        // Every condition is optional: a one-field object checks just this one.
        let single = Value::Object(Map::from_iter([(key.clone(), v.clone())]));
        if let Err(e) = Conditions::deserialize(&single) {
            return Err(invalid(format!("statements[{i}].conditions.{key}: {}", serde_message(&e))));
        }
    }
    Ok(())
}

/// Why an action pattern is refused (`None`: accepted).
fn action_problem(pattern: &str) -> Option<String> {
    if pattern == "*" {
        return None;
    }
    if pattern.chars().count() > MAX_ACTION_CHARS {
        return Some(format!("longer than {MAX_ACTION_CHARS} characters"));
    }
    let shown = quoted(pattern, MAX_ACTION_CHARS);
    let part_ok =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'*' || b == b'?');
    match pattern.split_once(':') {
        Some((area, verb)) if part_ok(area) && part_ok(verb) => {}
        _ => {
            return Some(format!("{shown} is not \"*\" or <area>:<verb> of a-z, _, * and ?"));
        }
    }
    let glob = Glob::new(pattern);
    if !ACTIONS.iter().any(|action| glob.matches(action)) {
        return Some(format!("{shown} matches no known action"));
    }
    None
}

/// Why a resource pattern is refused (`None`: accepted).
fn resource_problem(pattern: &str) -> Option<String> {
    if pattern == "*" {
        return None;
    }
    if pattern.chars().count() > MAX_RESOURCE_CHARS {
        return Some(format!("longer than {MAX_RESOURCE_CHARS} characters"));
    }
    let shown = quoted(pattern, MAX_RESOURCE_CHARS);
    let Some((kind, rest)) = pattern.split_once('/') else {
        return Some(format!("{shown} is not \"*\" or <kind>/<id>"));
    };
    let kind_ok =
        !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'*' || b == b'?');
    if !kind_ok {
        return Some(format!("{shown}: the kind before \"/\" must be a-z and _ (or wildcards)"));
    }
    if rest.is_empty() {
        return Some(format!("{shown}: nothing after \"/\""));
    }
    if !rest.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(format!("{shown}: the part after \"/\" must be printable ASCII without spaces"));
    }
    None
}

/// Minutes since midnight of `"HH:MM"` (00:00 to 23:59).
fn parse_hhmm(s: &str) -> Option<u16> {
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' {
        return None;
    }
    let digit = |i: usize| b[i].is_ascii_digit().then(|| u16::from(b[i] - b'0'));
    let hours = digit(0)? * 10 + digit(1)?;
    let minutes = digit(3)? * 10 + digit(4)?;
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

impl TimeWindow {
    /// `(after, before)` in minutes since midnight, or the problem (starting with the
    /// location after `time_of_day`).
    fn minutes(&self) -> Result<(u16, u16), String> {
        let parse = |field: &str, s: &str| {
            parse_hhmm(s).ok_or_else(|| format!(".{field}: {} is not a time HH:MM (00:00 to 23:59)", quoted(s, 16)))
        };
        let after = parse("after", &self.after)?;
        let before = parse("before", &self.before)?;
        if after == before {
            return Err(": after and before must differ".to_owned());
        }
        Ok((after, before))
    }
}

impl Statement {
    fn validate(&self, i: usize) -> Result<(), PolicyError> {
        if let Some(sid) = &self.sid
            && sid.chars().count() > MAX_SID_CHARS
        {
            return Err(invalid(format!("statements[{i}].sid: longer than {MAX_SID_CHARS} characters")));
        }
        for (field, patterns, problem) in [
            ("actions", &self.actions, action_problem as fn(&str) -> Option<String>),
            ("resources", &self.resources, resource_problem),
        ] {
            if patterns.is_empty() {
                return Err(invalid(format!("statements[{i}].{field}: must not be empty")));
            }
            if patterns.len() > MAX_PATTERNS {
                return Err(invalid(format!(
                    "statements[{i}].{field}: at most {MAX_PATTERNS} entries are allowed (got {})",
                    patterns.len()
                )));
            }
            for (j, pattern) in patterns.iter().enumerate() {
                if let Some(problem) = problem(pattern) {
                    return Err(invalid(format!("statements[{i}].{field}[{j}]: {problem}")));
                }
            }
        }
        self.conditions.validate().map_err(|problem| invalid(format!("statements[{i}].conditions{problem}")))
    }
}

impl Conditions {
    /// The problem, starting with the location after `conditions` (`.weekdays: …`).
    fn validate(&self) -> Result<(), String> {
        fn list<T>(field: &str, list: &Option<Vec<T>>, max: usize) -> Result<(), String> {
            match list {
                Some(l) if l.is_empty() => Err(format!(".{field}: must not be empty")),
                Some(l) if l.len() > max => {
                    Err(format!(".{field}: at most {max} entries are allowed (got {})", l.len()))
                }
                _ => Ok(()),
            }
        }
        if self.mfa_max_age_s == Some(0) {
            return Err(".mfa_max_age_s: must be at least 1".to_owned());
        }
        if self.mfa == Some(false) && self.mfa_max_age_s.is_some() {
            return Err(": mfa false contradicts mfa_max_age_s".to_owned());
        }
        list("source_ip", &self.source_ip, MAX_CIDRS)?;
        list("not_source_ip", &self.not_source_ip, MAX_CIDRS)?;
        list("weekdays", &self.weekdays, usize::MAX)?;
        list("credential", &self.credential, usize::MAX)?;
        if let Some(window) = &self.time_of_day {
            window.minutes().map_err(|e| format!(".time_of_day{e}"))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The compiled form.

/// A validated, compiled policy: a name and its document, with the patterns compiled once.
///
/// `document` is what was compiled; changing it afterwards does not change how the policy
/// evaluates (compile a new one).
#[derive(Clone)]
pub struct Policy {
    pub name: String,
    pub document: PolicyDocument,
    pub(crate) compiled: Box<[CompiledStatement]>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy").field("name", &self.name).field("document", &self.document).finish_non_exhaustive()
    }
}

impl Policy {
    /// Validates `doc` and compiles its patterns and conditions.
    pub fn compile(name: impl Into<String>, doc: PolicyDocument) -> Result<Policy, PolicyError> {
        doc.validate()?;
        let compiled = doc.statements.iter().map(CompiledStatement::new).collect();
        Ok(Policy { name: name.into(), document: doc, compiled })
    }

    /// The number of statements.
    pub fn statements_len(&self) -> usize {
        self.compiled.len()
    }
}

/// The actions of a statement: a bit per catalogue action (the index in [`ACTIONS`]) that
/// some pattern matches, and the patterns themselves for actions outside the catalogue.
#[derive(Debug, Clone)]
pub(crate) struct ActionSet {
    known: u128,
    patterns: Box<[Glob]>,
}

/// An action to evaluate, looked up once: its catalogue index when it has a bit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActionKey<'a> {
    pub(crate) action: &'a str,
    pub(crate) bit: Option<u128>,
}

impl<'a> ActionKey<'a> {
    pub(crate) fn new(action: &'a str) -> ActionKey<'a> {
        let bit = ACTIONS.iter().take(128).position(|a| *a == action).map(|index| 1u128 << index);
        ActionKey { action, bit }
    }
}

impl ActionSet {
    fn new(patterns: &[String]) -> ActionSet {
        let patterns: Box<[Glob]> = patterns.iter().map(|p| Glob::new(p)).collect();
        let known = ACTIONS.iter().take(128).enumerate().fold(0u128, |bits, (index, action)| {
            if patterns.iter().any(|g| g.matches(action)) { bits | (1u128 << index) } else { bits }
        });
        ActionSet { known, patterns }
    }

    #[inline]
    pub(crate) fn matches(&self, key: &ActionKey<'_>) -> bool {
        match key.bit {
            Some(bit) => self.known & bit != 0,
            None => self.patterns.iter().any(|g| g.matches(key.action)),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledStatement {
    pub(crate) sid: Option<String>,
    pub(crate) effect: Effect,
    pub(crate) actions: ActionSet,
    pub(crate) resources: Box<[Glob]>,
    /// `None` when the statement is unconditional.
    pub(crate) conditions: Option<Box<CompiledConditions>>,
}

impl CompiledStatement {
    fn new(statement: &Statement) -> CompiledStatement {
        CompiledStatement {
            sid: statement.sid.clone(),
            effect: statement.effect,
            actions: ActionSet::new(&statement.actions),
            resources: statement.resources.iter().map(|p| Glob::new(p)).collect(),
            conditions: (!statement.conditions.is_empty())
                .then(|| Box::new(CompiledConditions::new(&statement.conditions))),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledConditions {
    pub(crate) mfa: Option<bool>,
    pub(crate) mfa_max_age_s: Option<i64>,
    pub(crate) source_ip: Option<Box<[IpNet]>>,
    pub(crate) not_source_ip: Option<Box<[IpNet]>>,
    /// `(after, before)`, minutes since midnight UTC.
    pub(crate) time_of_day: Option<(u16, u16)>,
    /// Bit `n` for the day `n` days from Monday.
    pub(crate) weekdays: Option<u8>,
    /// Bit per [`CredentialKind`].
    pub(crate) credential: Option<u8>,
    pub(crate) dialog_member: Option<bool>,
    pub(crate) breakglass: Option<bool>,
}

impl CompiledConditions {
    fn new(c: &Conditions) -> CompiledConditions {
        let nets = |list: &Option<Vec<IpNet>>| list.as_ref().map(|l| l.iter().map(IpNet::trunc).collect::<Box<[_]>>());
        CompiledConditions {
            mfa: c.mfa,
            mfa_max_age_s: c.mfa_max_age_s.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            source_ip: nets(&c.source_ip),
            not_source_ip: nets(&c.not_source_ip),
            // Validated before compiling: an invalid window cannot reach here.
            time_of_day: c.time_of_day.as_ref().and_then(|w| w.minutes().ok()),
            weekdays: c.weekdays.as_ref().map(|days| days.iter().fold(0u8, |m, d| m | (1 << d.number_from_monday()))),
            credential: c.credential.as_ref().map(|kinds| kinds.iter().fold(0u8, |m, k| m | k.bit())),
            dialog_member: c.dialog_member,
            breakglass: c.breakglass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(value: Value) -> String {
        match PolicyDocument::parse(value) {
            Ok(doc) => panic!("accepted: {doc:?}"),
            Err(PolicyError::Invalid(message)) => message,
        }
    }

    fn one(statement: Value) -> Value {
        json!({ "statements": [statement] })
    }

    fn allow_with(conditions: Value) -> Value {
        one(json!({"effect": "allow", "actions": ["message:read"], "resources": ["dialog/*"],
                   "conditions": conditions}))
    }

    #[test]
    fn parses_a_full_document_and_round_trips() {
        let value = json!({"statements": [
            {"sid": "members", "effect": "allow", "actions": ["message:*", "dialog:read"],
             "resources": ["dialog/*"],
             "conditions": {"mfa": true, "mfa_max_age_s": 900,
                            "source_ip": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "2001:db8::1"],
                            "not_source_ip": ["10.9.0.0/16"],
                            "time_of_day": {"after": "22:00", "before": "06:00"},
                            "weekdays": ["mon", "sun"], "credential": ["session", "sts", "api_key"],
                            "dialog_member": true, "breakglass": false}},
            {"effect": "deny", "actions": ["*"], "resources": ["*"]}
        ]});
        let doc = PolicyDocument::parse(value).expect("valid");
        let c = &doc.statements[0].conditions;
        assert_eq!(
            c.source_ip.as_deref(),
            Some(
                &[
                    "10.0.0.0/8".parse::<IpNet>().expect("net"),
                    "192.0.2.7/32".parse().expect("net"),
                    "2001:db8::/32".parse().expect("net"),
                    "2001:db8::1/128".parse().expect("net"),
                ][..]
            )
        );
        assert_eq!(c.weekdays.as_deref(), Some(&[Day::Mon, Day::Sun][..]));
        assert_eq!(
            c.credential.as_deref(),
            Some(&[CredentialKind::Session, CredentialKind::Sts, CredentialKind::ApiKey][..])
        );
        assert!(doc.statements[1].conditions.is_empty());
        let serialized = serde_json::to_value(&doc).expect("serialize");
        assert_eq!(serialized["statements"][0]["conditions"]["time_of_day"]["after"], "22:00");
        assert_eq!(serialized["statements"][0]["conditions"]["source_ip"][1], "192.0.2.7/32");
        assert!(serialized["statements"][1].get("conditions").is_none());
        assert!(serialized["statements"][1].get("sid").is_none());
        assert_eq!(PolicyDocument::parse(serialized).expect("round trip"), doc);
        let policy = Policy::compile("p", doc).expect("compile");
        assert_eq!(policy.statements_len(), 2);
    }

    #[test]
    fn policy_is_send_sync_clone_debug() {
        fn check<T: Send + Sync + Clone + fmt::Debug + 'static>() {}
        check::<Policy>();
        check::<PolicyDocument>();
    }

    #[test]
    fn unknown_action_is_refused_with_its_location() {
        let value = json!({"statements": [
            {"effect": "allow", "actions": ["message:read"], "resources": ["dialog/*"]},
            {"effect": "allow", "actions": ["message:read"], "resources": ["dialog/*"]},
            {"effect": "allow", "actions": ["mesage:read"], "resources": ["dialog/*"]}
        ]});
        assert_eq!(err(value), r#"statements[2].actions[0]: "mesage:read" matches no known action"#);
        assert_eq!(
            err(one(json!({"effect": "allow", "actions": ["user:read", "*:reed"], "resources": ["*"]}))),
            r#"statements[0].actions[1]: "*:reed" matches no known action"#
        );
    }

    #[test]
    fn bad_action_syntax() {
        for bad in ["message", "Message:read", "message:", ":read", "message:read:x", "message :read", "**"] {
            let message = err(one(json!({"effect": "allow", "actions": [bad], "resources": ["*"]})));
            assert!(message.starts_with("statements[0].actions[0]: "), "{bad}: {message}");
            assert!(message.contains("is not \"*\" or <area>:<verb>"), "{bad}: {message}");
        }
        let long = format!("message:{}", "x".repeat(100));
        let message = err(one(json!({"effect": "allow", "actions": [long], "resources": ["*"]})));
        assert_eq!(message, "statements[0].actions[0]: longer than 64 characters");
        // Wildcards and ? in both parts are fine when they match something.
        for good in ["*", "*:*", "message:*", "*:read", "m?ssage:rea?", "dialog:*_member"] {
            PolicyDocument::parse(one(json!({"effect": "allow", "actions": [good], "resources": ["*"]})))
                .unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn bad_resources() {
        let cases = [
            ("dialog", "is not \"*\" or <kind>/<id>"),
            ("dialog/", "nothing after"),
            ("/42", "the kind before"),
            ("Dialog/42", "the kind before"),
            ("dia-log/42", "the kind before"),
            ("dialog/4 2", "printable ASCII"),
            ("dialog/é", "printable ASCII"),
            ("dialog/\u{7}", "printable ASCII"),
        ];
        for (bad, expected) in cases {
            let message = err(one(json!({"effect": "allow", "actions": ["*"], "resources": ["user/1", bad]})));
            assert!(message.starts_with("statements[0].resources[1]: "), "{bad}: {message}");
            assert!(message.contains(expected), "{bad}: {message}");
        }
        let long = format!("dialog/{}", "1".repeat(300));
        let message = err(one(json!({"effect": "allow", "actions": ["*"], "resources": [long]})));
        assert_eq!(message, "statements[0].resources[0]: longer than 200 characters");
        for good in ["*", "dialog/*", "*/1", "d?alog/x", "user/a/b:c", "dialog/01J8ZK~x"] {
            PolicyDocument::parse(one(json!({"effect": "allow", "actions": ["*"], "resources": [good]})))
                .unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn statement_counts_and_lists() {
        assert_eq!(err(json!({"statements": []})), "statements: at least one statement is required");
        let many: Vec<Value> =
            (0..101).map(|_| json!({"effect": "deny", "actions": ["*"], "resources": ["*"]})).collect();
        assert!(err(json!({ "statements": many })).starts_with("statements: at most 100"));
        assert_eq!(
            err(one(json!({"effect": "allow", "actions": [], "resources": ["*"]}))),
            "statements[0].actions: must not be empty"
        );
        assert_eq!(
            err(one(json!({"effect": "allow", "actions": ["*"], "resources": []}))),
            "statements[0].resources: must not be empty"
        );
        let actions = vec!["message:read"; 51];
        assert!(
            err(one(json!({"effect": "allow", "actions": actions, "resources": ["*"]})))
                .starts_with("statements[0].actions: at most 50 entries")
        );
        let sid = "s".repeat(65);
        assert_eq!(
            err(one(json!({"sid": sid, "effect": "allow", "actions": ["*"], "resources": ["*"]}))),
            "statements[0].sid: longer than 64 characters"
        );
    }

    #[test]
    fn unknown_fields_and_types_are_located() {
        assert_eq!(err(json!({"statements": [], "version": 1})), "version: unknown field");
        assert_eq!(err(json!([])), "the policy document must be a JSON object");
        assert_eq!(err(json!({})), "statements: missing field");
        assert_eq!(
            err(one(json!({"effect": "allow", "action": ["*"], "resources": ["*"]}))),
            "statements[0].action: unknown field"
        );
        assert_eq!(
            err(allow_with(json!({"mfa": true, "ip": ["10.0.0.0/8"]}))),
            "statements[0].conditions.ip: unknown field"
        );
        let message = err(one(json!({"effect": "alow", "actions": ["*"], "resources": ["*"]})));
        assert!(message.starts_with("statements[0].effect: unknown variant `alow`"), "{message}");
        let message = err(one(json!({"actions": ["*"], "resources": ["*"]})));
        assert_eq!(message, "statements[0]: missing field `effect`");
        let message = err(allow_with(json!({"weekdays": ["monday"]})));
        assert!(message.starts_with("statements[0].conditions.weekdays: unknown variant `monday`"), "{message}");
        let message = err(allow_with(json!({"credential": ["password"]})));
        assert!(message.starts_with("statements[0].conditions.credential: unknown variant"), "{message}");
        let message = err(allow_with(json!({"time_of_day": {"after": "01:00", "before": "02:00", "tz": "x"}})));
        assert!(message.starts_with("statements[0].conditions.time_of_day: unknown field `tz`"), "{message}");
        let message = err(allow_with(json!({"mfa": "yes"})));
        assert!(message.starts_with("statements[0].conditions.mfa: invalid type"), "{message}");
        let message = err(one(json!({"effect": "allow", "actions": "message:read", "resources": ["*"]})));
        assert!(message.starts_with("statements[0].actions: invalid type"), "{message}");
        // A weird key is quoted and cut, never echoed in full.
        let key = format!("k{}", "\n".repeat(500));
        let message = err(one(json!({"effect": "allow", "actions": ["*"], "resources": ["*"], key: 1})));
        assert!(message.starts_with("statements[0].\"k\\n"), "{message}");
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn bad_ip_lists() {
        let message = err(allow_with(json!({"source_ip": ["10.0.0.0/8", "10.0.0.300"]})));
        assert_eq!(
            message,
            r#"statements[0].conditions.source_ip: entry 1: "10.0.0.300" is not an IP address or CIDR"#
        );
        let message = err(allow_with(json!({"not_source_ip": ["10.0.0.0/33"]})));
        assert!(message.starts_with("statements[0].conditions.not_source_ip: entry 0:"), "{message}");
        assert_eq!(err(allow_with(json!({"source_ip": []}))), "statements[0].conditions.source_ip: must not be empty");
        let many: Vec<String> = (0..101).map(|i| format!("10.0.0.{i}")).collect();
        assert!(
            err(allow_with(json!({ "source_ip": many })))
                .starts_with("statements[0].conditions.source_ip: at most 100 entries")
        );
    }

    #[test]
    fn bad_conditions() {
        let bad_times = [
            (json!({"after": "24:00", "before": "06:00"}), ".time_of_day.after: \"24:00\" is not a time"),
            (json!({"after": "22:00", "before": "6:00"}), ".time_of_day.before: \"6:00\" is not a time"),
            (json!({"after": "22:60", "before": "06:00"}), ".time_of_day.after: \"22:60\" is not a time"),
            (json!({"after": "2200", "before": "06:00"}), ".time_of_day.after:"),
            (json!({"after": "+1:00", "before": "06:00"}), ".time_of_day.after:"),
            (json!({"after": "09:00", "before": "09:00"}), ".time_of_day: after and before must differ"),
        ];
        for (window, expected) in bad_times {
            let message = err(allow_with(json!({ "time_of_day": window })));
            assert!(message.starts_with(&format!("statements[0].conditions{expected}")), "{message}");
        }
        assert_eq!(err(allow_with(json!({"weekdays": []}))), "statements[0].conditions.weekdays: must not be empty");
        assert_eq!(
            err(allow_with(json!({"credential": []}))),
            "statements[0].conditions.credential: must not be empty"
        );
        assert_eq!(
            err(allow_with(json!({"mfa_max_age_s": 0}))),
            "statements[0].conditions.mfa_max_age_s: must be at least 1"
        );
        assert_eq!(
            err(allow_with(json!({"mfa": false, "mfa_max_age_s": 60}))),
            "statements[0].conditions: mfa false contradicts mfa_max_age_s"
        );
        for good in [
            json!({"time_of_day": {"after": "00:00", "before": "23:59"}}),
            json!({"time_of_day": {"after": "23:59", "before": "00:00"}}),
            json!({"mfa": true, "mfa_max_age_s": 1}),
            json!({}),
        ] {
            PolicyDocument::parse(allow_with(good.clone())).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn compile_validates_a_document_built_in_code() {
        let doc = PolicyDocument {
            statements: vec![Statement {
                sid: None,
                effect: Effect::Allow,
                actions: vec!["message:raed".to_owned()],
                resources: vec!["*".to_owned()],
                conditions: Conditions::default(),
            }],
        };
        let e = Policy::compile("p", doc).expect_err("typo");
        assert_eq!(e.to_string(), r#"statements[0].actions[0]: "message:raed" matches no known action"#);
    }
}
