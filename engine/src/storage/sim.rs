//! A power-loss simulator: every file has a live image and a durable image,
//! and so does every directory entry. `sync_data` copies a file's live image
//! to its durable one; `sync_dir` does the same for a directory's entries.
//! [`SimStorage::power_loss`] returns the storage as it would be found after
//! the power came back: only what was made durable, optionally with a torn
//! prefix of the last unsynced write.
//!
//! It also injects faults: a failing `fsync`, and a device capacity after
//! which growing a file fails with `StorageFull`.
//!
//! A real process can run on it too (`walship server --simulate-power-loss`):
//! [`SimStorage::load_dir`] reads a real directory tree in as durable
//! content, [`SimStorage::power_off`] freezes the device (every later
//! operation fails, so the engine poisons itself and acknowledges nothing
//! more) and returns what survives, and [`SimStorage::write_to_dir`] puts
//! that image back on the real disk for the next start.

use super::{Storage, StorageFile};
use bytes::Bytes;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Fault switches of a [`SimStorage`].
#[derive(Debug, Default, Clone)]
pub struct SimFaults {
    /// The next `n` calls to `sync_data` fail with an I/O error.
    pub fail_fsyncs: u32,
    /// Total bytes all files may occupy; growing past it fails with `StorageFull`.
    pub capacity_bytes: Option<u64>,
}

#[derive(Default, Clone)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// The live image changed other than through a recorded write (a
    /// truncation, a corruption): the next `sync_data` copies it whole.
    /// Otherwise it copies only the ranges of the recorded unsynced writes.
    needs_full_sync: bool,
}

struct PendingWrite {
    inode: u64,
    offset: u64,
    data: Vec<u8>,
}

#[derive(Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    live_entries: BTreeMap<PathBuf, u64>,
    durable_entries: BTreeMap<PathBuf, u64>,
    dirs: std::collections::BTreeSet<PathBuf>,
    faults: SimFaults,
    /// Writes not yet covered by a `sync_data` of their file, oldest first.
    unsynced_writes: Vec<PendingWrite>,
    fsyncs: u64,
    /// Every path that was ever an entry (loaded, created, renamed to): what
    /// [`SimStorage::write_to_dir`] may remove from a real directory.
    known_paths: std::collections::BTreeSet<PathBuf>,
    /// Set by [`SimStorage::power_off`]: every operation fails from then on.
    powered_off: bool,
}

impl State {
    fn check_power(&self) -> io::Result<()> {
        if self.powered_off {
            return Err(io::Error::other(
                "Input/output error (simulated power loss: the device is off)",
            ));
        }
        Ok(())
    }

    /// The device as found after a power loss (see [`SimStorage::power_loss`]).
    fn durable_image(&self, tear_seed: Option<u64>) -> State {
        let mut inodes: HashMap<u64, Inode> = self
            .inodes
            .iter()
            .map(|(&n, i)| {
                (
                    n,
                    Inode {
                        live: i.durable.clone(),
                        durable: i.durable.clone(),
                        needs_full_sync: false,
                    },
                )
            })
            .collect();
        if let Some(seed) = tear_seed.filter(|_| !self.unsynced_writes.is_empty()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let reached = rng.gen_range(0..self.unsynced_writes.len());
            for (i, w) in self.unsynced_writes.iter().enumerate().take(reached + 1) {
                let keep = if i == reached {
                    rng.gen_range(0..=w.data.len())
                } else {
                    w.data.len()
                };
                if let Some(inode) = inodes.get_mut(&w.inode) {
                    let off = w.offset as usize;
                    let end = off + keep;
                    if inode.live.len() < end {
                        inode.live.resize(end, 0);
                    }
                    inode.live[off..end].copy_from_slice(&w.data[..keep]);
                    inode.durable.clone_from(&inode.live);
                }
            }
        }
        let reachable: std::collections::HashSet<u64> =
            self.durable_entries.values().copied().collect();
        inodes.retain(|n, _| reachable.contains(n));
        State {
            inodes,
            next_inode: self.next_inode,
            live_entries: self.durable_entries.clone(),
            durable_entries: self.durable_entries.clone(),
            dirs: self.dirs.clone(),
            faults: SimFaults::default(),
            unsynced_writes: Vec::new(),
            fsyncs: 0,
            known_paths: self.known_paths.clone(),
            powered_off: false,
        }
    }

    fn used_bytes(&self) -> u64 {
        self.inodes.values().map(|i| i.live.len() as u64).sum()
    }

    fn check_growth(&self, old_len: usize, new_len: usize) -> io::Result<()> {
        if new_len <= old_len {
            return Ok(());
        }
        if let Some(cap) = self.faults.capacity_bytes {
            if self.used_bytes() + (new_len - old_len) as u64 > cap {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "No space left on device (simulated)",
                ));
            }
        }
        Ok(())
    }
}

/// What [`SimStorage::write_to_dir`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutStats {
    pub files_written: u64,
    pub files_removed: u64,
    pub bytes_written: u64,
}

/// The in-memory power-loss simulator. Cloning shares the same state.
#[derive(Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

struct SimFile {
    state: Arc<Mutex<State>>,
    inode: u64,
}

impl SimStorage {
    /// An empty simulated device.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes the fault switches.
    pub fn set_faults(&self, faults: SimFaults) {
        self.state.lock().faults = faults;
    }

    /// Number of successful `sync_data` calls so far.
    pub fn fsync_count(&self) -> u64 {
        self.state.lock().fsyncs
    }

    /// Bytes occupied by all live files.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().used_bytes()
    }

    /// The device as found after a power loss: durable images only. With
    /// `tear_seed`, the unsynced writes reached the medium in order up to a
    /// random point, the last of them torn at a random byte, as an interrupted
    /// write-back would leave them. This device keeps running.
    pub fn power_loss(&self, tear_seed: Option<u64>) -> SimStorage {
        SimStorage::from_state(self.state.lock().durable_image(tear_seed))
    }

    /// Cuts the power: atomically (under the one lock every operation takes)
    /// freezes this device, so every later operation fails with an I/O error
    /// (`sync_data` included: nothing written after this instant can ever be
    /// reported durable), and returns the image a power loss leaves, as
    /// [`SimStorage::power_loss`] does. Calling it again returns the same
    /// durable content.
    pub fn power_off(&self, tear_seed: Option<u64>) -> SimStorage {
        let mut st = self.state.lock();
        st.powered_off = true;
        SimStorage::from_state(st.durable_image(tear_seed))
    }

    /// Whether [`SimStorage::power_off`] was called.
    pub fn is_powered_off(&self) -> bool {
        self.state.lock().powered_off
    }

    fn from_state(state: State) -> SimStorage {
        SimStorage {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A device holding every regular file under the real directory `dir`
    /// (recursively) as durable content, at the same paths (`dir` joined with
    /// the relative path, so an engine configured with `dir` finds its
    /// files). Entries for which `skip` returns true (their path as stored,
    /// under `dir`) are left out, with everything below them: files some
    /// other component keeps on the real disk. Symbolic links are refused.
    pub fn load_dir(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> io::Result<SimStorage> {
        let mut st = State::default();
        for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            st.dirs.insert(ancestor.to_path_buf());
        }
        let mut pending = vec![dir.to_path_buf()];
        while let Some(current) = pending.pop() {
            for entry in std::fs::read_dir(&current)? {
                let entry = entry?;
                let path = current.join(entry.file_name());
                if skip(&path) {
                    continue;
                }
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    st.dirs.insert(path.clone());
                    pending.push(path);
                } else if kind.is_file() {
                    let bytes = std::fs::read(&path)?;
                    let inode = st.next_inode;
                    st.next_inode += 1;
                    st.inodes.insert(
                        inode,
                        Inode {
                            live: bytes.clone(),
                            durable: bytes,
                            needs_full_sync: false,
                        },
                    );
                    st.live_entries.insert(path.clone(), inode);
                    st.durable_entries.insert(path.clone(), inode);
                    st.known_paths.insert(path);
                } else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{}: not a regular file or directory; the simulator cannot load it",
                            path.display()
                        ),
                    ));
                }
            }
        }
        Ok(SimStorage::from_state(st))
    }

    /// Writes this device's *durable* image of everything under `dir` to the
    /// real directory `dir`: every durable file is written whole (created or
    /// truncated), every real file the device ever knew (loaded or created)
    /// that is not in the durable image is removed, and files it never knew
    /// are left alone. Every written file and every directory touched is
    /// fsynced before it returns. Meant for the image [`SimStorage::power_off`]
    /// returns, so the next start of a real process finds what survived.
    pub fn write_to_dir(&self, dir: &Path) -> io::Result<WriteOutStats> {
        let st = self.state.lock();
        let mut stats = WriteOutStats::default();
        let mut touched_dirs: std::collections::BTreeSet<PathBuf> =
            std::collections::BTreeSet::new();
        for d in st.dirs.iter().filter(|d| d.starts_with(dir)) {
            std::fs::create_dir_all(d)?;
            touched_dirs.insert(d.clone());
        }
        for path in st.known_paths.iter().filter(|p| p.starts_with(dir)) {
            if st.durable_entries.contains_key(path) {
                continue;
            }
            match std::fs::remove_file(path) {
                Ok(()) => {
                    stats.files_removed += 1;
                    touched_dirs.insert(super::parent_dir(path));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        for (path, inode) in st
            .durable_entries
            .iter()
            .filter(|(p, _)| p.starts_with(dir))
        {
            let parent = super::parent_dir(path);
            std::fs::create_dir_all(&parent)?;
            let bytes = &st.inodes[inode].durable;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?;
            std::io::Write::write_all(&mut file, bytes)?;
            // IMPORTANT: fsync each file, or the image may itself be lost.
            file.sync_all()?;
            stats.files_written += 1;
            stats.bytes_written += bytes.len() as u64;
            touched_dirs.insert(parent);
        }
        // IMPORTANT: fsync the directories, or created and removed entries may not stick.
        for d in &touched_dirs {
            std::fs::File::open(d)?.sync_all()?;
        }
        Ok(stats)
    }

    /// Flips bits in a file's live and durable image, as media corruption would.
    pub fn corrupt(&self, path: &Path, offset: u64, xor: u8) -> io::Result<()> {
        let mut st = self.state.lock();
        let n = *st.live_entries.get(path).ok_or_else(|| not_found(path))?;
        let inode = st.inodes.get_mut(&n).expect("inode of a live entry");
        let off = offset as usize;
        if off >= inode.live.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset past end",
            ));
        }
        inode.live[off] ^= xor;
        inode.needs_full_sync = true;
        if off < inode.durable.len() {
            inode.durable[off] ^= xor;
        }
        Ok(())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file (simulated)", path.display()),
    )
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        let st = self.state.lock();
        st.check_power()?;
        Ok(st.inodes[&self.inode].live.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let st = self.state.lock();
        st.check_power()?;
        let live = &st.inodes[&self.inode].live;
        let off = offset as usize;
        let end = off
            .checked_add(buf.len())
            .ok_or_else(|| io::Error::other("overflow"))?;
        if end > live.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end of file (simulated)",
            ));
        }
        buf.copy_from_slice(&live[off..end]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_power()?;
        let old_len = st.inodes[&self.inode].live.len();
        let end = offset as usize + buf.len();
        st.check_growth(old_len, end)?;
        let inode = st.inodes.get_mut(&self.inode).expect("open inode exists");
        if inode.live.len() < end {
            inode.live.resize(end, 0);
        }
        inode.live[offset as usize..end].copy_from_slice(buf);
        st.unsynced_writes.push(PendingWrite {
            inode: self.inode,
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_power()?;
        let old_len = st.inodes[&self.inode].live.len();
        st.check_growth(old_len, len as usize)?;
        let inode = st.inodes.get_mut(&self.inode).expect("open inode exists");
        if (len as usize) < old_len {
            // Bytes cut here and grown back later read as zeros, which the
            // recorded writes alone would not reproduce in the durable image.
            inode.needs_full_sync = true;
        }
        inode.live.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_power()?;
        if st.faults.fail_fsyncs > 0 {
            st.faults.fail_fsyncs -= 1;
            return Err(io::Error::other(
                "Input/output error (simulated fsync failure)",
            ));
        }
        let n = self.inode;
        let State {
            inodes,
            unsynced_writes,
            ..
        } = &mut *st;
        let inode = inodes.get_mut(&n).expect("open inode exists");
        if inode.needs_full_sync {
            inode.durable.clone_from(&inode.live);
            inode.needs_full_sync = false;
        } else {
            // Every byte where live and durable differ was changed by a
            // recorded write (or lies past the durable length): copying
            // those ranges makes durable equal to live without copying the
            // whole file on every fsync.
            let len = inode.live.len();
            inode.durable.resize(len, 0);
            for w in unsynced_writes.iter().filter(|w| w.inode == n) {
                let start = (w.offset as usize).min(len);
                let end = (w.offset as usize + w.data.len()).min(len);
                inode.durable[start..end].copy_from_slice(&inode.live[start..end]);
            }
        }
        debug_assert!(inode.durable == inode.live);
        unsynced_writes.retain(|w| w.inode != n);
        st.fsyncs += 1;
        Ok(())
    }

    fn map(&self) -> io::Result<Bytes> {
        let st = self.state.lock();
        st.check_power()?;
        Ok(Bytes::copy_from_slice(&st.inodes[&self.inode].live))
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let st = self.state.lock();
        st.check_power()?;
        let inode = *st.live_entries.get(path).ok_or_else(|| not_found(path))?;
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            inode,
        }))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = self.state.lock();
        st.check_power()?;
        if st.live_entries.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let inode = st.next_inode;
        st.next_inode += 1;
        st.inodes.insert(inode, Inode::default());
        st.live_entries.insert(path.to_path_buf(), inode);
        st.known_paths.insert(path.to_path_buf());
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            inode,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_power()?;
        let inode = st
            .live_entries
            .remove(from)
            .ok_or_else(|| not_found(from))?;
        st.live_entries.insert(to.to_path_buf(), inode);
        st.known_paths.insert(to.to_path_buf());
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_power()?;
        st.live_entries
            .remove(path)
            .ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        st.check_power()?;
        let mut names: Vec<String> = st
            .live_entries
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.extend(
            st.dirs
                .iter()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
        );
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_power()?;
        for a in dir.ancestors() {
            if !a.as_os_str().is_empty() {
                st.dirs.insert(a.to_path_buf());
            }
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_power()?;
        let live: Vec<(PathBuf, u64)> = st
            .live_entries
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        st.durable_entries.retain(|p, _| p.parent() != Some(dir));
        st.durable_entries.extend(live);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.state.lock();
        // A device without power answers nothing: nothing exists.
        !st.powered_off && (st.live_entries.contains_key(path) || st.dirs.contains(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_data_and_entries_vanish_in_power_loss() {
        let s = SimStorage::new();
        let d = Path::new("/d");
        s.create_dir_all(d).unwrap();
        let f = s.create(&d.join("a")).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        // Entry never fsynced: the file is gone after power loss.
        assert!(!s.power_loss(None).exists(&d.join("a")));
        s.sync_dir(d).unwrap();
        f.write_all_at(b" world", 5).unwrap();
        let after = s.power_loss(None);
        let mut buf = vec![0; 5];
        after
            .open(&d.join("a"))
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(after.open(&d.join("a")).unwrap().len().unwrap(), 5);
    }

    #[test]
    fn torn_write_keeps_a_prefix() {
        let s = SimStorage::new();
        let d = Path::new("/d");
        let f = s.create(&d.join("a")).unwrap();
        s.sync_dir(d).unwrap();
        f.write_all_at(&[7u8; 100], 0).unwrap();
        let after = s.power_loss(Some(3));
        let len = after.open(&d.join("a")).unwrap().len().unwrap();
        assert!(len <= 100);
        let mut buf = vec![0; len as usize];
        after
            .open(&d.join("a"))
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        assert!(buf.iter().all(|&b| b == 7));
    }

    #[test]
    fn capacity_refuses_growth_and_changes_nothing() {
        let s = SimStorage::new();
        s.set_faults(SimFaults {
            capacity_bytes: Some(10),
            ..Default::default()
        });
        let f = s.create(Path::new("/a")).unwrap();
        f.write_all_at(b"12345678", 0).unwrap();
        let err = f.write_all_at(b"abcdef", 8).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(f.len().unwrap(), 8);
        // Overwriting inside the file needs no space.
        f.write_all_at(b"ab", 0).unwrap();
    }

    #[test]
    fn failed_fsync_is_reported() {
        let s = SimStorage::new();
        let f = s.create(Path::new("/a")).unwrap();
        s.set_faults(SimFaults {
            fail_fsyncs: 1,
            ..Default::default()
        });
        assert!(f.sync_data().is_err());
        assert!(f.sync_data().is_ok());
    }
}
