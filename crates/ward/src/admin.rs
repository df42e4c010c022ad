//! Administrative commands on the data dir or database of a (possibly running) server.
//!
//! They open the same database as `ward serve` (SQLite in WAL mode allows a second
//! writer process; PostgreSQL is shared by design) and go through the same domain
//! services, so the same rules apply as over the API.

use std::io::BufRead as _;

use time::OffsetDateTime;
use ward_audit::Context;
use ward_auth::UserRef;

use crate::cli::{Failure, GlobalArgs, UserCommand};
use crate::startup;

pub async fn user(
    global: &GlobalArgs,
    flags: Vec<(String, String, toml::Value)>,
    cmd: UserCommand,
) -> Result<(), Failure> {
    let config = startup::load_config(global.config.as_ref(), flags)?;
    startup::init_logging(&config, Some("warn"))?;
    let startup::Services { store, audit, accounts, .. } = startup::services(&config).await?;
    let ctx = cli_context();
    let outcome = match cmd {
        UserCommand::Add { name, roles, password_stdin } => {
            let (password, generated) = password_input(password_stdin)?;
            let user = accounts.create_user(&ctx, &name, &password, &roles).await.map_err(fail)?;
            let roles: Vec<_> = user.roles.iter().map(|r| r.as_str()).collect();
            println!("created user {} (id {}, roles {})", user.username, user.id, roles.join(","));
            if generated {
                println!("password: {password}");
                println!("(shown once: store it in a password manager)");
            }
            Ok(())
        }
        UserCommand::List { json } => {
            let users = accounts.list_users().await.map_err(fail)?;
            for u in users {
                let roles: Vec<_> = u.roles.iter().map(|r| r.as_str()).collect();
                if json {
                    println!("{}", serde_json::to_string(&u).map_err(|e| Failure::runtime(e.to_string()))?);
                } else {
                    let state = if u.disabled { "disabled" } else { "active" };
                    println!("{}\t{}\t{}\t{}", u.id, u.username, roles.join(","), state);
                }
            }
            Ok(())
        }
        UserCommand::Disable { name } => {
            let u = accounts.disable(&ctx, UserRef::Name(&name)).await.map_err(fail)?;
            println!("disabled user {} and ended all of their sessions", u.username);
            Ok(())
        }
        UserCommand::ResetMfa { name } => {
            let u = accounts.reset_mfa(&ctx, UserRef::Name(&name)).await.map_err(fail)?;
            println!("removed the second factors of user {}; their next sign-in enrolls again", u.username);
            Ok(())
        }
        UserCommand::Unlock { name } => {
            let u = accounts.unlock(&ctx, UserRef::Name(&name)).await.map_err(fail)?;
            println!("unlocked user {}", u.username);
            Ok(())
        }
        UserCommand::ResetPassword { name, password_stdin } => {
            let (password, generated) = password_input(password_stdin)?;
            let u = accounts.reset_password(&ctx, UserRef::Name(&name), &password).await.map_err(fail)?;
            println!("new password set for {}; all of their sessions ended", u.username);
            if generated {
                println!("password: {password}");
                println!("(shown once: store it in a password manager)");
            }
            Ok(())
        }
    };
    // Sign the head now, so a deployment where no server runs still gets checkpoints.
    if let Err(e) = audit.checkpoint(true).await {
        eprintln!("ward: warning: cannot write an audit checkpoint: {e}");
    }
    store.close().await;
    outcome
}

/// The audit context of a command-line operator (the OS account is recorded).
pub fn cli_context() -> Context {
    let os_user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).ok();
    Context::cli(os_user, OffsetDateTime::now_utc())
}

fn fail(e: ward_auth::AuthError) -> Failure {
    Failure::runtime(e.to_string())
}

/// The password from stdin's first line, or a generated one.
fn password_input(from_stdin: bool) -> Result<(String, bool), Failure> {
    if !from_stdin {
        return Ok((ward_crypto::generate_password(), true));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| Failure::runtime(format!("reading stdin: {e}")))?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err(Failure { code: 2, message: "--password-stdin: standard input held no password".into() });
    }
    Ok((password, false))
}
