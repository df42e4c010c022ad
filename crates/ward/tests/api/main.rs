//! End-to-end tests: the real `ward` binary on port 0 with a temporary data dir, spoken
//! to over HTTP(S) as a client would.

mod access;
mod api_keys;
mod audit;
mod cli_users;
mod config_errors;
mod errors_and_headers;
mod files;
mod helpers;
mod keys;
mod lockout;
mod logging;
mod messages;
mod mfa;
mod pkcs11;
mod postgres;
mod secrets_at_rest;
mod serve;
mod shutdown;
mod tls;
mod users;
mod ws;
