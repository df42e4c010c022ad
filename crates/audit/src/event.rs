//! The audit event schema of shared/API.md.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;
use ward_storage::AuditRow;

/// How the actor reached Ward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The HTTP or WebSocket API.
    Api,
    /// The `ward` command line on the server's data dir or database.
    Cli,
    /// Ward itself (start, stop, expiry, background jobs).
    System,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Api => "api",
            Via::Cli => "cli",
            Via::System => "system",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    /// Refused by access control.
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Actor {
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub session_id: Option<String>,
    pub via: Option<Via>,
}

/// An event about to be recorded. Build with [`AuditEvent::new`] and the setters.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub time: OffsetDateTime,
    pub actor: Actor,
    pub via: Via,
    pub action: String,
    pub resource: Option<String>,
    pub outcome: Outcome,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub mfa: bool,
    pub reason: Option<String>,
    /// Ids and metadata only, never PHI.
    pub details: Map<String, Value>,
}

impl AuditEvent {
    pub fn new(action: impl Into<String>, outcome: Outcome, via: Via, time: OffsetDateTime) -> Self {
        Self {
            time,
            actor: Actor::default(),
            via,
            action: action.into(),
            resource: None,
            outcome,
            ip: None,
            user_agent: None,
            mfa: false,
            reason: None,
            details: Map::new(),
        }
    }

    /// The acting user (ids are strings so that system and CLI actors fit too).
    pub fn user(mut self, user_id: impl ToString, username: impl Into<String>) -> Self {
        self.actor.user_id = Some(user_id.to_string());
        self.actor.username = Some(clip(username.into(), 128));
        self
    }

    /// A name that was claimed but not proven (a failed sign-in's username).
    pub fn claimed_username(mut self, username: &str) -> Self {
        self.actor.username = Some(clip(username.to_string(), 128));
        self
    }

    pub fn session(mut self, session_id: impl ToString) -> Self {
        self.actor.session_id = Some(session_id.to_string());
        self
    }

    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    pub fn client(mut self, ip: Option<String>, user_agent: Option<String>) -> Self {
        self.ip = ip;
        self.user_agent = user_agent.map(|u| clip(u, 256));
        self
    }

    pub fn mfa(mut self, mfa: bool) -> Self {
        self.mfa = mfa;
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

fn clip(mut s: String, max_chars: usize) -> String {
    if let Some((i, _)) = s.char_indices().nth(max_chars) {
        s.truncate(i);
    }
    s
}

/// A sealed record, as stored, verified and served (shared/API.md field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub actor: Actor,
    pub action: String,
    pub resource: Option<String>,
    pub outcome: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub mfa: bool,
    pub reason: Option<String>,
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// Reads a stored row; a row that cannot be read is itself evidence of tampering.
    pub fn from_row(row: &AuditRow) -> Result<Self, String> {
        let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(row.time_us) * 1000)
            .map_err(|e| format!("time: {e}"))?;
        let via = match row.via.as_str() {
            "api" => Via::Api,
            "cli" => Via::Cli,
            "system" => Via::System,
            other => return Err(format!("unknown via {other:?}")),
        };
        Ok(AuditRecord {
            seq: row.seq,
            id: Uuid::parse_str(&row.id).map_err(|e| format!("id: {e}"))?,
            time,
            actor: Actor {
                user_id: row.actor_user_id.clone(),
                username: row.actor_username.clone(),
                session_id: row.actor_session_id.clone(),
                via: Some(via),
            },
            action: row.action.clone(),
            resource: row.resource.clone(),
            outcome: row.outcome.clone(),
            ip: row.ip.clone(),
            user_agent: row.user_agent.clone(),
            mfa: row.mfa,
            reason: row.reason.clone(),
            details: serde_json::from_str(&row.details).map_err(|e| format!("details: {e}"))?,
            prev_hash: row.prev_hash.clone(),
            hash: row.hash.clone(),
        })
    }
}

/// Who is acting, from where, and when: everything an audit event needs besides what
/// happened. Built once per request (or CLI command) and passed to domain operations.
#[derive(Debug, Clone)]
pub struct Context {
    pub via: Via,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub mfa: bool,
    pub now: OffsetDateTime,
}

impl Context {
    /// An anonymous caller (before sign-in).
    pub fn anonymous(via: Via, ip: Option<String>, user_agent: Option<String>, now: OffsetDateTime) -> Self {
        Self { via, user_id: None, username: None, session_id: None, ip, user_agent, mfa: false, now }
    }

    /// Ward itself.
    pub fn system(now: OffsetDateTime) -> Self {
        Self::anonymous(Via::System, None, None, now)
    }

    /// An operator at the command line; the OS account is kept as the username.
    pub fn cli(os_user: Option<String>, now: OffsetDateTime) -> Self {
        let mut c = Self::anonymous(Via::Cli, None, None, now);
        c.username = os_user.map(|u| format!("os:{u}"));
        c
    }

    /// A new event from this context.
    pub fn event(&self, action: &str, outcome: Outcome) -> AuditEvent {
        let mut e = AuditEvent::new(action, outcome, self.via, self.now)
            .client(self.ip.clone(), self.user_agent.clone())
            .mfa(self.mfa);
        e.actor.user_id.clone_from(&self.user_id);
        e.actor.username.clone_from(&self.username);
        e.actor.session_id.clone_from(&self.session_id);
        e
    }
}
