//! `GET /v1/ws`: the real-time channel, with automatic logoff (HIPAA §164.312(a)(2)(iii)).
//!
//! Protocol (`shared/API.md`, "Real-time"):
//! 1. The upgrade needs no credentials, and a token in the URL is ignored: tokens never
//!    travel in URLs, which end up in logs. The first client frame must be the text
//!    `{"type":"auth","token":"…"}` within 10 s. Anything else (timeout, another frame,
//!    bad JSON, an unknown or ended session, a session that must still enroll MFA) closes
//!    with code 4401 and the reason `unauthenticated`, `session_expired` or `mfa_required`.
//!    On success the server sends `{"type":"ready","user_id","session_id","expires_at",
//!    "idle_expires_at"}`.
//! 2. The server sends a WebSocket Ping every 25 s. A client `{"type":"ping"}` gets
//!    `{"type":"pong"}`; a malformed or unknown frame gets `{"type":"error","code":
//!    "invalid_request","message"}` and the connection lives on.
//! 3. Automatic logoff. The deadline is the earlier of the absolute and the idle limit.
//!    60 s before it (at once if less remains) the server sends `session.expiring` once,
//!    again only if activity later moved the deadline more than 60 s away. At the deadline
//!    it sends `session.expired` (`idle_timeout` or `absolute_timeout`) and closes with
//!    4401, after letting `Accounts::authenticate` end the session and record
//!    `session.expired` exactly as for HTTP. Revocation comes from the session-change feed
//!    (`Accounts::session_changes`, fed by every node and CLI command within about 250 ms):
//!    a change of this session or its user (logout, revocation, disable, role change, API
//!    key revocation), or a lagging feed, makes the socket read the session (or API key) and
//!    its user, read-only; one that no longer holds ends the socket with `session.expired`
//!    (`revoked`). A read that fails is retried after 1 s, doubling up to 30 s: an unknown
//!    answer never counts as valid for long. As a safety net for a missed feed entry, each
//!    socket also re-reads every 120 s (spread at random); an idle socket otherwise costs
//!    no database reads but a timer at its warning and its deadline, where it reads the
//!    session again (HTTP activity may have moved it).
//! 4. Server shutdown closes with 1001.
//! 5. Events of the user's dialogs (`message.created`, `message.updated`, `message.deleted`,
//!    `dialog.created`, `dialog.member_added`, `dialog.member_removed`, `receipt.read`,
//!    `typing`) arrive from the messaging hub, each on a bounded queue of 256 frames; a
//!    client that lets it fill is closed with 4008 (slow consumer) and resumes through
//!    history. A client `{"type":"typing","dialog_id"}` frame counts as activity and is
//!    pushed to the dialog's other members.
//!
//! **Only client application frames are activity.** `{"type":"activity"}` (and, later, real
//! frames such as typing) re-authenticates with the token, which slides the idle deadline.
//! Pings, pongs and an open socket are not activity: a screen left open must still log off.
//! The checks never touch the session; they adopt the stored idle deadline, so
//! activity over HTTP with the same session keeps the socket alive as well.
//!
//! Everything the server pushes on its own (`ready`, `session.expiring`, and later the
//! user's events) goes through one bounded queue per connection (`Connection::outgoing`,
//! 256 frames): event sources push with `try_send`, and a full queue means the client is
//! not reading. Replies (`pong`, `error`) and the final `session.expired` are written
//! directly. Every write gives up after 10 s, so a stalled client cannot hold a connection
//! past its deadline for long.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, interval_at, timeout, timeout_at};
use ward_auth::{AuthError, Authenticated, CredentialKind, SessionChanged};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::ClientInfo;

const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
const PING_EVERY: Duration = Duration::from_secs(25);
/// The shortest wait of the deadline timer.
const MIN_WAIT: Duration = Duration::from_millis(50);
/// How often a socket re-reads its credential without any change on the feed: the safety
/// net for a feed entry it could have missed (10,000 sockets: about 83 reads a second).
const SAFETY_RECHECK: Duration = Duration::from_secs(120);
/// After a failed read, the first wait before reading again, and the longest.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Re-reads after a lagging feed are spread over this long.
const LAG_SPREAD: Duration = Duration::from_secs(2);

/// A random wait in `0..max`.
fn jitter(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::random_range(0..ms))
}
const WARN_BEFORE: time::Duration = time::Duration::seconds(60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client's answer to our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// The socket's read buffer, allocated up front for every connection (tungstenite's
/// default is 128 KiB, which made an idle connection cost about 140 KiB); it grows for a
/// larger frame.
const READ_BUFFER: usize = 4 * 1024;
/// Frames are written once this much is buffered, or at each flush (every `send`).
const WRITE_BUFFER: usize = 8 * 1024;
const OUTGOING_CAPACITY: usize = 256;
/// Close code: not (or no longer) authenticated.
const UNAUTHENTICATED: u16 = 4401;
/// Close code: authenticated, but the caller's policies do not allow `realtime:connect`.
const FORBIDDEN: u16 = 4403;
/// The client did not keep up with its events; it reconnects and resumes through history.
const SLOW_CONSUMER: u16 = ward_messaging::events::SLOW_CONSUMER_CLOSE;

/// Opens the real-time channel (WebSocket). Authenticate with a first frame
/// `{"type":"auth","token":"…"}`; see the module documentation for the protocol.
#[utoipa::path(get, path = "/v1/ws", tag = "realtime",
    description = "WebSocket upgrade. The first client frame must be `{\"type\":\"auth\",\"token\":\"...\"}` within \
        10 s (tokens never travel in the URL), else the server closes with 4401. Then the server sends `ready`, \
        the user's events, `session.expiring` before automatic logoff, and `session.expired` with close code 4401 \
        when the session ends. Client frames: `ping` (answered with `pong`) and `activity` (keeps the session alive).",
    responses((status = 101, description = "switching to the WebSocket protocol"),
              (status = 400, description = "invalid_request: not a WebSocket upgrade")))]
pub async fn upgrade(
    State(state): State<AppState>,
    client: ClientInfo,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(r) => {
            let status = if r.status().is_client_error() { r.status() } else { StatusCode::BAD_REQUEST };
            return ApiError::new(status, "invalid_request", "this endpoint expects a WebSocket upgrade")
                .into_response();
        }
    };
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| serve(state, client, socket))
}

/// How a connection ends.
enum End {
    /// We close with this code and reason.
    Close(u16, &'static str),
    /// The client left, or stopped reading.
    Gone,
}

async fn serve(state: AppState, client: ClientInfo, mut socket: WebSocket) {
    // Listening before authenticating, so a revocation racing the handshake is not missed.
    let changes = state.accounts.session_changes();
    let end = match handshake(&state, &client, &mut socket).await {
        Ok((token, who)) => Connection::new(token, who, client, changes).run(&state, &mut socket).await,
        Err(end) => end,
    };
    finish(socket, end).await;
}

/// Waits for the auth frame and authenticates it.
async fn handshake(
    state: &AppState,
    client: &ClientInfo,
    socket: &mut WebSocket,
) -> Result<(String, Authenticated), End> {
    let refuse = || End::Close(UNAUTHENTICATED, "unauthenticated");
    let deadline = Instant::now() + AUTH_TIMEOUT;
    let token = loop {
        let received = tokio::select! {
            _ = state.shutdown.cancelled() => return Err(End::Close(close_code::AWAY, "server shutting down")),
            r = timeout_at(deadline, socket.recv()) => r.map_err(|_| refuse())?,
        };
        match received {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Text(text))) => match parse(&text) {
                Ok(ClientFrame::Auth(token)) => break token,
                _ => return Err(refuse()),
            },
            Some(Ok(Message::Binary(_))) => return Err(refuse()),
            Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(End::Gone),
        }
    };
    let anonymous = client.context();
    match state.accounts.authenticate(&anonymous, &token).await {
        Ok(who) if who.mfa_enrollment_required => {
            let event = who
                .context(client.ip.clone(), client.user_agent.clone(), anonymous.now)
                .event("access.denied", ward_audit::Outcome::Denied)
                .reason("mfa_required")
                .detail("method", "GET")
                .detail("route", "/v1/ws");
            if let Err(e) = state.audit.record_alone(&event).await {
                tracing::error!(error = %e, "cannot record a refused WebSocket");
                return Err(End::Close(close_code::ERROR, "unavailable"));
            }
            Err(End::Close(UNAUTHENTICATED, "mfa_required"))
        }
        Ok(who) => {
            // The route's declared action, through the policy engine like every route.
            let ctx = who.context(client.ip.clone(), client.user_agent.clone(), anonymous.now);
            let allowed = async {
                let principal = crate::extract::principal_of(state, &who, client.ip.as_deref()).await?;
                let decision = principal.decide("realtime:connect", "*", ctx.now, ward_access::Facts::default());
                if !decision.allowed {
                    state.access.record_denial(&ctx, "realtime.connect", "realtime:connect", "*", &decision).await?;
                }
                Ok::<bool, crate::error::ApiError>(decision.allowed)
            };
            match allowed.await {
                Ok(true) => Ok((token, who)),
                Ok(false) => Err(End::Close(FORBIDDEN, "forbidden")),
                Err(e) => {
                    tracing::error!(error = ?e, "cannot decide on a WebSocket");
                    Err(End::Close(close_code::ERROR, "unavailable"))
                }
            }
        }
        Err(AuthError::SessionExpired) => Err(End::Close(UNAUTHENTICATED, "session_expired")),
        Err(AuthError::Unauthenticated) => Err(refuse()),
        Err(e) => {
            tracing::warn!(error = %e, "WebSocket authentication failed");
            Err(End::Close(close_code::ERROR, "unavailable"))
        }
    }
}

/// Sends our close frame (if we are the ones closing) and waits briefly for the client's
/// answer, so the close handshake completes instead of ending in a reset.
async fn finish(mut socket: WebSocket, end: End) {
    if let End::Close(code, reason) = end {
        let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
        if !matches!(timeout(WRITE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await, Ok(Ok(()))) {
            return;
        }
    }
    let _ = timeout(CLOSE_GRACE, async { while let Some(Ok(_)) = socket.recv().await {} }).await;
}

/// One frame for the client: JSON text. Cheap to clone, so one event serialized once can
/// go to many sockets.
#[derive(Clone)]
struct Frame(Utf8Bytes);

impl Frame {
    fn json(value: &Value) -> Self {
        Frame(value.to_string().into())
    }
}

enum ClientFrame {
    Auth(String),
    Ping,
    Activity,
    /// `{"type":"typing","dialog_id":"…"}`: pushed to the dialog's other members.
    Typing(uuid::Uuid),
}

/// Reads a client frame. Error messages never quote the input.
fn parse(text: &str) -> Result<ClientFrame, &'static str> {
    let value: Value = serde_json::from_str(text).map_err(|_| "the frame is not valid JSON")?;
    let kind = value.get("type").and_then(Value::as_str).ok_or("the frame needs a string field `type`")?;
    match kind {
        "auth" => value
            .get("token")
            .and_then(Value::as_str)
            .map(|t| ClientFrame::Auth(t.to_string()))
            .ok_or("an auth frame needs a string field `token`"),
        "ping" => Ok(ClientFrame::Ping),
        "activity" => Ok(ClientFrame::Activity),
        "typing" => value
            .get("dialog_id")
            .and_then(Value::as_str)
            .and_then(|id| id.parse().ok())
            .map(ClientFrame::Typing)
            .ok_or("a typing frame needs a field `dialog_id` holding a dialog id"),
        _ => Err("unknown frame type"),
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// How long a socket decides events with the principal it built before building it again,
/// so policy changes reach open sockets within this plus `[access] policy_cache_s`.
const PRINCIPAL_TTL: Duration = Duration::from_secs(2);

/// The part of an event frame that says which dialog it is about.
#[derive(serde::Deserialize)]
struct EventHead {
    #[serde(rename = "type")]
    kind: String,
    dialog_id: Option<uuid::Uuid>,
    dialog: Option<DialogHead>,
}

#[derive(serde::Deserialize)]
struct DialogHead {
    id: uuid::Uuid,
}

/// An authenticated socket and the deadlines it enforces.
struct Connection {
    /// The bearer token, kept to re-authenticate on activity; zeroized when the socket ends.
    token: zeroize::Zeroizing<String>,
    who: Authenticated,
    client: ClientInfo,
    /// Where server-initiated frames are queued. The messaging issue hands clones of it to
    /// the user's event sources (subscribed by `who.user.id`).
    outgoing: mpsc::Sender<Frame>,
    queued: mpsc::Receiver<Frame>,
    /// The session-change feed: a change of this session or user triggers a re-check.
    changes: broadcast::Receiver<SessionChanged>,
    idle_expires_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    /// `session.expiring` was sent for the current deadline.
    warned: bool,
    /// When the credential is read again even without a change on the feed: the safety
    /// net, or soon after a read that failed.
    recheck_at: Instant,
    /// The wait before re-reading after a failed read (doubles up to [`MAX_RETRY`]).
    retry: Duration,
    /// The caller in policy terms, for deciding which events it may see, and when it was
    /// built.
    principal: Option<(ward_access::Principal, Instant)>,
    /// Decisions already made with that principal, by dialog and action.
    may_see: std::collections::HashMap<(uuid::Uuid, &'static str), bool>,
}

impl Connection {
    fn new(
        token: String,
        who: Authenticated,
        client: ClientInfo,
        changes: broadcast::Receiver<SessionChanged>,
    ) -> Self {
        let (outgoing, queued) = mpsc::channel(OUTGOING_CAPACITY);
        let (idle_expires_at, expires_at) = (who.session.idle_expires_at, who.session.expires_at);
        Self {
            token: zeroize::Zeroizing::new(token),
            who,
            client,
            outgoing,
            queued,
            changes,
            idle_expires_at,
            expires_at,
            warned: false,
            // Spread over the interval, so sockets opened together do not re-read together.
            recheck_at: Instant::now() + jitter(SAFETY_RECHECK),
            retry: FIRST_RETRY,
            principal: None,
            may_see: std::collections::HashMap::new(),
        }
    }

    /// The caller's principal, built again when older than [`PRINCIPAL_TTL`] or dropped by
    /// a session change (which also forgets the decisions made with the old one); `None`
    /// when it cannot be built.
    async fn principal(&mut self, state: &AppState) -> Option<&ward_access::Principal> {
        if self.principal.as_ref().is_none_or(|(_, at)| at.elapsed() >= PRINCIPAL_TTL) {
            let built = crate::extract::principal_of(state, &self.who, self.client.ip.as_deref()).await.ok()?;
            self.principal = Some((built, Instant::now()));
            self.may_see.clear();
        }
        self.principal.as_ref().map(|(p, _)| p)
    }

    /// Whether the caller's policies let it see this event: `message:read` for message
    /// events, `dialog:read` for the others, on the event's dialog as a member (events go
    /// to members only). Fails closed: an event naming no dialog, or a principal that
    /// cannot be built, is not sent.
    async fn may_see(&mut self, state: &AppState, frame: &str) -> bool {
        let Ok(head) = serde_json::from_str::<EventHead>(frame) else { return false };
        let Some(dialog) = head.dialog_id.or(head.dialog.map(|d| d.id)) else { return false };
        let action = if head.kind.starts_with("message.") { "message:read" } else { "dialog:read" };
        let Some(principal) = self.principal(state).await.cloned() else {
            tracing::warn!("cannot decide on a WebSocket event; it is not sent");
            return false;
        };
        *self.may_see.entry((dialog, action)).or_insert_with(|| {
            let facts = ward_access::Facts { dialog_member: Some(true), breakglass: Some(false) };
            principal.decide(action, &format!("dialog/{dialog}"), OffsetDateTime::now_utc(), facts).allowed
        })
    }

    async fn run(mut self, state: &AppState, socket: &mut WebSocket) -> End {
        // Subscribed before `ready`, so nothing committed after `ready` is missed.
        let mut events = state.messaging.hub().subscribe(self.who.user.id);
        let ready = json!({
            "type": "ready",
            "user_id": self.who.user.id,
            "session_id": self.who.session.id,
            "expires_at": rfc3339(self.expires_at),
            "idle_expires_at": rfc3339(self.idle_expires_at),
        });
        if let Err(end) = self.push(&ready) {
            return end;
        }
        let timer = tokio::time::sleep_until(self.wakeup());
        tokio::pin!(timer);
        let mut ping = interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            let step = tokio::select! {
                _ = state.shutdown.cancelled() => Err(End::Close(close_code::AWAY, "server shutting down")),
                () = &mut timer => self.on_timer(state, socket).await,
                change = self.changes.recv() => match change {
                    Ok(c) if !c.concerns(self.who.user.id, self.who.session.id) => Ok(()),
                    Ok(_) => self.recheck(state, socket).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Every socket lagged at once: spread their re-reads over a moment.
                        self.recheck_at = self.recheck_at.min(Instant::now() + jitter(LAG_SPREAD));
                        Ok(())
                    }
                    Err(broadcast::error::RecvError::Closed) => Err(End::Close(close_code::AWAY, "server shutting down")),
                },
                _ = ping.tick() => write(socket, Message::Ping(Default::default())).await,
                Some(frame) = self.queued.recv() => write(socket, Message::Text(frame.0)).await,
                event = events.events.recv() => match event {
                    Some(frame) if self.may_see(state, &frame).await => {
                        write(socket, Message::Text(Utf8Bytes::from(frame.to_string()))).await
                    }
                    Some(_) => Ok(()),
                    None => Err(End::Close(SLOW_CONSUMER, "slow consumer: reconnect and resume through history")),
                },
                received = socket.recv() => match received {
                    Some(Ok(message)) => self.on_client(state, socket, message).await,
                    Some(Err(_)) | None => Err(End::Gone),
                },
            };
            if let Err(end) = step {
                return end;
            }
            let wakeup = self.wakeup();
            if wakeup != timer.deadline() {
                timer.as_mut().reset(wakeup);
            }
        }
    }

    /// When the timer must next fire: at the warning's time, then at the deadline, or
    /// earlier for a due re-read of the credential.
    fn wakeup(&self) -> Instant {
        let (deadline, _) = self.deadline();
        let at = if self.warned { deadline } else { deadline - WARN_BEFORE };
        let wait = at - OffsetDateTime::now_utc();
        // Never a busy loop, even if the clock and the stored deadline disagree.
        let by_deadline = Instant::now() + Duration::try_from(wait).unwrap_or_default().max(MIN_WAIT);
        by_deadline.min(self.recheck_at.max(Instant::now() + MIN_WAIT))
    }

    /// Queues a server-initiated frame; a full queue means the client stopped reading.
    fn push(&self, value: &Value) -> Result<(), End> {
        self.outgoing.try_send(Frame::json(value)).map_err(|_| End::Close(close_code::POLICY, "too slow"))
    }

    async fn on_client(&mut self, state: &AppState, socket: &mut WebSocket, message: Message) -> Result<(), End> {
        let frame = match message {
            Message::Text(text) => parse(&text),
            Message::Binary(_) => Err("binary frames are not supported"),
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
            Message::Close(_) => return Err(End::Gone),
        };
        match frame {
            Ok(ClientFrame::Ping) => reply(socket, json!({"type": "pong"})).await,
            Ok(ClientFrame::Activity) => self.activity(state, socket).await,
            Ok(ClientFrame::Typing(dialog_id)) => {
                self.activity(state, socket).await?;
                let ctx =
                    self.who.context(self.client.ip.clone(), self.client.user_agent.clone(), OffsetDateTime::now_utc());
                let Some(principal) = self.principal(state).await.cloned() else {
                    return error(socket, "unavailable", "the typing indicator could not be sent").await;
                };
                match state.messaging.typing(&ctx, &principal, dialog_id).await {
                    Ok(()) => Ok(()),
                    Err(ward_messaging::MessagingError::NotFound) => error(socket, "not_found", "no such dialog").await,
                    Err(e) => {
                        tracing::warn!(error = %e, "typing indicator failed");
                        error(socket, "unavailable", "the typing indicator could not be sent").await
                    }
                }
            }
            Ok(ClientFrame::Auth(_)) => error(socket, "invalid_request", "already authenticated").await,
            Err(message) => error(socket, "invalid_request", message).await,
        }
    }

    /// A client application frame: re-authenticates, which slides the idle deadline.
    async fn activity(&mut self, state: &AppState, socket: &mut WebSocket) -> Result<(), End> {
        match state.accounts.authenticate(&self.client.context(), self.token.as_str()).await {
            Ok(who) => {
                self.set_deadlines(who.session.idle_expires_at, who.session.expires_at);
                Ok(())
            }
            Err(AuthError::SessionExpired | AuthError::Unauthenticated) => {
                let reason = self.ended_reason(OffsetDateTime::now_utc());
                expire(socket, reason).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "WebSocket re-authentication failed");
                error(socket, "unavailable", "the session cannot be checked now: try again").await
            }
        }
    }

    /// A change of this session or user was fed (or changes were missed): reads the
    /// credential again and ends the socket if it no longer holds.
    async fn recheck(&mut self, state: &AppState, socket: &mut WebSocket) -> Result<(), End> {
        match self.still_valid(state).await {
            Some(true) => {
                self.retry = FIRST_RETRY;
                self.recheck_at = Instant::now() + SAFETY_RECHECK;
                // Roles or credentials may have changed: decide events afresh.
                self.principal = None;
                Ok(())
            }
            Some(false) => {
                let reason = self.ended_reason(OffsetDateTime::now_utc());
                expire(socket, reason).await
            }
            None => {
                // Unknown is never taken for valid for long: read again soon.
                self.recheck_at = Instant::now() + self.retry;
                self.retry = (self.retry * 2).min(MAX_RETRY);
                Ok(())
            }
        }
    }

    /// The timer: a due re-read, the warning before the deadline, or the deadline itself.
    /// Activity over HTTP may have moved the stored deadline, so the session is read again
    /// first.
    async fn on_timer(&mut self, state: &AppState, socket: &mut WebSocket) -> Result<(), End> {
        self.recheck(state, socket).await?;
        let now = OffsetDateTime::now_utc();
        let (deadline, idle) = self.deadline();
        if now >= deadline {
            // Lets the domain end the session and record `session.expired` as for HTTP.
            if let Ok(who) = state.accounts.authenticate(&self.client.context(), self.token.as_str()).await {
                // Activity elsewhere (HTTP) raced this check: the session lives on.
                self.set_deadlines(who.session.idle_expires_at, who.session.expires_at);
                return Ok(());
            }
            return expire(socket, if idle { "idle_timeout" } else { "absolute_timeout" }).await;
        }
        if !self.warned && deadline - now <= WARN_BEFORE {
            self.warned = true;
            let reason = if idle { "idle" } else { "absolute" };
            self.push(&json!({"type": "session.expiring", "expires_at": rfc3339(deadline), "reason": reason}))?;
        }
        Ok(())
    }

    /// Reads (never touches) the session or API key and its user, adopting the stored
    /// deadlines. `None` when the database cannot tell (the caller retries soon).
    async fn still_valid(&mut self, state: &AppState) -> Option<bool> {
        let id = self.who.session.id;
        let user_id = self.who.user.id;
        let credential_ok = if self.who.kind == CredentialKind::ApiKey {
            match state.store.api_keys(user_id).await {
                Ok(keys) => keys.iter().any(|k| k.id == id && k.revoked_at.is_none()),
                Err(e) => return log_check_failure(&e),
            }
        } else {
            match state.store.session_by_id(id).await {
                Ok(Some(s)) if s.revoked_at.is_none() => {
                    self.set_deadlines(s.idle_expires_at, s.expires_at);
                    true
                }
                Ok(_) => false,
                Err(e) => return log_check_failure(&e),
            }
        };
        let user_ok = match state.store.user_by_id(user_id).await {
            Ok(Some(u)) => {
                let role_kept = self.who.session.assumed_role.as_ref().is_none_or(|r| u.roles.contains(r));
                !u.disabled && role_kept
            }
            Ok(None) => false,
            Err(e) => return log_check_failure(&e),
        };
        Some(credential_ok && user_ok)
    }

    /// Adopts newer deadlines; a deadline moved more than a warning's lead away re-arms the
    /// warning.
    fn set_deadlines(&mut self, idle_expires_at: OffsetDateTime, expires_at: OffsetDateTime) {
        self.idle_expires_at = self.idle_expires_at.max(idle_expires_at);
        self.expires_at = expires_at;
        if self.deadline().0 - OffsetDateTime::now_utc() > WARN_BEFORE {
            self.warned = false;
        }
    }

    /// The deadline enforced now, and whether it is the idle one.
    fn deadline(&self) -> (OffsetDateTime, bool) {
        if self.idle_expires_at < self.expires_at { (self.idle_expires_at, true) } else { (self.expires_at, false) }
    }

    /// Why a session found ended at `now` ended: its deadline, or else a revocation.
    fn ended_reason(&self, now: OffsetDateTime) -> &'static str {
        match self.deadline() {
            (deadline, true) if now >= deadline => "idle_timeout",
            (deadline, false) if now >= deadline => "absolute_timeout",
            _ => "revoked",
        }
    }
}

fn log_check_failure(e: &ward_storage::StoreError) -> Option<bool> {
    tracing::warn!(error = %e, "WebSocket session check failed; retrying");
    None
}

async fn write(socket: &mut WebSocket, message: Message) -> Result<(), End> {
    match timeout(WRITE_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(End::Gone),
    }
}

async fn reply(socket: &mut WebSocket, value: Value) -> Result<(), End> {
    write(socket, Message::Text(Frame::json(&value).0)).await
}

async fn error(socket: &mut WebSocket, code: &str, message: &str) -> Result<(), End> {
    reply(socket, json!({"type": "error", "code": code, "message": message})).await
}

/// Tells the client its session ended, then closes with 4401.
async fn expire(socket: &mut WebSocket, reason: &'static str) -> Result<(), End> {
    reply(socket, json!({"type": "session.expired", "reason": reason})).await?;
    Err(End::Close(UNAUTHENTICATED, "session_expired"))
}
