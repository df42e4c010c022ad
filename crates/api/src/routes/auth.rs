//! Sign-in, sign-out and the current session (`/v1/auth/*`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;
use ward_auth::User;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Caller, ClientInfo, EnrollingCaller};

/// Credentials. Neither field is ever logged.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginRequest(<redacted>)")
    }
}

/// `{id, username, roles}` as in the contract.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    id: Uuid,
    username: String,
    roles: Vec<String>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self { id: u.id, username: u.username.clone(), roles: u.roles.iter().map(|r| r.to_string()).collect() }
    }
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// Opaque bearer token, shown once; the server keeps only its SHA-256.
    token: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: OffsetDateTime,
    idle_timeout_s: u64,
    user: UserView,
    /// True when the user's role requires MFA and none is enrolled: this token may only
    /// enroll (`/v1/auth/mfa/totp/*`), read its session and log out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    mfa_enrollment_required: bool,
}

impl LoginResponse {
    fn new(state: &AppState, ok: ward_auth::LoginSuccess) -> Self {
        Self {
            token: ok.token.expose().to_string(),
            expires_at: ok.session.expires_at,
            idle_timeout_s: state.accounts.limits().idle.as_secs(),
            user: UserView::from(&ok.user),
            mfa_enrollment_required: ok.mfa_enrollment_required,
        }
    }
}

/// The password was right and the user has a second factor: send a code to
/// `POST /v1/auth/mfa` with this token before it expires.
#[derive(Serialize, ToSchema)]
pub struct MfaChallenge {
    mfa_required: bool,
    /// One-time token for the second step (5 minutes, 5 attempts).
    mfa_token: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: OffsetDateTime,
}

/// Either a session or the request for a second factor.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginAnswer {
    Session(LoginResponse),
    Mfa(MfaChallenge),
}

/// Signs in with a username and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginAnswer), (status = 401, description = "invalid_credentials"),
              (status = 423, description = "account_locked"), (status = 429, description = "rate_limited")))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<LoginAnswer>, ApiError> {
    let outcome = state.accounts.login(&client.context(), &body.username, &body.password).await?;
    Ok(Json(match outcome {
        ward_auth::LoginOutcome::Session(ok) => LoginAnswer::Session(LoginResponse::new(&state, *ok)),
        ward_auth::LoginOutcome::MfaRequired { mfa_token, expires_at } => {
            LoginAnswer::Mfa(MfaChallenge { mfa_required: true, mfa_token: mfa_token.expose().to_string(), expires_at })
        }
    }))
}

/// The second sign-in step. Neither field is ever logged.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaLogin {
    mfa_token: String,
    /// A current TOTP code or an unused recovery code.
    code: String,
}

impl std::fmt::Debug for MfaLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MfaLogin(<redacted>)")
    }
}

/// Completes a sign-in with a TOTP code or a recovery code.
#[utoipa::path(post, path = "/v1/auth/mfa", tag = "auth", request_body = MfaLogin,
    responses((status = 200, body = LoginResponse),
              (status = 401, description = "invalid_credentials (wrong or reused code) or unauthenticated (unknown or expired mfa_token)"),
              (status = 423, description = "account_locked")))]
pub async fn mfa_login(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<MfaLogin>,
) -> Result<Json<LoginResponse>, ApiError> {
    let ok = state.accounts.complete_mfa_login(&client.context(), &body.mfa_token, &body.code).await?;
    Ok(Json(LoginResponse::new(&state, ok)))
}

#[derive(Serialize, ToSchema)]
pub struct TotpEnrollmentView {
    /// Base32 secret for manual entry; shown once.
    secret: String,
    /// `otpauth://totp/…` for a QR code.
    otpauth_uri: String,
}

/// Starts TOTP enrollment for the caller (shown once; confirm with a code).
#[utoipa::path(post, path = "/v1/auth/mfa/totp/enroll", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = TotpEnrollmentView), (status = 409, description = "TOTP already active")))]
pub async fn totp_enroll(
    State(state): State<AppState>,
    EnrollingCaller(caller): EnrollingCaller,
) -> Result<Json<TotpEnrollmentView>, ApiError> {
    let e = state.accounts.enroll_totp(&caller.ctx, &caller.who).await?;
    Ok(Json(TotpEnrollmentView { secret: e.secret_base32.to_string(), otpauth_uri: e.otpauth_uri.to_string() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirm {
    code: String,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Ten one-time codes, shown once; each replaces a TOTP code once.
    recovery_codes: Vec<String>,
}

/// Confirms TOTP enrollment with a current code; returns the recovery codes. The
/// calling session counts as MFA-verified from then on.
#[utoipa::path(post, path = "/v1/auth/mfa/totp/confirm", tag = "auth", security(("bearer" = [])),
    request_body = TotpConfirm,
    responses((status = 200, body = RecoveryCodes), (status = 400, description = "wrong code or nothing pending")))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    EnrollingCaller(caller): EnrollingCaller,
    ApiJson(body): ApiJson<TotpConfirm>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    let recovery_codes = state.accounts.confirm_totp(&caller.ctx, &caller.who, &body.code).await?;
    Ok(Json(RecoveryCodes { recovery_codes }))
}

/// Ends the current session at once.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401)))]
pub async fn logout(
    State(state): State<AppState>,
    EnrollingCaller(caller): EnrollingCaller,
) -> Result<StatusCode, ApiError> {
    state.accounts.logout(&caller.ctx, &caller.who).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    user: UserView,
    roles: Vec<String>,
    /// Whether a second factor was proved in this session.
    mfa: bool,
    /// The role requires MFA and this session has not proved it (see login).
    mfa_enrollment_required: bool,
    /// `session`, `temporary` (STS) or `api_key`.
    #[schema(value_type = String)]
    credential: ward_auth::CredentialKind,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    idle_expires_at: OffsetDateTime,
}

/// The caller's session and its deadlines.
#[utoipa::path(get, path = "/v1/auth/session", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = SessionView), (status = 401)))]
pub async fn session(EnrollingCaller(Caller { who, .. }): EnrollingCaller) -> Json<SessionView> {
    let user = UserView::from(&who.user);
    Json(SessionView {
        roles: user.roles.clone(),
        user,
        mfa: who.mfa,
        mfa_enrollment_required: who.mfa_enrollment_required,
        credential: who.kind,
        created_at: who.session.created_at,
        expires_at: who.session.expires_at,
        idle_expires_at: who.session.idle_expires_at,
    })
}

/// One of the caller's sessions. The token is never shown again.
#[derive(Serialize, ToSchema)]
pub struct SessionSummary {
    id: Uuid,
    /// True for the session making this request.
    current: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    last_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: OffsetDateTime,
    ip: Option<String>,
    user_agent: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    sessions: Vec<SessionSummary>,
}

/// The caller's live sessions (all devices).
#[utoipa::path(get, path = "/v1/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = SessionList), (status = 401)))]
pub async fn sessions(State(state): State<AppState>, caller: Caller) -> Result<Json<SessionList>, ApiError> {
    let list = state.accounts.sessions(&caller.who, caller.ctx.now).await?;
    let sessions = list
        .into_iter()
        .map(|s| SessionSummary {
            current: s.id == caller.who.session.id,
            id: s.id,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            ip: s.ip,
            user_agent: s.user_agent,
        })
        .collect();
    Ok(Json(SessionList { sessions }))
}

/// Ends one of the caller's sessions at once (another user's session is 404).
#[utoipa::path(delete, path = "/v1/auth/sessions/{id}", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 404)))]
pub async fn revoke_session(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.accounts.revoke_own_session(&caller.ctx, &caller.who, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Passwords for a change. Never logged or recorded.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes the caller's password; every other session of the user ends.
#[utoipa::path(post, path = "/v1/auth/password", tag = "auth", security(("bearer" = [])), request_body = PasswordChange,
    responses((status = 204), (status = 400, description = "the new password breaks the policy"),
              (status = 401, description = "wrong current password")))]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    state.accounts.change_password(&caller.ctx, &caller.who, &body.current_password, &body.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}
