//! Where sealed file objects live: a local directory or an S3 bucket, through `object_store`.
//!
//! Objects are named by the file's id alone. In S3 they sit under the `files/` prefix, so
//! one bucket may later hold backups beside them. Only sealed bytes ever reach either.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use uuid::Uuid;

use crate::FilesError;

/// Which store, from `[files]`.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A directory (created if missing).
    Local(PathBuf),
    /// An S3 bucket; credentials from the environment, web identity or the instance role.
    S3 { bucket: String, region: Option<String>, endpoint: Option<String>, allow_http: bool },
}

/// The object store of files.
#[derive(Debug, Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// The local directory, when the backend is one (the sweep also clears interrupted
    /// uploads' staging files there).
    local_dir: Option<PathBuf>,
    backend: &'static str,
}

impl Objects {
    /// Opens the backend. A local directory is created with owner-only permissions.
    pub fn open(backend: &Backend) -> Result<Self, FilesError> {
        match backend {
            Backend::Local(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| FilesError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
                restrict(dir);
                // fsync: an acknowledged upload survives power loss, as the database's commits do.
                let store = LocalFileSystem::new_with_prefix(dir)?.with_fsync(true);
                Ok(Self { store: Arc::new(store), local_dir: Some(dir.clone()), backend: "local" })
            }
            Backend::S3 { bucket, region, endpoint, allow_http } => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_allow_http(*allow_http);
                if let Some(region) = region {
                    b = b.with_region(region);
                }
                if let Some(endpoint) = endpoint {
                    b = b.with_endpoint(endpoint);
                }
                let s3 = b.build()?;
                Ok(Self { store: Arc::new(PrefixStore::new(s3, "files")), local_dir: None, backend: "s3" })
            }
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local_dir.as_deref()
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The object of a file.
    pub fn path(id: Uuid) -> Path {
        Path::from(id.to_string())
    }
}

/// Owner-only permissions on the objects directory (best effort; logged when refused).
fn restrict(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot restrict the files directory to its owner");
    }
}
