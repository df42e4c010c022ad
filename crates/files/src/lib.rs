//! Ward's file sharing: files of a dialog, encrypted before their first byte reaches storage.
//!
//! * [`segments`]: the sealed object format. A file is cut into 64 KiB segments, each sealed
//!   with AES-256-GCM under the file's own data key; the AAD names the file, the segment's
//!   index and whether it is the last, so truncation, reordering and splicing between files
//!   fail authentication.
//! * [`sniff`]: the declared content type is checked against the allowlist and against what
//!   the first bytes show.
//! * [`objects`]: where sealed objects live, through `object_store`: a local directory
//!   (default) or an S3 bucket.
//! * [`scan`]: optional malware scanning with clamd while the upload streams.
//! * [`service`]: upload, download (with byte ranges), delete (cryptographic erase) and the
//!   orphan sweep, each decided by the access-control engine through the dialog the file
//!   belongs to, and audited by id only.
//!
//! **Invariant:** an upload holds at most one segment and a few multipart parts in memory
//! (and `max_concurrent_uploads` bound the uploads at once), and Ward writes no plaintext
//! byte of a file anywhere. (clamd, when configured, keeps its own temporary copy while it
//! scans: see `scan`.)

pub mod error;
pub mod objects;
pub mod scan;
pub mod segments;
pub mod service;
pub mod sniff;

pub use error::FilesError;
pub use objects::{Backend, Objects};
pub use scan::Clamd;
pub use service::{ByteRange, Download, FileInfo, Files, FilesSettings, NewFile, SweepReport};
