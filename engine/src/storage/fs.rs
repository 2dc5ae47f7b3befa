//! Real files: positional I/O, `fdatasync`, `O_DIRECT | O_DSYNC` writes for
//! the WAL, and `memmap2` for read-only views.

use super::{Storage, StorageFile};
use bytes::Bytes;
use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

/// Alignment and size unit of direct writes: buffer address, file offset
/// and length are multiples of it. 4 KiB covers every logical block size
/// in use (512 and 4096 bytes) and is the page size.
pub const DIRECT_IO_BLOCK: u64 = 4096;

struct FsFile {
    file: File,
    /// A second descriptor of the same file, opened `O_DIRECT | O_DSYNC` at
    /// the first [`StorageFile::write_durable_at`]; `None` where the file
    /// system refuses direct I/O (tmpfs on older kernels), which falls back to
    /// `pwrite` + `fdatasync`.
    direct: OnceLock<Option<File>>,
    direct_state: Mutex<DirectState>,
}

/// What direct writes keep between calls (only the WAL flusher makes them).
#[derive(Default)]
struct DirectState {
    /// Scratch space, over-allocated by one block so that an aligned window
    /// of it can be taken without `unsafe` allocation.
    scratch: Vec<u8>,
    /// File offset of the block the last direct write ended in, and that
    /// block's bytes up to where the write ended: the head of the next
    /// write, which must rewrite the block whole. Empty when the last write
    /// ended on a block boundary or the file changed otherwise.
    tail_block: u64,
    tail: Vec<u8>,
    /// The file length last seen, so that most writes need no `fstat`.
    known_len: u64,
}

impl FsFile {
    fn new(file: File) -> FsFile {
        FsFile {
            file,
            direct: OnceLock::new(),
            direct_state: Mutex::new(DirectState::default()),
        }
    }

    fn direct(&self) -> Option<&File> {
        self.direct
            .get_or_init(|| {
                use std::os::fd::AsRawFd;
                // Reopening through /proc gives a descriptor of this very
                // inode, whatever the file has been renamed to since.
                let path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                match OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
                    .open(&path)
                {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::info!(
                            error = %e,
                            "direct I/O is not available here: WAL writes use pwrite and fdatasync"
                        );
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Forgets the cached tail block: the file was changed other than by a
    /// direct write.
    fn forget_tail(&self) {
        let mut st = self.direct_state.lock();
        st.tail.clear();
        st.known_len = 0;
    }
}

impl StorageFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.forget_tail();
        self.file.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.forget_tail();
        self.file.set_len(len)
    }

    fn write_durable_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        const B: u64 = DIRECT_IO_BLOCK;
        let mut st = self.direct_state.lock();
        let st = &mut *st;
        let start = offset / B * B;
        let end = offset + buf.len() as u64;
        let aligned_end = end.div_ceil(B) * B;
        if aligned_end > st.known_len {
            st.known_len = self.len()?;
            if aligned_end > st.known_len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "durable write of [{offset}, {end}) passes the end of the file ({})",
                        st.known_len
                    ),
                ));
            }
        }
        let Some(direct) = self.direct() else {
            self.file.write_all_at(buf, offset)?;
            return self.file.sync_data();
        };
        let total = (aligned_end - start) as usize;
        let head = (offset - start) as usize;
        if st.scratch.len() < total + B as usize {
            st.scratch = vec![0u8; total + B as usize];
        }
        let at = st.scratch.as_ptr().align_offset(B as usize);
        let window = &mut st.scratch[at..at + total];
        if head > 0 {
            if st.tail_block == start && st.tail.len() >= head {
                window[..head].copy_from_slice(&st.tail[..head]);
            } else {
                // First write into this block since the file was opened:
                // its head comes from the file (the page cache is coherent
                // with direct writes).
                self.file.read_exact_at(&mut window[..head], start)?;
            }
        }
        window[head..head + buf.len()].copy_from_slice(buf);
        window[head + buf.len()..].fill(0);
        st.tail.clear();
        if let Err(e) = direct.write_all_at(window, start) {
            st.known_len = 0;
            return Err(e);
        }
        if !end.is_multiple_of(B) {
            st.tail_block = end / B * B;
            let from = (st.tail_block - start) as usize;
            st.tail.extend_from_slice(&window[from..head + buf.len()]);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn map(&self) -> io::Result<Bytes> {
        if self.len()? == 0 {
            return Ok(Bytes::new());
        }
        // SAFETY: walship maps only files it owns, and only regions no writer
        // changes any more (sealed segments, finished checkpoints, or WAL bytes
        // below the written LSN, which are never rewritten while mapped).
        let map = unsafe { memmap2::Mmap::map(&self.file)? };
        Ok(Bytes::from_owner(map))
    }
}

impl Storage for FsStorage {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(FsFile::new(file)))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(FsFile::new(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(dir)?;
        // IMPORTANT: fsync every ancestor, or the new directories may vanish in a power loss.
        for ancestor in dir.ancestors().skip(1) {
            let ancestor = if ancestor.as_os_str().is_empty() {
                Path::new(".")
            } else {
                ancestor
            };
            self.sync_dir(ancestor)?;
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FILE_BYTES: usize = 256 << 10;

    /// A zero-filled file of FILE_BYTES in `dir`, as WAL segments are preallocated.
    fn zeroed(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("seg");
        let f = FsStorage.create(&path).unwrap();
        f.write_all_at(&vec![0u8; FILE_BYTES], 0).unwrap();
        f.sync_data().unwrap();
        path
    }

    /// Appends `lens` bytes at a time from `start` with `write_durable_at`,
    /// reopening the file before the writes `reopen` marks, and checks the
    /// file against the model after every write, through the open file and
    /// through a fresh descriptor.
    fn check_appends(dir: &Path, start: usize, writes: &[(usize, bool)]) {
        check_appends_with(dir, start, writes, &|p| FsStorage.open(p).unwrap());
    }

    fn check_appends_with(
        dir: &Path,
        start: usize,
        writes: &[(usize, bool)],
        open: &dyn Fn(&Path) -> Arc<dyn StorageFile>,
    ) {
        let path = zeroed(dir);
        let mut model = vec![0u8; FILE_BYTES];
        let mut file = open(&path);
        let mut at = start;
        for (i, &(len, reopen)) in writes.iter().enumerate() {
            if reopen {
                file = open(&path);
            }
            let data: Vec<u8> = (0..len).map(|j| (i * 31 + j % 251 + 1) as u8).collect();
            file.write_durable_at(&data, at as u64).unwrap();
            model[at..at + len].copy_from_slice(&data);
            at += len;
            let mut seen = vec![0u8; FILE_BYTES];
            file.read_exact_at(&mut seen, 0).unwrap();
            assert!(seen == model, "after write {i} through the open file");
            let fresh = std::fs::read(&path).unwrap();
            assert!(fresh == model, "after write {i} through a new descriptor");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn durable_appends_keep_every_byte(
            start in 0usize..9000,
            writes in proptest::collection::vec((1usize..9000, proptest::bool::weighted(0.2)), 1..20),
        ) {
            let dir = tempfile::tempdir().unwrap();
            check_appends(dir.path(), start, &writes);
        }
    }

    #[test]
    fn durable_appends_on_block_boundaries_and_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let b = DIRECT_IO_BLOCK as usize;
        // Ends exactly on a boundary, then a write starting on one; one
        // spanning several blocks; one inside a single block.
        check_appends(
            dir.path(),
            64,
            &[
                (b - 64, false),
                (b, false),
                (3 * b + 5, false),
                (7, true),
                (9, false),
            ],
        );
    }

    #[test]
    fn durable_writes_fall_back_where_direct_io_is_refused() {
        // As on a file system that refuses O_DIRECT: pwrite + fdatasync.
        let dir = tempfile::tempdir().unwrap();
        let without_direct = |p: &Path| -> Arc<dyn StorageFile> {
            let file = OpenOptions::new().read(true).write(true).open(p).unwrap();
            let f = FsFile::new(file);
            assert!(f.direct.set(None).is_ok());
            Arc::new(f)
        };
        check_appends_with(
            dir.path(),
            10,
            &[(100, false), (5000, false), (1, true)],
            &without_direct,
        );
    }

    #[test]
    fn durable_writes_work_on_tmpfs() {
        // tmpfs takes O_DIRECT on recent kernels and refuses it on older ones.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        check_appends(dir.path(), 10, &[(100, false), (5000, false), (1, true)]);
    }

    #[test]
    fn durable_write_past_the_end_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = zeroed(dir.path());
        let file = FsStorage.open(&path).unwrap();
        let err = file
            .write_durable_at(&[7u8; 10], FILE_BYTES as u64 - 5)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; FILE_BYTES]);
    }
}
