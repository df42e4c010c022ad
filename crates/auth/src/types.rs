//! Checked values of the identity domain: parse, don't validate.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;
use ward_storage::UserRecord;

use crate::AuthError;

/// Built-in roles (shared/API.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages users, policies, settings and keys; reads no PHI.
    Admin,
    Clinician,
    Staff,
    Patient,
    /// Reads the audit trail and reports; reads no PHI.
    Auditor,
    /// A non-human client (integration, bot).
    Service,
}

impl Role {
    pub const ALL: [Role; 6] = [Role::Admin, Role::Clinician, Role::Staff, Role::Patient, Role::Auditor, Role::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clinician => "clinician",
            Role::Staff => "staff",
            Role::Patient => "patient",
            Role::Auditor => "auditor",
            Role::Service => "service",
        }
    }
}

impl FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| AuthError::UnknownRole(s.to_string()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A username: 1 to 64 characters of letters, digits and `.`, `_`, `-`, `@`, starting
/// with a letter or digit. Unique ignoring case; [`Username::key`] is the folded form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, AuthError> {
        let s = raw.trim();
        if s.is_empty() || s.chars().count() > 64 {
            return Err(AuthError::InvalidUsername("must be 1 to 64 characters".into()));
        }
        if !s.chars().next().is_some_and(char::is_alphanumeric) {
            return Err(AuthError::InvalidUsername("must start with a letter or digit".into()));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))) {
            return Err(AuthError::InvalidUsername(format!("character {c:?} is not allowed")));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-folded key that must be unique.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// NIST SP 800-63B rules: no composition rules, a length window, no password that is or
/// contains the username, and no password found in the common and breached password
/// dictionaries or built from an easily guessed pattern. The dictionary check is zxcvbn
/// (its password frequency lists, English words, names, keyboard patterns, dates and
/// l33t substitutions), with the username as an extra dictionary word so its variants are
/// refused too; a password scoring below 3 of 4 ("safely unguessable") is refused.
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub max_length: usize,
}

impl PasswordPolicy {
    pub fn new(min_length: usize) -> Self {
        Self { min_length, max_length: 128 }
    }

    pub fn check(&self, password: &str, username: &Username) -> Result<(), AuthError> {
        let len = password.chars().count();
        if len < self.min_length {
            return Err(AuthError::WeakPassword(format!("must be at least {} characters", self.min_length)));
        }
        if len > self.max_length {
            return Err(AuthError::WeakPassword(format!("must be at most {} characters", self.max_length)));
        }
        let folded = password.to_lowercase();
        let name = username.key();
        // Containment is only meaningful for names long enough not to occur by chance.
        if folded == name || (name.chars().count() >= 4 && folded.contains(&name)) {
            return Err(AuthError::WeakPassword("must not contain the username".into()));
        }
        let estimate = zxcvbn::zxcvbn(password, &[username.as_str(), &name]);
        if (estimate.score() as u8) < 3 {
            return Err(AuthError::WeakPassword(
                "is too easy to guess: it is a common or breached password, a dictionary word, a variant \
                 of the username, or a simple pattern; a passphrase of several unrelated words works well"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A user as the rest of Ward sees it. The password hash stays in storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub roles: Vec<Role>,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl TryFrom<&UserRecord> for User {
    type Error = AuthError;
    fn try_from(r: &UserRecord) -> Result<Self, AuthError> {
        let roles = r.roles.iter().map(|s| s.parse()).collect::<Result<Vec<Role>, _>>()?;
        Ok(User { id: r.id, username: r.username.clone(), roles, disabled: r.disabled, created_at: r.created_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_fold_case_and_reject_odd_characters() {
        assert_eq!(Username::parse(" Dr.Smith ").expect("valid").key(), "dr.smith");
        assert!(Username::parse("").is_err());
        assert!(Username::parse("-lead").is_err());
        assert!(Username::parse("a b").is_err());
        assert!(Username::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn password_policy_names_the_rule() {
        let p = PasswordPolicy::new(12);
        let u = Username::parse("alice").expect("valid");
        assert!(p.check("short", &u).expect_err("short").to_string().contains("at least 12"));
        assert!(p.check(&"x".repeat(129), &u).expect_err("long").to_string().contains("at most 128"));
        assert!(p.check("xxAlice-2026-xx", &u).expect_err("name").to_string().contains("username"));
        assert!(p.check("plenty long passphrase", &u).is_ok());
        for common in ["password1234", "qwertyuiop123", "iloveyou2024", "Alice12345678!", "123456789012"] {
            let e = p.check(common, &u).expect_err(common).to_string();
            assert!(e.contains("too easy to guess") || e.contains("username"), "{common}: {e}");
        }
        let short = Username::parse("al").expect("valid");
        assert!(p.check("always allowed passphrase", &short).is_ok(), "short names are not substrings rules");
    }

    #[test]
    fn roles_parse_case_insensitively() {
        assert_eq!("Clinician".parse::<Role>().expect("role"), Role::Clinician);
        assert!("root".parse::<Role>().is_err());
    }
}
