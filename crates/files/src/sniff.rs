//! Content types: the declared one must be allowed, and must be what the first bytes show.
//!
//! Binary types are recognised by their magic numbers (the `infer` crate: JPEG, PNG, GIF,
//! WebP, HEIF, TIFF, PDF, DICOM's `DICM` at offset 128 and many more). `text/plain` has no
//! magic number: it is accepted when the first segment is UTF-8 without NUL bytes and
//! matches no binary signature. A type the first bytes contradict is refused, so a script
//! or an executable cannot be uploaded as a photo.

use crate::FilesError;

/// The declared type without parameters, lower-cased (`Text/Plain; charset=utf-8` →
/// `text/plain`).
pub fn essence(declared: &str) -> String {
    declared.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Refuses a type outside `allowed`.
pub fn check_allowed(essence: &str, allowed: &[String]) -> Result<(), FilesError> {
    if essence.is_empty() {
        return Err(FilesError::UnsupportedType("a Content-Type is required".into()));
    }
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(essence)) {
        Ok(())
    } else {
        Err(FilesError::UnsupportedType(format!("the content type {essence} is not accepted here")))
    }
}

/// Checks `head` (the file's first bytes, up to one segment; all of it when shorter)
/// against the declared type.
pub fn check_content(essence: &str, head: &[u8]) -> Result<(), FilesError> {
    let seen = infer::get(head).map(|t| t.mime_type());
    let matches = match essence {
        "text/plain" => seen.is_none() && is_text(head),
        "image/heif" | "image/heic" => matches!(seen, Some("image/heif" | "image/heic")),
        declared => seen == Some(declared),
    };
    if matches {
        Ok(())
    } else {
        Err(FilesError::UnsupportedType(format!(
            "the content does not look like {essence} (it looks like {})",
            seen.unwrap_or(if is_text(head) { "text/plain" } else { "unknown binary data" })
        )))
    }
}

/// UTF-8 without NUL; a character cut off at the end of `head` is fine.
fn is_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    valid && !head.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn declared_types_must_be_allowed_and_match_the_bytes() {
        let allowed = vec!["image/png".to_string(), "text/plain".to_string(), "application/dicom".to_string()];
        assert_eq!(essence("Text/Plain; charset=utf-8"), "text/plain");
        assert!(check_allowed("image/png", &allowed).is_ok());
        assert!(check_allowed("text/html", &allowed).is_err());
        assert!(check_allowed("", &allowed).is_err());
        assert!(check_content("image/png", PNG).is_ok());
        assert!(check_content("text/plain", PNG).is_err(), "a PNG is not text");
        assert!(check_content("image/png", b"just words").is_err(), "text is not a PNG");
        assert!(check_content("text/plain", b"").is_ok(), "an empty text file");
        assert!(check_content("text/plain", "caf\u{e9}".as_bytes()).is_ok());
        assert!(check_content("text/plain", &"caf\u{e9}".as_bytes()[..4]).is_ok(), "a character cut at the end");
        assert!(check_content("text/plain", b"a\0b").is_err(), "NUL is not text");
        let mut dicom = vec![0u8; 128];
        dicom.extend_from_slice(b"DICM\x02\x00\x00\x00");
        assert!(check_content("application/dicom", &dicom).is_ok());
        assert!(check_content("application/pdf", b"%PDF-1.7\n").is_ok());
        assert!(check_content("application/pdf", b"MZ\x90\x00").is_err(), "an executable is not a PDF");
    }
}
