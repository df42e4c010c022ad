//! The files service: upload, download, delete and the orphan sweep.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, Stream, StreamExt};
use object_store::{GetOptions, GetRange, ObjectStoreExt as _, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;
use ward_access::Principal;
use ward_audit::{AuditLog, Context, Outcome};
use ward_keys::{DataKey, DataKeys};
use ward_messaging::{Messaging, Op};
use ward_storage::{FileRecord, Store};
use zeroize::{Zeroize, Zeroizing};

use crate::segments::{self, Layout, SEGMENT_SIZE};
use crate::{FilesError, Objects, sniff};

const UPLOAD: Op = Op { action: "file:upload", audit: "file.upload" };
const READ: Op = Op { action: "file:read", audit: "file.read" };
const DELETE: Op = Op { action: "file:delete", audit: "file.delete" };

/// Multipart part size: S3's minimum part is 5 MiB; at most two parts are in flight, so an
/// upload holds about 15 MiB whatever the file's size.
const PART_SIZE: usize = 5 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;
/// Longest file name kept (characters).
const MAX_NAME: usize = 255;

/// Limits from `[files]` (whose defaults live in ward-config).
#[derive(Debug, Clone)]
pub struct FilesSettings {
    pub max_bytes: u64,
    pub allowed_types: Vec<String>,
    /// An object without a record is swept only when older than this.
    pub orphan_grace: std::time::Duration,
    /// Malware scanning of every upload, when configured.
    pub clamd: Option<crate::Clamd>,
    /// Uploads streaming at once on one node; beyond, 503 with `Retry-After`.
    pub max_concurrent_uploads: usize,
}

/// A file as members see it. `Debug` leaves out the name (PHI) and digest.
#[derive(Clone, Serialize)]
pub struct FileInfo {
    pub id: Uuid,
    pub dialog_id: Uuid,
    pub uploader_id: Uuid,
    pub name: Option<String>,
    pub content_type: String,
    pub size: u64,
    /// SHA-256 of the plaintext, hex.
    pub sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for FileInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileInfo")
            .field("id", &self.id)
            .field("dialog_id", &self.dialog_id)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// What a caller uploads besides the bytes. `Debug` leaves out the name (PHI).
#[derive(Clone)]
pub struct NewFile {
    pub dialog_id: Uuid,
    /// The request's `Content-Type`, parameters included.
    pub declared_type: String,
    pub name: Option<String>,
    /// The request's `Content-Length`, when it has one.
    pub declared_length: Option<u64>,
}

impl std::fmt::Debug for NewFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewFile")
            .field("dialog_id", &self.dialog_id)
            .field("declared_type", &self.declared_type)
            .field("declared_length", &self.declared_length)
            .finish_non_exhaustive()
    }
}

/// What is sealed in `meta_sealed`.
#[derive(Serialize, Deserialize)]
struct Meta {
    name: Option<String>,
    content_type: String,
    sha256: String,
}

/// A requested byte range, as parsed from `Range: bytes=…` (one range only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-` or `first-last` (inclusive).
    From { first: u64, last: Option<u64> },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The inclusive `(first, last)` bytes within a file of `size` bytes.
    fn resolve(self, size: u64) -> Result<(u64, u64), FilesError> {
        let unsatisfiable = FilesError::RangeNotSatisfiable { size };
        match self {
            _ if size == 0 => Err(unsatisfiable),
            ByteRange::From { first, last } => {
                let last = last.unwrap_or(u64::MAX).min(size - 1);
                if first > last { Err(unsatisfiable) } else { Ok((first, last)) }
            }
            ByteRange::Suffix(0) => Err(unsatisfiable),
            ByteRange::Suffix(n) => Ok((size.saturating_sub(n), size - 1)),
        }
    }
}

/// A download: the file, the part of it being sent and the plaintext stream.
pub struct Download {
    pub info: FileInfo,
    /// Inclusive bytes sent, when a range was asked for (206).
    pub range: Option<(u64, u64)>,
    /// Bytes in `body`.
    pub length: u64,
    /// Decrypted segment by segment; yields an error (and stops) if a later segment fails
    /// its check, so a client never receives a tampered byte.
    pub body: BoxStream<'static, Result<Bytes, FilesError>>,
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Objects of deleted files or with no record at all.
    pub orphans: u64,
    /// Staging files of uploads that never completed (local backend).
    pub staging: u64,
}

/// The files service. Cheap to clone.
#[derive(Clone)]
pub struct Files {
    store: Arc<dyn Store>,
    audit: AuditLog,
    keys: DataKeys,
    messaging: Messaging,
    objects: Objects,
    settings: Arc<FilesSettings>,
    /// Uploads in progress on this node, at most `max_concurrent_uploads`.
    uploads: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files").field("backend", &self.objects.backend()).finish_non_exhaustive()
    }
}

impl Files {
    pub fn new(
        store: Arc<dyn Store>,
        audit: AuditLog,
        keys: DataKeys,
        messaging: Messaging,
        objects: Objects,
        settings: FilesSettings,
    ) -> Self {
        let uploads = Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent_uploads.max(1)));
        Self { store, audit, keys, messaging, objects, settings: Arc::new(settings), uploads }
    }

    pub fn settings(&self) -> &FilesSettings {
        &self.settings
    }

    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// Readiness: the object store lists (one page at most), and clamd, when configured,
    /// answers `PING`.
    pub async fn probe(&self) -> Result<(), FilesError> {
        if let Some(first) = self.objects.store().list(None).next().await {
            first?;
        }
        if let Some(clamd) = &self.settings.clamd {
            let socket = clamav_client::tokio::Socket { socket_path: clamd.socket.clone() };
            let pong = clamav_client::tokio::ping(socket).await.map_err(|e| FilesError::ScanFailed(e.to_string()))?;
            if pong != clamav_client::PONG {
                return Err(FilesError::ScanFailed("clamd did not answer PING".into()));
            }
        }
        Ok(())
    }

    /// Conditions an operator must fix before production (the service still works).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.settings.clamd.is_none() {
            out.push("files.clamd_socket is not set: uploads are not scanned for malware".to_string());
        }
        out
    }

    fn meta_aad(id: Uuid, dialog_id: Uuid, data_key_id: Uuid) -> Vec<u8> {
        format!("ward:file-meta|{id}|{dialog_id}|{data_key_id}").into_bytes()
    }

    /// Records a refused upload (nothing was kept), then hands back the refusal.
    async fn refuse(&self, ctx: &Context, dialog_id: Uuid, id: Uuid, e: FilesError) -> FilesError {
        let reason = match &e {
            FilesError::TooLarge { .. } => "too_large",
            FilesError::UnsupportedType(_) => "unsupported_type",
            FilesError::Invalid(_) => "invalid",
            FilesError::Interrupted(_) => "interrupted",
            FilesError::Infected(_) => "infected",
            FilesError::ScanFailed(_) => "scan_failed",
            FilesError::Busy => "busy",
            _ => "error",
        };
        let mut event = ctx
            .event(UPLOAD.audit, Outcome::Failure)
            .resource(format!("file/{id}"))
            .reason(reason)
            .detail("dialog_id", dialog_id.to_string());
        if let FilesError::Infected(signature) = &e {
            event = event.detail("signature", signature.clone()).detail("severity", "high");
        }
        match self.audit.record_alone(&event).await {
            Ok(_) => e,
            Err(audit) => audit.into(),
        }
    }

    /// Uploads a file to a dialog the caller is a member of, streaming `body` through
    /// encryption into the object store; nothing is recorded until the object is complete.
    /// `declared_length` (the request's `Content-Length`) lets an oversized upload be
    /// refused before its first byte is read.
    ///
    /// An upload whose request is dropped before it answers (cut by `transfer_timeout_s`, or
    /// by the server stopping) is recorded as `cut_off` once dropped.
    pub async fn upload<S, E>(
        &self,
        ctx: &Context,
        who: &Principal,
        new: NewFile,
        body: S,
    ) -> Result<FileInfo, FilesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let id = Uuid::now_v7();
        let mut cut = CutOff { audit: self.audit.clone(), ctx: ctx.clone(), dialog_id: new.dialog_id, id, armed: true };
        let answered = self.upload_as(ctx, who, new, body, id).await;
        cut.armed = false;
        answered
    }

    async fn upload_as<S, E>(
        &self,
        ctx: &Context,
        who: &Principal,
        new: NewFile,
        body: S,
        id: Uuid,
    ) -> Result<FileInfo, FilesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let NewFile { dialog_id, declared_type, name, declared_length } = new;
        self.messaging.membership(ctx, who, dialog_id, UPLOAD).await?;
        let content_type = sniff::essence(&declared_type);
        let checked = check_name(name.as_deref())
            .and_then(|()| sniff::check_allowed(&content_type, &self.settings.allowed_types))
            .and_then(|()| match declared_length {
                Some(n) if n > self.settings.max_bytes => Err(FilesError::TooLarge { limit: self.settings.max_bytes }),
                _ => Ok(()),
            });
        if let Err(e) = checked {
            return Err(self.refuse(ctx, dialog_id, id, e).await);
        }
        // Each upload holds up to ~15 MiB of parts: the number at once is bounded.
        let Ok(_slot) = self.uploads.clone().try_acquire_owned() else {
            return Err(self.refuse(ctx, dialog_id, id, FilesError::Busy).await);
        };
        let opened = async {
            let (key_record, key) = self.keys.prepare(&format!("file/{id}"), ctx.now).await?;
            let upload = self.objects.store().put_multipart(&Objects::path(id)).await?;
            Ok::<_, FilesError>((key_record, key, upload))
        }
        .await;
        let (key_record, key, upload) = match opened {
            Ok(opened) => opened,
            Err(e) => return Err(self.refuse(ctx, dialog_id, id, e).await),
        };
        let path = Objects::path(id);
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let scan = self.settings.clamd.as_ref().map(crate::scan::Scan::start);
        let mut streamed = self.seal_into(&mut writer, &key, id, &content_type, scan.as_ref(), body).await;
        if let Some(scan) = scan {
            // The verdict comes before the record: a file is readable only once clean.
            let verdict = scan.finish().await;
            if let (Ok(_), Err(e)) = (&streamed, verdict) {
                streamed = Err(e);
            }
        }
        let (size, sha256) = match streamed {
            Ok(done) => done,
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %abort, file_id = %id, "cannot abort a refused upload; the sweep removes it");
                }
                return Err(self.refuse(ctx, dialog_id, id, e).await);
            }
        };
        if let Err(e) = writer.finish().await {
            // A failed completion leaves at most a staging file or an incomplete multipart
            // upload: the sweep (local) or the bucket's lifecycle rule (S3) removes it.
            return Err(self.refuse(ctx, dialog_id, id, e.into()).await);
        }

        let meta = Meta { name, content_type, sha256 };
        let meta_json = Zeroizing::new(serde_json::to_vec(&meta).map_err(|e| FilesError::Invalid(e.to_string()))?);
        let meta_sealed = ward_keys::seal(&key, &Self::meta_aad(id, dialog_id, key_record.id), &meta_json)?;
        let record = FileRecord {
            id,
            dialog_id,
            uploader_id: who.user_id,
            data_key_id: key_record.id,
            size: i64::try_from(size).map_err(|_| FilesError::TooLarge { limit: self.settings.max_bytes })?,
            segment_size: SEGMENT_SIZE as i64,
            meta_sealed: Some(meta_sealed),
            object_key: path.to_string(),
            created_at: ctx.now,
            deleted_at: None,
        };
        let event = ctx
            .event(UPLOAD.audit, Outcome::Success)
            .resource(format!("file/{id}"))
            .detail("dialog_id", dialog_id.to_string())
            .detail("size", size);
        let committed = async {
            let mut tx = self.store.begin().await?;
            tx.insert_data_key(&key_record).await?;
            tx.insert_file(&record).await?;
            self.audit.record(&mut *tx, &event).await?;
            tx.commit().await?;
            Ok::<_, FilesError>(())
        }
        .await;
        if let Err(e) = committed {
            // Without its record the object is an orphan: remove it now (or the sweep will).
            if let Err(del) = self.objects.store().delete(&path).await {
                tracing::warn!(error = %del, file_id = %id, "cannot remove an unrecorded upload; the sweep removes it");
            }
            return Err(e);
        }
        Ok(FileInfo {
            id,
            dialog_id,
            uploader_id: who.user_id,
            name: meta.name,
            content_type: meta.content_type,
            size,
            sha256: meta.sha256,
            created_at: ctx.now,
        })
    }

    /// Reads `body`, checks the type on the first segment, seals segment by segment into
    /// `writer`. Returns the size and the plaintext's SHA-256 (hex).
    async fn seal_into<S, E>(
        &self,
        writer: &mut WriteMultipart,
        key: &DataKey,
        id: Uuid,
        content_type: &str,
        scan: Option<&crate::scan::Scan>,
        mut body: S,
    ) -> Result<(u64, String), FilesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let segment = SEGMENT_SIZE as usize;
        let mut pending = Zeroizing::new(Vec::with_capacity(segment));
        let mut hasher = Sha256::new();
        let (mut size, mut index, mut sniffed) = (0u64, 0u64, false);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| FilesError::Interrupted(e.to_string()))?;
            size += chunk.len() as u64;
            if size > self.settings.max_bytes {
                return Err(FilesError::TooLarge { limit: self.settings.max_bytes });
            }
            hasher.update(&chunk);
            if let Some(scan) = scan {
                scan.feed(chunk.clone()).await;
            }
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                if pending.len() == segment {
                    // More follows, so the held segment is not the last.
                    if !sniffed {
                        sniff::check_content(content_type, &pending)?;
                        sniffed = true;
                    }
                    let sealed = segments::seal(key, id, index, false, &pending)?;
                    pending.zeroize();
                    writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                    writer.write(&sealed);
                    index += 1;
                }
                let take = (segment - pending.len()).min(rest.len());
                pending.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
            }
        }
        if !sniffed {
            sniff::check_content(content_type, &pending)?;
        }
        let sealed = segments::seal(key, id, index, true, &pending)?;
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        writer.write(&sealed);
        Ok((size, hex::encode(hasher.finalize())))
    }

    /// The live record of a file, or `NotFound`.
    async fn live(&self, id: Uuid) -> Result<FileRecord, FilesError> {
        match self.store.file_by_id(id).await? {
            Some(r) if r.deleted_at.is_none() => Ok(r),
            _ => Err(FilesError::NotFound),
        }
    }

    /// The live record of a file a caller asked for; an unknown or deleted id is recorded
    /// (an attempt on a file, by id) before `NotFound` is answered.
    async fn known(&self, ctx: &Context, op: Op, id: Uuid) -> Result<FileRecord, FilesError> {
        match self.live(id).await {
            Err(FilesError::NotFound) => {
                let event = ctx.event(op.audit, Outcome::Failure).resource(format!("file/{id}")).reason("no such file");
                self.audit.record_alone(&event).await?;
                Err(FilesError::NotFound)
            }
            other => other,
        }
    }

    fn info(key: &DataKey, r: &FileRecord) -> Result<FileInfo, FilesError> {
        let sealed = r.meta_sealed.as_deref().ok_or(FilesError::NotFound)?;
        let plain = ward_keys::open(key, &Self::meta_aad(r.id, r.dialog_id, r.data_key_id), sealed)?;
        let meta: Meta = serde_json::from_slice(&plain).map_err(|_| FilesError::Integrity)?;
        Ok(FileInfo {
            id: r.id,
            dialog_id: r.dialog_id,
            uploader_id: r.uploader_id,
            name: meta.name,
            content_type: meta.content_type,
            size: u64::try_from(r.size).map_err(|_| FilesError::Integrity)?,
            sha256: meta.sha256,
            created_at: r.created_at,
        })
    }

    /// Opens a file for a reader of its dialog (member, break-glass grant or policy) and
    /// streams it, or the asked range of it, decrypting segment by segment.
    pub async fn download(
        &self,
        ctx: &Context,
        who: &Principal,
        id: Uuid,
        range: Option<ByteRange>,
    ) -> Result<Download, FilesError> {
        let record = self.known(ctx, READ, id).await?;
        let (_, reading) = self.messaging.readable_for(ctx, who, record.dialog_id, READ, &format!("file/{id}")).await?;
        let key = match self.keys.by_id(record.data_key_id).await {
            Ok(key) => key,
            // Deleted meanwhile: the key is erased.
            Err(ward_keys::KeyError::Destroyed(_)) => return Err(FilesError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let info = Self::info(&key, &record)?;
        let layout = Layout::new(info.size, u64::try_from(record.segment_size).map_err(|_| FilesError::Integrity)?);
        let (first, last) = match range {
            Some(r) => r.resolve(info.size)?,
            None => (0, info.size.saturating_sub(1)),
        };
        let length = if info.size == 0 { 0 } else { last - first + 1 };
        let (seg_from, seg_to) =
            if info.size == 0 { (0, 0) } else { (layout.segment_of(first), layout.segment_of(last)) };
        let sealed_range = layout.sealed_offset(seg_from)..layout.sealed_offset(seg_to) + layout.sealed_len(seg_to);
        let options = GetOptions { range: Some(GetRange::Bounded(sealed_range.clone())), ..GetOptions::default() };
        let got =
            self.objects.store().get_opts(&object_store::path::Path::from(record.object_key.as_str()), options).await;
        let got = match got {
            Ok(got) if got.meta.size == layout.object_len() && got.range == sealed_range => got,
            Ok(_) => return Err(self.integrity_failure(ctx, &record, "the object's length is wrong").await),
            // A delete that committed meanwhile, or an object lost from under its record.
            Err(object_store::Error::NotFound { .. }) if self.live(id).await.is_err() => {
                return Err(FilesError::NotFound);
            }
            Err(object_store::Error::NotFound { .. }) => {
                return Err(self.integrity_failure(ctx, &record, "the object is missing").await);
            }
            Err(e) => return Err(e.into()),
        };
        let mut stream = Decrypting {
            key,
            id,
            layout,
            next: seg_from,
            to: seg_to,
            skip_first: first - seg_from * layout.segment_size,
            remaining: length,
            buf: BytesMut::new(),
            source: got.into_stream(),
        };
        // The first segment is checked before anything is answered, so a tampered start
        // fails with a clean error instead of a broken-off body.
        let head = match stream.next_plain().await {
            Ok(head) => head,
            Err(FilesError::Integrity) => {
                return Err(self.integrity_failure(ctx, &record, "a segment failed authentication").await);
            }
            Err(e) => return Err(e),
        };
        let mut event = ctx
            .event(READ.audit, Outcome::Success)
            .resource(format!("file/{id}"))
            .detail("dialog_id", record.dialog_id.to_string());
        if range.is_some() {
            event = event.detail("range", format!("{first}-{last}"));
        }
        self.audit.record_alone(&reading.mark(event)).await?;
        // A segment that fails later breaks the body off; it is recorded like a failure
        // before the answer (the body's own error goes to the client as a cut connection).
        let witness = (self.audit.clone(), ctx.clone(), record.clone());
        let body =
            futures_util::stream::unfold((Some(head), stream, witness), |(head, mut stream, witness)| async move {
                if let Some(head) = head {
                    return Some((Ok(head), (None, stream, witness)));
                }
                match stream.next_plain().await {
                    Ok(b) if b.is_empty() && stream.done() => None,
                    Ok(b) => Some((Ok(b), (None, stream, witness))),
                    Err(e) => {
                        let (audit, ctx, record) = &witness;
                        let e = match e {
                            FilesError::Integrity => {
                                record_integrity(audit, ctx, record, "a segment failed authentication while streaming")
                                    .await
                            }
                            other => other,
                        };
                        stream.next = stream.to + 1;
                        Some((Err(e), (None, stream, witness)))
                    }
                }
            })
            .filter(|item| std::future::ready(!matches!(item, Ok(b) if b.is_empty())))
            .boxed();
        Ok(Download { info, range: range.map(|_| (first, last)), length, body })
    }

    /// Records a stored file that failed its check (high severity) and answers `Integrity`.
    async fn integrity_failure(&self, ctx: &Context, r: &FileRecord, what: &str) -> FilesError {
        record_integrity(&self.audit, ctx, r, what).await
    }

    /// Deletes a file (its uploader, or an owner or admin of its dialog): destroys its data
    /// key (cryptographic erase) and blanks its metadata in one audited transaction, then
    /// removes the object. An object whose removal fails is left to the sweep, and is
    /// unreadable already: its key is gone.
    pub async fn delete(&self, ctx: &Context, who: &Principal, id: Uuid) -> Result<(), FilesError> {
        let record = self.known(ctx, DELETE, id).await?;
        let (_, member) =
            self.messaging.membership_for(ctx, who, record.dialog_id, DELETE, &format!("file/{id}")).await?;
        if record.uploader_id != who.user_id && !ward_messaging::is_admin(&member) {
            let event = ctx
                .event(DELETE.audit, Outcome::Denied)
                .resource(format!("file/{id}"))
                .reason("only the uploader or a dialog admin may delete a file");
            self.audit.record_alone(&event).await?;
            return Err(FilesError::Forbidden(
                "only the uploader or an admin of the dialog may delete this file".into(),
            ));
        }
        let event = ctx
            .event(DELETE.audit, Outcome::Success)
            .resource(format!("file/{id}"))
            .detail("dialog_id", record.dialog_id.to_string())
            .detail("data_key_id", record.data_key_id.to_string());
        let mut tx = self.store.begin().await?;
        if !tx.delete_file(id, ctx.now).await? {
            return Err(FilesError::NotFound);
        }
        self.keys.destroy(&mut *tx, record.data_key_id, ctx.now).await?;
        self.audit.record(&mut *tx, &event).await?;
        tx.commit().await?;
        if let Err(e) = self.objects.store().delete(&object_store::path::Path::from(record.object_key.as_str())).await {
            tracing::warn!(error = %e, file_id = %id, "cannot remove a deleted file's object; the sweep removes it");
        }
        Ok(())
    }

    /// Removes objects whose record is gone or deleted, and (local backend) staging files
    /// of uploads that never completed, once older than the grace period; audited when it
    /// removed anything.
    pub async fn sweep(&self, now: OffsetDateTime) -> Result<SweepReport, FilesError> {
        let grace = time::Duration::try_from(self.settings.orphan_grace).unwrap_or(time::Duration::DAY);
        let cutoff = (now - grace).unix_timestamp();
        let mut report = SweepReport::default();
        // The records are read in batches, one query per `FILES_BY_IDS_MAX` objects.
        let mut listing = self.objects.store().list(None).chunks(ward_storage::FILES_BY_IDS_MAX);
        let mut removed = Vec::new();
        while let Some(page) = listing.next().await {
            let mut objects = Vec::with_capacity(page.len());
            for meta in page {
                let meta = meta?;
                match meta.location.filename().unwrap_or_default().parse::<Uuid>() {
                    Ok(id) => objects.push((id, meta)),
                    Err(_) => {
                        tracing::warn!(object = %meta.location, "an object the files store does not know; left alone");
                    }
                }
            }
            let ids: Vec<Uuid> = objects.iter().map(|(id, _)| *id).collect();
            let records: std::collections::HashMap<Uuid, FileRecord> =
                self.store.files_by_ids(&ids).await?.into_iter().map(|r| (r.id, r)).collect();
            for (id, meta) in objects {
                let orphan = match records.get(&id) {
                    Some(r) => r.deleted_at.is_some(),
                    None => meta.last_modified.timestamp() < cutoff,
                };
                if orphan {
                    removed.push(meta.location);
                }
            }
        }
        for location in &removed {
            // Checked again just before: a record may have been committed since the listing.
            let id = location.filename().unwrap_or_default().parse::<Uuid>().ok();
            if let Some(id) = id
                && self.store.file_by_id(id).await?.is_some_and(|r| r.deleted_at.is_none())
            {
                continue;
            }
            match self.objects.store().delete(location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => report.orphans += 1,
                Err(e) => tracing::warn!(error = %e, object = %location, "the sweep cannot remove an object"),
            }
        }
        if let Some(dir) = self.objects.local_dir() {
            report.staging = sweep_staging(dir, cutoff).await;
        }
        if report.orphans + report.staging > 0 {
            let event = Context::system(now)
                .event("file.sweep", Outcome::Success)
                .detail("orphans", report.orphans)
                .detail("staging", report.staging);
            self.audit.record_alone(&event).await?;
            tracing::info!(orphans = report.orphans, staging = report.staging, "the files sweep removed objects");
        }
        Ok(report)
    }
}

/// Armed while an upload runs: dropped armed, the upload's future was dropped before it
/// answered (the transfer timeout, or shutdown), so the attempt is recorded from a task of
/// its own. Best effort by nature: nobody is left to answer 503 to.
struct CutOff {
    audit: AuditLog,
    ctx: Context,
    dialog_id: Uuid,
    id: Uuid,
    armed: bool,
}

impl Drop for CutOff {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let event = self
            .ctx
            .event(UPLOAD.audit, Outcome::Failure)
            .resource(format!("file/{}", self.id))
            .reason("cut_off")
            .detail("dialog_id", self.dialog_id.to_string());
        let (audit, id) = (self.audit.clone(), self.id);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = audit.record_alone(&event).await {
                        tracing::error!(error = %e, file_id = %id, "cannot record an upload that was cut off");
                    }
                });
            }
            Err(_) => tracing::error!(file_id = %id, "cannot record an upload that was cut off: no runtime"),
        }
    }
}

/// Logs and records (high severity) a stored file that failed its check; answers
/// `Integrity`, or the audit failure when the record cannot be written.
async fn record_integrity(audit: &AuditLog, ctx: &Context, r: &FileRecord, what: &str) -> FilesError {
    tracing::error!(file_id = %r.id, "{what}");
    let event = ctx
        .event(READ.audit, Outcome::Failure)
        .resource(format!("file/{}", r.id))
        .reason("integrity")
        .detail("severity", "high")
        .detail("dialog_id", r.dialog_id.to_string());
    match audit.record_alone(&event).await {
        Ok(_) => FilesError::Integrity,
        Err(e) => e.into(),
    }
}

/// A name is optional, at most 255 characters, without control characters or path
/// separators (it becomes a download's file name).
fn check_name(name: Option<&str>) -> Result<(), FilesError> {
    let Some(name) = name else { return Ok(()) };
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(FilesError::Invalid(format!("name: 1 to {MAX_NAME} characters")));
    }
    // Bidirectional overrides and other format characters could disguise an extension
    // ("photo\u{202E}gpj.exe" shows as "photoexe.jpg").
    let format =
        |c: char| matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}');
    if name.chars().any(|c| c.is_control() || format(c) || c == '/' || c == '\\') {
        return Err(FilesError::Invalid("name: no control or format characters, no path separators".into()));
    }
    Ok(())
}

/// Removes `<id>#<n>` staging files older than `cutoff` (Unix seconds) from the local
/// objects directory; returns how many.
async fn sweep_staging(dir: &std::path::Path, cutoff: i64) -> u64 {
    let mut removed = 0;
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else { return 0 };
    while let Ok(Some(entry)) = entries.next_entry().await {
        if !entry.file_name().to_string_lossy().contains('#') {
            continue;
        }
        let old = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .is_some_and(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX) < cutoff);
        if old && tokio::fs::remove_file(entry.path()).await.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Reads sealed segments from the object stream and hands back their plaintext, cut to
/// the asked range.
struct Decrypting {
    key: DataKey,
    id: Uuid,
    layout: Layout,
    /// The next segment to open, and the last one wanted.
    next: u64,
    to: u64,
    /// Plaintext bytes to drop from the front of the first segment.
    skip_first: u64,
    /// Plaintext bytes still to hand out.
    remaining: u64,
    /// Sealed bytes read ahead (ciphertext only: nothing to zeroize).
    buf: BytesMut,
    source: BoxStream<'static, object_store::Result<Bytes>>,
}

impl Decrypting {
    fn done(&self) -> bool {
        self.next > self.to
    }

    /// The next segment's plaintext (empty once done).
    async fn next_plain(&mut self) -> Result<Bytes, FilesError> {
        if self.done() {
            return Ok(Bytes::new());
        }
        let want = usize::try_from(self.layout.sealed_len(self.next)).map_err(|_| FilesError::Integrity)?;
        while self.buf.len() < want {
            match self.source.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk?),
                None => return Err(FilesError::Integrity),
            }
        }
        // Decrypted in place and handed on without a copy: the segment's buffer becomes
        // the body chunk (its header and tag sliced off).
        let mut sealed = self.buf.split_to(want);
        let last = self.next == self.layout.last();
        let plain_len = segments::open(&self.key, self.id, self.next, last, &mut sealed)?.len();
        let skip = usize::try_from(std::mem::take(&mut self.skip_first)).unwrap_or(usize::MAX).min(plain_len);
        let take = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(plain_len - skip);
        let start = segments::PLAIN_OFFSET + skip;
        let out = sealed.freeze().slice(start..start + take);
        self.remaining -= take as u64;
        self.next += 1;
        Ok(out)
    }
}
