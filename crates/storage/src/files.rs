//! Shared files: rows, SQL and the trait bodies both engines share (stamped by
//! [`impl_file_stores!`]). Metadata arrives and leaves sealed; this layer never sees a
//! file's name, type or content.

use crate::StoreError;
use crate::model::FileRecord;
use crate::rows::{from_millis, uuid};

#[derive(sqlx::FromRow)]
pub(crate) struct FileRow {
    id: String,
    dialog_id: String,
    uploader_id: String,
    data_key_id: String,
    size: i64,
    segment_size: i64,
    meta_sealed: Option<Vec<u8>>,
    object_key: String,
    created_at: i64,
    deleted_at: Option<i64>,
}

impl TryFrom<FileRow> for FileRecord {
    type Error = StoreError;
    fn try_from(r: FileRow) -> Result<Self, StoreError> {
        Ok(FileRecord {
            id: uuid(&r.id)?,
            dialog_id: uuid(&r.dialog_id)?,
            uploader_id: uuid(&r.uploader_id)?,
            data_key_id: uuid(&r.data_key_id)?,
            size: r.size,
            segment_size: r.segment_size,
            meta_sealed: r.meta_sealed,
            object_key: r.object_key,
            created_at: from_millis(r.created_at)?,
            deleted_at: r.deleted_at.map(from_millis).transpose()?,
        })
    }
}

/// SQL shared by both engines.
pub(crate) mod sql {
    /// The columns of a [`super::FileRow`].
    macro_rules! file_columns {
        () => {
            "SELECT id, dialog_id, uploader_id, data_key_id, size, segment_size, meta_sealed, object_key, \
             created_at, deleted_at FROM files "
        };
    }
    pub const FILE_BY_ID: &str = concat!(file_columns!(), "WHERE id = $1");
    /// Followed by one bound id per file, comma-separated, and `)`.
    pub const FILES_BY_IDS: &str = concat!(file_columns!(), "WHERE id IN (");
    pub const INSERT_FILE: &str = "INSERT INTO files (id, dialog_id, uploader_id, data_key_id, size, segment_size, \
         meta_sealed, object_key, created_at, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT DO NOTHING";
    pub const DELETE_FILE: &str =
        "UPDATE files SET meta_sealed = NULL, deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL";
}

macro_rules! impl_file_stores {
    ($store:ty, $tx:ty) => {
        #[async_trait::async_trait]
        impl $crate::FileStore for $store {
            async fn file_by_id(&self, id: uuid::Uuid) -> $crate::Result<Option<$crate::FileRecord>> {
                sqlx::query_as::<_, $crate::files::FileRow>($crate::files::sql::FILE_BY_ID)
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn files_by_ids(&self, ids: &[uuid::Uuid]) -> $crate::Result<Vec<$crate::FileRecord>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = sqlx::QueryBuilder::new($crate::files::sql::FILES_BY_IDS);
                let mut list = query.separated(", ");
                for id in ids {
                    list.push_bind(id.to_string());
                }
                list.push_unseparated(")");
                query
                    .build_query_as::<$crate::files::FileRow>()
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }
        }

        #[async_trait::async_trait]
        impl $crate::FileTx for $tx {
            async fn insert_file(&mut self, f: &$crate::FileRecord) -> $crate::Result<()> {
                let n = sqlx::query($crate::files::sql::INSERT_FILE)
                    .bind(f.id.to_string())
                    .bind(f.dialog_id.to_string())
                    .bind(f.uploader_id.to_string())
                    .bind(f.data_key_id.to_string())
                    .bind(f.size)
                    .bind(f.segment_size)
                    .bind(f.meta_sealed.as_deref())
                    .bind(&f.object_key)
                    .bind($crate::rows::millis(f.created_at))
                    .bind(f.deleted_at.map($crate::rows::millis))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                if n == 1 { Ok(()) } else { Err($crate::StoreError::Conflict("file id")) }
            }

            async fn delete_file(&mut self, id: uuid::Uuid, now: time::OffsetDateTime) -> $crate::Result<bool> {
                let n = sqlx::query($crate::files::sql::DELETE_FILE)
                    .bind(id.to_string())
                    .bind($crate::rows::millis(now))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }
        }
    };
}

pub(crate) use impl_file_stores;
