//! The data dir: created private (0700), refused when others can get in.
//!
//! It holds the SQLite database, the TLS key and (later) keys and objects, so a data dir
//! that group or others can read or write is refused with the command that fixes it.

use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data dir {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("data dir {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "data dir {path} is open to other users (mode {mode:03o}); it holds PHI keys and records: \
         fix with `chmod 700 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("data dir {path} is not writable: {source}")]
    NotWritable { path: PathBuf, source: std::io::Error },
}

/// Creates the data dir with mode 0700 if missing, then checks mode and writability.
pub fn prepare(path: &Path) -> Result<(), DataDirError> {
    let create = |source| DataDirError::Create { path: path.to_path_buf(), source };
    match fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => return Err(DataDirError::NotADirectory { path: path.to_path_buf() }),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(DataDirError::TooOpen { path: path.to_path_buf(), mode });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(create)?;
            // `mode` is filtered by the umask; make the leaf exactly 0700.
            fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(create)?;
        }
        Err(e) => return Err(create(e)),
    }
    let probe = path.join(".ward-write-check");
    fs::write(&probe, b"ok")
        .and_then(|()| fs::remove_file(&probe))
        .map_err(|source| DataDirError::NotWritable { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_and_refuses_open_dirs() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("a/b/data");
        prepare(&dir).expect("created");
        assert_eq!(fs::metadata(&dir).expect("meta").permissions().mode() & 0o777, 0o700);
        prepare(&dir).expect("reused");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        let e = prepare(&dir).expect_err("too open");
        assert!(e.to_string().contains("chmod 700"), "{e}");
        let file = root.path().join("file");
        fs::write(&file, "x").expect("write");
        assert!(matches!(prepare(&file), Err(DataDirError::NotADirectory { .. })));
        assert!(matches!(prepare(&file.join("sub")), Err(DataDirError::Create { .. })));
    }
}
