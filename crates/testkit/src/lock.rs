//! Cross-process file locks so that parallel tests (threads or processes) do
//! not race when installing node/python dependencies.

use std::{
    fs::{File, OpenOptions},
    path::Path,
};

use anyhow::Context;

/// Holds an exclusive `flock` until dropped.
pub(crate) struct FileLock {
    file: File,
}

impl FileLock {
    /// Blocks until the exclusive lock on `path` is held (the file is created
    /// if missing).
    pub(crate) fn exclusive(path: &Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("open lock file {}", path.display()))?;
        file.lock()
            .with_context(|| format!("lock {}", path.display()))?;
        Ok(Self { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}
