//! `ward access review`: the access review of every account, as a table, CSV or JSON, read
//! straight from the database (works while the server runs). Generating it is recorded
//! as `access.review` in the audit trail first.

use std::io::Write as _;

use ward_access::review::{Review, ReviewUser};
use ward_audit::Outcome;

use crate::cli::{Failure, GlobalArgs};
use crate::startup;

pub async fn review(
    global: &GlobalArgs,
    flags: Vec<(String, String, toml::Value)>,
    format: &str,
    days: i64,
) -> Result<(), Failure> {
    let config = startup::load_config(global.config.as_ref(), flags)?;
    startup::init_logging(&config, Some("warn"))?;
    let store = startup::open_store(&config).await?;
    let keys = startup::data_keys(&config, store.clone()).await?;
    let audit = startup::audit_log(&config, store.clone(), &keys).await?;
    let ctx = crate::admin::cli_context();
    let event =
        ctx.event("access.review", Outcome::Success).resource("*").detail("days", days).detail("format", format);
    audit.record_alone(&event).await.map_err(|e| Failure::runtime(e.to_string()))?;
    // No alert webhook: the review only reads.
    let access = ward_access::Access::new(store.clone(), audit.clone(), startup::access_settings(&config), None, None);
    let review = access
        .review(ctx.now, ctx.now - time::Duration::days(days))
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let text = match format {
        "json" => serde_json::to_string_pretty(&review).map_err(|e| Failure::runtime(e.to_string()))? + "\n",
        "csv" => csv_text(&review)?,
        _ => table(&review),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| Failure::runtime(format!("stdout: {e}")))?;
    let _ = audit.checkpoint(true).await;
    store.close().await;
    Ok(())
}

fn when(t: Option<time::OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).unwrap_or_else(|| "never".into())
}

fn permissions(u: &ReviewUser) -> String {
    u.effective_permissions
        .iter()
        .map(|p| if p.scope == "always" { p.action.to_string() } else { format!("{}?", p.action) })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One row per user, with the columns of the table.
fn rows(review: &Review) -> Vec<[String; 10]> {
    review
        .users
        .iter()
        .map(|u| {
            [
                u.username.clone(),
                u.id.to_string(),
                u.roles.join(" "),
                if u.disabled { "disabled".into() } else { "active".into() },
                u.policies.join(" "),
                u.dialog_memberships.len().to_string(),
                when(u.last_sign_in),
                if u.mfa_enrolled { "yes".into() } else { "no".into() },
                u.breakglass_uses.len().to_string(),
                if u.dormant { "DORMANT".into() } else { String::new() },
            ]
        })
        .collect()
}

const HEADERS: [&str; 10] =
    ["username", "id", "roles", "state", "policies", "dialogs", "last_sign_in", "mfa", "breakglass_uses", "dormant"];

fn csv_text(review: &Review) -> Result<String, Failure> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| Failure::runtime(e.to_string());
    let mut header: Vec<&str> = HEADERS.to_vec();
    header.push("effective_permissions");
    w.write_record(&header).map_err(fail)?;
    for (row, u) in rows(review).into_iter().zip(&review.users) {
        let mut record: Vec<String> = row.to_vec();
        record.push(permissions(u));
        w.write_record(&record).map_err(fail)?;
    }
    let bytes = w.into_inner().map_err(|e| Failure::runtime(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| Failure::runtime(e.to_string()))
}

fn table(review: &Review) -> String {
    let rows = rows(review);
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ");
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut out = format!(
        "access review at {}; break-glass uses since {}; dormant = no sign-in for {} days\n\n",
        when(Some(review.generated_at)),
        when(Some(review.period_start)),
        review.dormant_days
    );
    out += &line(HEADERS.to_vec());
    for row in &rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out += "\neffective permissions (`?`: only under conditions, e.g. dialog membership or MFA):\n";
    for u in &review.users {
        out += &format!("  {}: {}\n", u.username, permissions(u));
    }
    out
}
