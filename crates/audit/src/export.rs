//! Exports for auditors: JSON Lines, CSV, and FHIR R4 `AuditEvent` resources in a
//! `Bundle` (type `collection`), following the IHE Basic Audit Log Patterns (BALP).
//!
//! FHIR mapping (R4 required elements: `type`, `recorded`, `agent` with `requestor`,
//! `source.observer`):
//! * `type`: DICOM audit event codes by area (`110114` User Authentication for `auth.*`
//!   and `session.*`, `110110` Patient Record for PHI reads and writes, `110100`
//!   Application Activity for `server.*`, `110106` Export, `110112` Query, else
//!   `110113` Security Alert); `subtype`: Ward's dotted action under
//!   `urn:ward:audit-action`.
//! * `action`: C/R/U/D/E from the verb; `recorded`: the record time; `outcome`: `0`
//!   success, `4` minor failure (failure), `8` serious failure (denied);
//!   `outcomeDesc`: the reason.
//! * `agent[0]`: the actor (`who.identifier` = user id, `display` = username,
//!   `requestor` = true, `network.address` = IP, type 1 machine address... type 2 IP).
//! * `source.observer`: this Ward deployment; `source.type`: `4` application server.
//! * `entity[0]`: the resource (`what.identifier.value` = `kind/id`), and one
//!   `entity.detail` per details key, plus the chain position (`seq`, `hash`).

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ward_storage::AuditFilter;

use crate::log::AuditLog;

use crate::event::AuditRecord;

/// An RFC 3339 time as Unix microseconds (the filters' unit); `None` if it does not parse.
pub fn parse_time_us(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some(i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX))
}

/// How exports name the system that recorded the events (FHIR `source.observer`).
pub fn observer(backend: &str) -> String {
    format!("ward {} ({backend})", env!("CARGO_PKG_VERSION"))
}

/// One JSON object per line.
pub fn jsonl_line(r: &AuditRecord) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

pub const CSV_HEADER: [&str; 17] = [
    "seq",
    "id",
    "time",
    "actor_user_id",
    "actor_username",
    "actor_session_id",
    "via",
    "action",
    "resource",
    "outcome",
    "ip",
    "user_agent",
    "mfa",
    "reason",
    "details",
    "prev_hash",
    "hash",
];

/// A CSV row in [`CSV_HEADER`] order (quoted by the `csv` crate).
pub fn csv_fields(r: &AuditRecord) -> Vec<String> {
    let o = |s: &Option<String>| s.clone().unwrap_or_default();
    vec![
        r.seq.to_string(),
        r.id.to_string(),
        r.time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        o(&r.actor.user_id),
        o(&r.actor.username),
        o(&r.actor.session_id),
        r.actor.via.map(|v| v.as_str().to_string()).unwrap_or_default(),
        r.action.clone(),
        o(&r.resource),
        r.outcome.clone(),
        o(&r.ip),
        o(&r.user_agent),
        r.mfa.to_string(),
        o(&r.reason),
        r.details.to_string(),
        r.prev_hash.clone(),
        r.hash.clone(),
    ]
}

/// Writes records as CSV with a header line.
pub fn write_csv<W: std::io::Write>(out: W, records: impl IntoIterator<Item = AuditRecord>) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(CSV_HEADER).map_err(std::io::Error::other)?;
    for r in records {
        w.write_record(csv_fields(&r)).map_err(std::io::Error::other)?;
    }
    w.flush()
}

/// The CSV header line alone.
pub fn csv_header() -> Vec<u8> {
    let mut out = Vec::new();
    let _ = write_csv(&mut out, Vec::new());
    out
}

/// CSV lines (no header) for `records`, quoted by the `csv` crate.
pub fn csv_rows(records: &[AuditRecord]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    for r in records {
        let _ = w.write_record(csv_fields(r));
    }
    w.into_inner().unwrap_or_default()
}

fn event_type(action: &str) -> (&'static str, &'static str) {
    let area = action.split('.').next().unwrap_or_default();
    match area {
        "auth" | "session" | "sts" => ("110114", "User Authentication"),
        "message" | "file" | "dialog" | "call" => ("110110", "Patient Record"),
        "server" => ("110100", "Application Activity"),
        _ if action.ends_with(".export") => ("110106", "Export"),
        _ if action.ends_with(".search") => ("110112", "Query"),
        _ => ("110113", "Security Alert"),
    }
}

fn fhir_action(action: &str) -> &'static str {
    let verb = action.rsplit('.').next().unwrap_or_default();
    match verb {
        "create" | "send" | "upload" => "C",
        "read" | "search" | "list" | "download" => "R",
        "update" | "edit" | "disable" | "unlock" | "password_reset" | "rotate" => "U",
        "delete" | "erase" | "purge" => "D",
        _ => "E",
    }
}

/// One FHIR R4 AuditEvent resource.
pub fn fhir_audit_event(r: &AuditRecord, observer: &str) -> Value {
    let (code, display) = event_type(&r.action);
    let outcome = match r.outcome.as_str() {
        "success" => "0",
        "failure" => "4",
        _ => "8",
    };
    let mut agent = json!({
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                              "code": "humanuser", "display": "human user"}]},
        "requestor": true,
    });
    if r.actor.user_id.is_some() || r.actor.username.is_some() {
        let mut who = json!({});
        if let Some(id) = &r.actor.user_id {
            who["identifier"] = json!({"system": "urn:ward:user", "value": id});
        }
        if let Some(name) = &r.actor.username {
            who["display"] = json!(name);
        }
        agent["who"] = who;
    } else {
        agent["who"] = json!({"display": format!("ward {}", r.actor.via.map(|v| v.as_str()).unwrap_or("system"))});
    }
    if let Some(ip) = &r.ip {
        agent["network"] = json!({"address": ip, "type": "2"});
    }
    if let Some(s) = &r.actor.session_id {
        agent["extension"] = json!([{"url": "urn:ward:session-id", "valueString": s}]);
    }
    let mut details: Vec<Value> =
        vec![json!({"type": "seq", "valueString": r.seq.to_string()}), json!({"type": "hash", "valueString": r.hash})];
    if let Value::Object(map) = &r.details {
        for (k, v) in map {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            details.push(json!({"type": k, "valueString": text}));
        }
    }
    let mut entity = json!({"detail": details});
    if let Some(res) = &r.resource {
        entity["what"] = json!({"identifier": {"system": "urn:ward:resource", "value": res}});
    }
    let mut ev = json!({
        "resourceType": "AuditEvent",
        "id": r.id.to_string(),
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": code, "display": display},
        "subtype": [{"system": "urn:ward:audit-action", "code": r.action}],
        "action": fhir_action(&r.action),
        "recorded": r.time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "outcome": outcome,
        "agent": [agent],
        "source": {
            "observer": {"display": observer},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                      "display": "Application Server"}]
        },
        "entity": [entity],
    });
    if let Some(reason) = &r.reason {
        ev["outcomeDesc"] = json!(reason);
    }
    ev
}

/// A FHIR R4 `Bundle` of type `collection` holding one AuditEvent per record.
pub fn fhir_bundle(records: &[AuditRecord], observer: &str) -> Value {
    let entries: Vec<Value> = records
        .iter()
        .map(|r| json!({"fullUrl": format!("urn:uuid:{}", r.id), "resource": fhir_audit_event(r, observer)}))
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "total": records.len(),
        "entry": entries,
    })
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
    Fhir,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jsonl" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            "fhir" => Ok(Format::Fhir),
            _ => Err("format: one of jsonl, csv, fhir".to_string()),
        }
    }
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Fhir => "fhir",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jsonl => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Fhir => "application/fhir+json",
        }
    }
}

enum Phase {
    Start,
    Rows { after: i64, first: bool },
    End,
    Done,
}

/// Streams the export page by page (1000 records each), so a six-year trail never sits
/// in memory at once.
pub fn stream(
    audit: AuditLog,
    filter: AuditFilter,
    format: Format,
    observer: String,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(Phase::Start, move |phase| {
        let (audit, filter, observer) = (audit.clone(), filter.clone(), observer.clone());
        async move {
            match phase {
                Phase::Start => {
                    let head = match format {
                        Format::Jsonl => Vec::new(),
                        Format::Csv => csv_header(),
                        Format::Fhir => format!(
                            "{{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"timestamp\":\"{}\",\"entry\":[",
                            OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default()
                        )
                        .into_bytes(),
                    };
                    Some((Ok(head), Phase::Rows { after: 0, first: true }))
                }
                Phase::Rows { after, first } => {
                    let page = AuditFilter { after_seq: Some(after), ..filter };
                    let records = match audit.search(&page, 1000).await {
                        Ok(r) => r,
                        Err(e) => return Some((Err(std::io::Error::other(e.to_string())), Phase::Done)),
                    };
                    let Some(last) = records.last().map(|r| r.seq) else {
                        return Some((Ok(Vec::new()), Phase::End));
                    };
                    let chunk = render(&records, format, first, &observer);
                    Some((Ok(chunk), Phase::Rows { after: last, first: false }))
                }
                Phase::End => {
                    let tail = if format == Format::Fhir { b"]}\n".to_vec() } else { Vec::new() };
                    Some((Ok(tail), Phase::Done))
                }
                Phase::Done => None,
            }
        }
    })
}

fn render(records: &[AuditRecord], format: Format, first: bool, observer: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        Format::Jsonl => {
            for r in records {
                out.extend_from_slice(jsonl_line(r).as_bytes());
                out.push(b'\n');
            }
        }
        Format::Csv => out = csv_rows(records),
        Format::Fhir => {
            for (i, r) in records.iter().enumerate() {
                if !(first && i == 0) {
                    out.push(b',');
                }
                let entry = serde_json::json!({
                    "fullUrl": format!("urn:uuid:{}", r.id),
                    "resource": fhir_audit_event(r, observer),
                });
                out.extend_from_slice(entry.to_string().as_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::*;
    use crate::chain::{GENESIS, seal};
    use crate::event::{AuditEvent, Outcome, Via};

    fn record(action: &str, outcome: Outcome) -> AuditRecord {
        let e = AuditEvent::new(action, outcome, Via::Api, OffsetDateTime::UNIX_EPOCH)
            .user("u-1", "alice")
            .session("s-1")
            .resource("user/u-2")
            .client(Some("10.0.0.1".into()), Some("curl".into()))
            .reason("bad_password")
            .detail("dialog_id", "d-1");
        AuditRecord::from_row(&seal(&e, Uuid::now_v7(), 1, GENESIS)).expect("readable")
    }

    #[test]
    fn fhir_audit_event_has_the_r4_required_elements() {
        let b = fhir_bundle(&[record("auth.login", Outcome::Failure)], "ward-test");
        assert_eq!(b["resourceType"], "Bundle");
        let ev = &b["entry"][0]["resource"];
        assert_eq!(ev["resourceType"], "AuditEvent");
        assert_eq!(ev["type"]["code"], "110114");
        assert_eq!(ev["subtype"][0]["code"], "auth.login");
        assert!(ev["recorded"].as_str().is_some_and(|t| t.starts_with("1970-01-01T")));
        assert_eq!(ev["outcome"], "4");
        assert_eq!(ev["outcomeDesc"], "bad_password");
        assert_eq!(ev["agent"][0]["requestor"], true);
        assert_eq!(ev["agent"][0]["who"]["identifier"]["value"], "u-1");
        assert_eq!(ev["agent"][0]["network"]["address"], "10.0.0.1");
        assert_eq!(ev["source"]["observer"]["display"], "ward-test");
        assert_eq!(ev["entity"][0]["what"]["identifier"]["value"], "user/u-2");
    }

    #[test]
    fn csv_quotes_and_keeps_column_count() {
        let mut out = Vec::new();
        write_csv(&mut out, vec![record("user.create", Outcome::Success)]).expect("csv");
        let text = String::from_utf8(out).expect("utf8");
        let mut rdr = csv::Reader::from_reader(text.as_bytes());
        let row = rdr.records().next().expect("row").expect("parses");
        assert_eq!(row.len(), CSV_HEADER.len());
        assert_eq!(&row[7], "user.create");
    }
}
