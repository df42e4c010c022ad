//! Second factors (HIPAA 164.312(d)): TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30 s steps,
//! ±1 step) with ten one-time recovery codes.
//!
//! **Factor model.** A factor is a row of `kind` (`totp` today, `webauthn` next), `state`
//! (`pending` → `active`) and a kind-specific secret sealed (AES-256-GCM) under the
//! user's data key, with an AAD naming the factor and the user, so a secret copied to
//! another row does not open. Sign-in asks for "a second factor" and dispatches on the
//! user's active factors, so WebAuthn adds a kind, not a new flow.
//!
//! **Replay.** Each TOTP code is accepted once: the factor remembers the newest time step
//! accepted and only later steps pass (an atomic conditional update, so two nodes cannot
//! both accept a code). Recovery codes carry 80 random bits and are stored as SHA-256
//! digests; each is spent by an atomic update.
//!
//! **Guessing.** A sign-in challenge (`mfa_token`, 256 random bits, stored as a digest)
//! lives 5 minutes and allows 5 attempts; every wrong code also counts as a failed
//! sign-in of the account, so lockout applies to the second factor as to the password.

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;
use ward_audit::{Context, Outcome};
use ward_crypto::{SessionToken, sha256_hex};
use ward_storage::{MfaChallengeRecord, MfaFactorRecord};
use zeroize::Zeroizing;

use crate::accounts::{Authenticated, CredentialKind, LoginSuccess};
use crate::{Accounts, AuthError, User};

/// TOTP parameters (RFC 6238 defaults, which every authenticator app supports).
pub const TOTP_DIGITS: usize = 6;
pub const TOTP_STEP_S: u64 = 30;
/// Recovery codes handed out at enrollment.
pub const RECOVERY_CODES: usize = 10;
/// How long the second step of a sign-in stays open, and how many codes it accepts.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
pub const CHALLENGE_ATTEMPTS: i64 = 5;

/// What enrollment shows the user once: the secret for manual entry and the URI for a QR code.
pub struct TotpEnrollment {
    pub secret_base32: Zeroizing<String>,
    pub otpauth_uri: Zeroizing<String>,
}

impl std::fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrollment(<redacted>)")
    }
}

/// Constant-time equality of two codes.
fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn totp(secret: &[u8], issuer: &str, account: &str) -> Result<totp_rs::TOTP, AuthError> {
    totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        TOTP_DIGITS,
        1,
        TOTP_STEP_S,
        secret.to_vec(),
        Some(issuer.to_string()),
        account.to_string(),
    )
    .map_err(|e| AuthError::Invalid(format!("cannot build the TOTP factor: {e}")))
}

/// The time step (±1 around `now`) whose code equals `code`, if any.
fn matching_step(totp: &totp_rs::TOTP, code: &str, now: OffsetDateTime) -> Option<i64> {
    let step = now.unix_timestamp().max(0) / TOTP_STEP_S as i64;
    (step - 1..=step + 1).filter(|s| *s >= 0).find(|s| ct_eq(&totp.generate((*s as u64) * TOTP_STEP_S), code))
}

/// A code as typed: digits for TOTP; anything else is read as a recovery code.
enum Code {
    Totp(String),
    Recovery(String),
}

fn parse_code(raw: &str) -> Code {
    let compact: String = raw.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
    if compact.len() == TOTP_DIGITS && compact.chars().all(|c| c.is_ascii_digit()) {
        Code::Totp(compact)
    } else {
        Code::Recovery(compact.to_ascii_lowercase())
    }
}

fn recovery_digest(user_id: Uuid, normalized: &str) -> String {
    sha256_hex(format!("ward:recovery-code|{user_id}|{normalized}").as_bytes())
}

/// Ten fresh recovery codes, `xxxx-xxxx-xxxx-xxxx` in lower-case base32 (80 bits each).
fn new_recovery_codes() -> Vec<String> {
    use rand::RngCore as _;
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 16];
            rand::rng().fill_bytes(&mut bytes);
            let chars: String = bytes.iter().map(|b| ALPHABET[usize::from(b % 32)] as char).collect();
            chars.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("-")
        })
        .collect()
}

fn factor_aad(factor_id: Uuid, user_id: Uuid) -> Vec<u8> {
    format!("ward:mfa-factor|{factor_id}|{user_id}").into_bytes()
}

impl Accounts {
    pub(crate) async fn has_active_factor(&self, user_id: Uuid) -> Result<bool, AuthError> {
        Ok(self.store.mfa_factors(user_id).await?.iter().any(|f| f.state == "active"))
    }

    /// A fresh sign-in challenge for `user_id`; the token is handed out once.
    pub(crate) fn new_challenge(&self, user_id: Uuid, now: OffsetDateTime) -> (SessionToken, MfaChallengeRecord) {
        let token = SessionToken::generate();
        let record = MfaChallengeRecord {
            id: Uuid::now_v7(),
            token_hash: token.hash().0,
            user_id,
            created_at: now,
            expires_at: now + CHALLENGE_TTL,
            attempts: 0,
            used_at: None,
        };
        (token, record)
    }

    async fn open_secret(&self, factor: &MfaFactorRecord) -> Result<Zeroizing<Vec<u8>>, AuthError> {
        let key = self.keys.by_id(factor.data_key_id).await?;
        Ok(ward_keys::open(&key, &factor_aad(factor.id, factor.user_id), &factor.secret)?)
    }

    /// Starts TOTP enrollment for the caller: a new secret, sealed and stored as a pending
    /// factor (replacing an unconfirmed one). Refused when TOTP is already active.
    pub async fn enroll_totp(&self, ctx: &Context, who: &Authenticated) -> Result<TotpEnrollment, AuthError> {
        let attempt = async {
            if who.kind != CredentialKind::Session {
                return Err(AuthError::Forbidden("only a sign-in session can enroll a second factor".into()));
            }
            if self.has_active_factor(who.user.id).await? {
                return Err(AuthError::Conflict("a TOTP factor is already active for this account".into()));
            }
            let mut secret = Zeroizing::new(vec![0u8; 20]);
            rand::RngCore::fill_bytes(&mut rand::rng(), secret.as_mut_slice());
            let generator = totp(&secret, &self.credentials.mfa_issuer, &who.user.username)?;
            let enrollment = TotpEnrollment {
                secret_base32: Zeroizing::new(generator.get_secret_base32()),
                otpauth_uri: Zeroizing::new(generator.get_url()),
            };
            let mut tx = self.store.begin().await?;
            let (key_id, key) = self.keys.get_or_create(&mut *tx, &format!("user/{}", who.user.id), ctx.now).await?;
            let id = Uuid::now_v7();
            let factor = MfaFactorRecord {
                id,
                user_id: who.user.id,
                kind: "totp".into(),
                state: "pending".into(),
                secret: ward_keys::seal(&key, &factor_aad(id, who.user.id), &secret)?,
                data_key_id: key_id,
                last_used_step: 0,
                created_at: ctx.now,
                confirmed_at: None,
            };
            tx.insert_mfa_factor(&factor).await?;
            let event = ctx
                .event("auth.mfa_enroll", Outcome::Success)
                .resource(format!("user/{}", who.user.id))
                .detail("factor", "totp")
                .detail("stage", "started");
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            Ok(enrollment)
        };
        self.audited_failure(ctx, "auth.mfa_enroll", None, attempt.await).await
    }

    /// Confirms a pending TOTP enrollment with a current code: the factor becomes active,
    /// ten recovery codes are issued (shown once), and the calling session counts as
    /// MFA-verified from now on.
    pub async fn confirm_totp(&self, ctx: &Context, who: &Authenticated, code: &str) -> Result<Vec<String>, AuthError> {
        let attempt = async {
            let pending = self.store.mfa_factors(who.user.id).await?;
            let factor = pending
                .iter()
                .rev()
                .find(|f| f.kind == "totp" && f.state == "pending")
                .ok_or_else(|| AuthError::Invalid("no TOTP enrollment is pending: call enroll first".into()))?;
            let secret = self.open_secret(factor).await?;
            let generator = totp(&secret, &self.credentials.mfa_issuer, &who.user.username)?;
            let step = match parse_code(code) {
                Code::Totp(c) => matching_step(&generator, &c, ctx.now),
                Code::Recovery(_) => None,
            }
            .ok_or_else(|| AuthError::Invalid("the code does not match: check the authenticator's clock".into()))?;
            let codes = new_recovery_codes();
            let digests: Vec<String> =
                codes.iter().map(|c| recovery_digest(who.user.id, &c.replace('-', ""))).collect();
            let mut tx = self.store.begin().await?;
            if !tx.activate_mfa_factor(factor.id, ctx.now).await? || !tx.use_totp_step(factor.id, step).await? {
                return Err(AuthError::Conflict("the enrollment changed meanwhile: enroll again".into()));
            }
            tx.replace_recovery_codes(who.user.id, &digests, ctx.now).await?;
            tx.set_session_mfa(who.session.id, ctx.now).await?;
            let event = ctx
                .event("auth.mfa_enroll", Outcome::Success)
                .resource(format!("user/{}", who.user.id))
                .mfa(true)
                .detail("factor", "totp")
                .detail("stage", "confirmed")
                .detail("recovery_codes", RECOVERY_CODES);
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            self.cache.forget(&who.session.token_hash);
            Ok(codes)
        };
        self.audited_failure(ctx, "auth.mfa_enroll", None, attempt.await).await
    }

    /// The second step of a sign-in: a TOTP code or a recovery code for the challenge
    /// that [`Accounts::login`] handed out. Success opens an MFA-verified session.
    pub async fn complete_mfa_login(
        &self,
        ctx: &Context,
        mfa_token: &str,
        code: &str,
    ) -> Result<LoginSuccess, AuthError> {
        let refuse = |reason: &str, user: Option<(Uuid, &str)>| {
            let mut e = ctx.event("auth.mfa", Outcome::Failure).reason(reason);
            if let Some((id, name)) = user {
                e = e.user(id, name.to_string());
            }
            e
        };
        let hash = SessionToken::from_client(mfa_token).hash();
        let challenge = self.store.mfa_challenge(&hash.0).await?;
        let Some(challenge) = challenge.filter(|c| c.used_at.is_none() && c.expires_at > ctx.now) else {
            self.audit.record_alone(&refuse("unknown_or_expired_challenge", None)).await?;
            return Err(AuthError::MfaChallengeInvalid);
        };
        let record = self.store.user_by_id(challenge.user_id).await?.ok_or(AuthError::MfaChallengeInvalid)?;
        let who = Some((record.id, record.username.as_str()));
        if record.disabled {
            self.audit.record_alone(&refuse("disabled", who)).await?;
            return Err(AuthError::MfaChallengeInvalid);
        }
        if let Some(until) = record.locked_until.filter(|u| *u > ctx.now) {
            self.audit.record_alone(&refuse("locked", who)).await?;
            let hard = record.failed_logins >= self.settings.hard_lock_threshold;
            let retry_after_s = (!hard).then(|| u64::try_from((until - ctx.now).whole_seconds()).unwrap_or(0).max(1));
            return Err(AuthError::Locked { retry_after_s });
        }
        let factors = self.store.mfa_factors(record.id).await?;
        let Some(factor) = factors.iter().find(|f| f.state == "active" && f.kind == "totp") else {
            self.audit.record_alone(&refuse("no_factor", who)).await?;
            return Err(AuthError::MfaChallengeInvalid);
        };
        let secret = self.open_secret(factor).await?;
        let generator = totp(&secret, &self.credentials.mfa_issuer, &record.username)?;
        let (method, step, recovery) = match parse_code(code) {
            Code::Totp(c) => ("totp", matching_step(&generator, &c, ctx.now), None),
            Code::Recovery(c) => ("recovery_code", None, Some(recovery_digest(record.id, &c))),
        };

        let mut tx = self.store.begin().await?;
        let accepted = match (&step, &recovery) {
            (Some(s), _) => tx.use_totp_step(factor.id, *s).await?,
            (None, Some(d)) => tx.use_recovery_code(record.id, d, ctx.now).await?,
            (None, None) => false,
        };
        if !accepted {
            let reason = if step.is_some() { "code_reused" } else { "bad_code" };
            let attempts = tx.count_challenge_attempt(challenge.id).await?;
            if attempts >= CHALLENGE_ATTEMPTS {
                tx.consume_mfa_challenge(challenge.id, ctx.now).await?;
            }
            let settings = self.settings;
            let now = ctx.now;
            let failures = tx.record_login_failure(record.id, &move |n| settings.lock_until(n, now)).await?;
            let event = refuse(reason, who).detail("method", method).detail("failed_logins", failures);
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            return Err(AuthError::InvalidCode);
        }
        if !tx.consume_mfa_challenge(challenge.id, ctx.now).await? {
            drop(tx);
            self.audit.record_alone(&refuse("unknown_or_expired_challenge", who)).await?;
            return Err(AuthError::MfaChallengeInvalid);
        }
        if record.failed_logins > 0 || record.locked_until.is_some() {
            tx.unlock_user(record.id, ctx.now).await?;
        }
        let (token, session) = self.new_session(ctx, record.id, Some(ctx.now));
        tx.insert_session(&session).await?;
        let mut event = ctx
            .event("auth.mfa", Outcome::Success)
            .user(record.id, record.username.clone())
            .session(session.id)
            .resource(format!("session/{}", session.id))
            .mfa(true)
            .detail("method", method);
        if recovery.is_some() {
            let left = self.store.recovery_codes_left(record.id).await?.saturating_sub(1).max(0);
            event = event.detail("recovery_codes_left", left);
        }
        self.audit.record(&mut *tx, &event).await?;
        tx.commit().await?;
        let user = User::try_from(&record)?;
        Ok(LoginSuccess { token, session, user, mfa_enrollment_required: false })
    }

    /// Removes a user's second factors and recovery codes (a lost device), so the next
    /// sign-in enrolls again. Administrators only; the user's sessions end.
    pub async fn reset_mfa(&self, ctx: &Context, who: crate::UserRef<'_>) -> Result<User, AuthError> {
        let attempt = async {
            let user = self.find(who).await?;
            let mut tx = self.store.begin().await?;
            tx.delete_mfa_factors(user.id).await?;
            tx.revoke_user_sessions(user.id, ctx.now).await?;
            let event = ctx.event("user.mfa_reset", Outcome::Success).resource(format!("user/{}", user.id));
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            self.cache.forget_user(user.id);
            Ok(user)
        };
        self.audited_failure(ctx, "user.mfa_reset", None, attempt.await).await
    }
}

/// The current TOTP code for a base32 secret: what an authenticator app shows (tests and
/// tooling; the server never needs it).
pub fn totp_code(secret_base32: &str, at: OffsetDateTime) -> Option<String> {
    let secret = totp_rs::Secret::Encoded(secret_base32.to_string()).to_bytes().ok()?;
    let generator = totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        TOTP_DIGITS,
        1,
        TOTP_STEP_S,
        secret,
        None,
        String::new(),
    );
    Some(generator.generate(at.unix_timestamp().max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_and_recovery_codes_are_long_and_distinct() {
        assert!(matches!(parse_code(" 123 456 "), Code::Totp(c) if c == "123456"));
        assert!(matches!(parse_code("ABCD-efgh-2345-6723"), Code::Recovery(c) if c == "abcdefgh23456723"));
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert!(codes.iter().all(|c| c.len() == 19 && c.matches('-').count() == 3));
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), RECOVERY_CODES);
    }

    #[test]
    fn rfc6238_sha1_vectors_and_one_step_of_skew() {
        // RFC 6238 appendix B, SHA-1 key "12345678901234567890", truncated to 6 digits.
        let t = totp(b"12345678901234567890", "Ward", "test").expect("totp");
        let at = |s: i64| OffsetDateTime::from_unix_timestamp(s).expect("time");
        assert_eq!(t.generate(59), "287082");
        assert_eq!(t.generate(1_111_111_109), "081804");
        assert_eq!(matching_step(&t, "287082", at(59)), Some(1));
        assert_eq!(matching_step(&t, "287082", at(89)), Some(1), "one step late is accepted");
        assert_eq!(matching_step(&t, "287082", at(29)), Some(1), "one step early is accepted");
        assert_eq!(matching_step(&t, "287082", at(120)), None, "two steps late is refused");
        let secret = totp_rs::Secret::Raw(b"12345678901234567890".to_vec()).to_encoded().to_string();
        assert_eq!(totp_code(&secret, at(59)).as_deref(), Some("287082"));
    }
}
