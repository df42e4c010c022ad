//! Files (`/v1/files…`): thin handlers over `ward_files`. Bodies stream both ways; these
//! routes have their own size limit (`[files] max_bytes`, enforced while streaming) and
//! timeout (`[files] transfer_timeout_s`) instead of the server-wide ones.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;
use ward_files::{ByteRange, FileInfo, NewFile};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, Caller};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadParams {
    /// The dialog the file is shared in (the caller must be a member).
    dialog_id: Uuid,
}

/// The request header carrying the file's name, percent-encoded UTF-8. A header, not a
/// query parameter: URLs end up in proxy and load-balancer access logs, and a file's name
/// is PHI ("biopsy - J. Doe.pdf").
pub const FILE_NAME_HEADER: &str = "x-ward-file-name";

/// Uploads a file: the raw bytes as the body, their type as `Content-Type` (one of
/// `[files] allowed_types`, matching the bytes), its name (optional) in `X-Ward-File-Name`
/// (percent-encoded UTF-8). 201 with the id, size and SHA-256.
#[utoipa::path(post, path = "/v1/files", tag = "files", security(("bearer" = [])),
    params(UploadParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Object), (status = 400), (status = 404), (status = 413), (status = 415)))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<FileInfo>), ApiError> {
    let declared = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let length = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let name = match headers.get(FILE_NAME_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| percent_encoding::percent_decode_str(v).decode_utf8().ok())
                .map(|n| n.into_owned())
                .ok_or_else(|| ApiError::invalid_request("X-Ward-File-Name: percent-encoded UTF-8 expected"))?,
        ),
    };
    let new =
        NewFile { dialog_id: params.dialog_id, declared_type: declared.to_string(), name, declared_length: length };
    let info = state.files.upload(&caller.ctx, &caller.principal, new, body.into_data_stream()).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Downloads a file (members of its dialog), whole or one `Range: bytes=…` of it (206).
/// Always as an attachment with `nosniff`, so a file never renders as a page.
#[utoipa::path(get, path = "/v1/files/{id}", tag = "files", security(("bearer" = [])),
    responses((status = 200, content_type = "application/octet-stream"), (status = 206), (status = 404),
        (status = 416)))]
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let range = headers.get(RANGE).and_then(|v| v.to_str().ok()).and_then(parse_range);
    let d = match state.files.download(&caller.ctx, &caller.principal, id, range).await {
        Ok(d) => d,
        // RFC 9110 §15.5.17: a 416 names the current length.
        Err(e @ ward_files::FilesError::RangeNotSatisfiable { size }) => {
            let mut refused = ApiError::from(e).into_response();
            refused.headers_mut().insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).map_err(|_| ApiError::internal())?,
            );
            return Ok(refused);
        }
        Err(e) => return Err(e.into()),
    };
    let mut response = Body::from_stream(d.body).into_response();
    let h = response.headers_mut();
    let content_type = HeaderValue::from_str(&d.info.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    h.insert(CONTENT_TYPE, content_type);
    h.insert(CONTENT_LENGTH, HeaderValue::from(d.length));
    h.insert(CONTENT_DISPOSITION, disposition(d.info.name.as_deref()));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if let Some((first, last)) = d.range {
        let value = format!("bytes {first}-{last}/{}", d.info.size);
        h.insert(CONTENT_RANGE, HeaderValue::from_str(&value).map_err(|_| ApiError::internal())?);
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

/// Deletes a file (its uploader, or an owner or admin of its dialog): its data key is
/// destroyed (cryptographic erase) and its object removed.
#[utoipa::path(delete, path = "/v1/files/{id}", tag = "files", security(("bearer" = [])),
    responses((status = 204), (status = 403), (status = 404)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.files.delete(&caller.ctx, &caller.principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One `bytes=` range; anything else (several ranges, other units, nonsense) is ignored
/// and the whole file is sent, as RFC 9110 allows.
fn parse_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return last.parse().ok().map(ByteRange::Suffix);
    }
    let first = first.parse().ok()?;
    let last = if last.is_empty() { None } else { Some(last.parse().ok()?) };
    if last.is_some_and(|l| l < first) {
        return None;
    }
    Some(ByteRange::From { first, last })
}

/// `attachment`, with the name when there is one: an ASCII fallback and the exact name
/// percent-encoded (RFC 6266 / RFC 8187).
fn disposition(name: Option<&str>) -> HeaderValue {
    let Some(name) = name else { return HeaderValue::from_static("attachment") };
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_one_byte_range_only() {
        assert_eq!(parse_range("bytes=0-99"), Some(ByteRange::From { first: 0, last: Some(99) }));
        assert_eq!(parse_range("bytes=100-"), Some(ByteRange::From { first: 100, last: None }));
        assert_eq!(parse_range("bytes=-5"), Some(ByteRange::Suffix(5)));
        for ignored in ["bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=a-b", "bytes=-"] {
            assert_eq!(parse_range(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn dispositions_are_attachments_with_safe_names() {
        assert_eq!(disposition(None), "attachment");
        let d = disposition(Some("lab \"result\".pdf"));
        assert_eq!(d, "attachment; filename=\"lab _result_.pdf\"; filename*=UTF-8''lab%20%22result%22.pdf");
        let d = disposition(Some("r\u{e9}sum\u{e9}.txt"));
        assert!(d.to_str().expect("ascii").contains("filename*=UTF-8''r%C3%A9sum%C3%A9.txt"));
    }
}
