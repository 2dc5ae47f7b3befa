//! A power-loss simulator: every file has a live image and a durable image,
//! and so does every directory entry. `sync_data` copies a file's live image
//! to its durable one; `sync_dir` does the same for a directory's entries.
//! [`SimStorage::power_loss`] returns the storage as it would be found after
//! the power came back: only what was made durable, optionally with a torn
//! prefix of the last unsynced write.
//!
//! It also injects faults: a failing `fsync`, and a device capacity after
//! which growing a file fails with `StorageFull`.

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
}

impl State {
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
    /// write-back would leave them.
    pub fn power_loss(&self, tear_seed: Option<u64>) -> SimStorage {
        let st = self.state.lock();
        let mut inodes: HashMap<u64, Inode> = st
            .inodes
            .iter()
            .map(|(&n, i)| {
                (
                    n,
                    Inode {
                        live: i.durable.clone(),
                        durable: i.durable.clone(),
                    },
                )
            })
            .collect();
        if let Some(seed) = tear_seed.filter(|_| !st.unsynced_writes.is_empty()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let reached = rng.gen_range(0..st.unsynced_writes.len());
            for (i, w) in st.unsynced_writes.iter().enumerate().take(reached + 1) {
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
            st.durable_entries.values().copied().collect();
        inodes.retain(|n, _| reachable.contains(n));
        let new_state = State {
            inodes,
            next_inode: st.next_inode,
            live_entries: st.durable_entries.clone(),
            durable_entries: st.durable_entries.clone(),
            dirs: st.dirs.clone(),
            faults: SimFaults::default(),
            unsynced_writes: Vec::new(),
            fsyncs: 0,
        };
        SimStorage {
            state: Arc::new(Mutex::new(new_state)),
        }
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
        Ok(self.state.lock().inodes[&self.inode].live.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let st = self.state.lock();
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
        let old_len = st.inodes[&self.inode].live.len();
        st.check_growth(old_len, len as usize)?;
        st.inodes
            .get_mut(&self.inode)
            .expect("open inode exists")
            .live
            .resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        if st.faults.fail_fsyncs > 0 {
            st.faults.fail_fsyncs -= 1;
            return Err(io::Error::other(
                "Input/output error (simulated fsync failure)",
            ));
        }
        let inode = st.inodes.get_mut(&self.inode).expect("open inode exists");
        inode.durable.clone_from(&inode.live);
        let inode = self.inode;
        st.unsynced_writes.retain(|w| w.inode != inode);
        st.fsyncs += 1;
        Ok(())
    }

    fn map(&self) -> io::Result<Bytes> {
        Ok(Bytes::copy_from_slice(
            &self.state.lock().inodes[&self.inode].live,
        ))
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let st = self.state.lock();
        let inode = *st.live_entries.get(path).ok_or_else(|| not_found(path))?;
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            inode,
        }))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = self.state.lock();
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
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            inode,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        let inode = st
            .live_entries
            .remove(from)
            .ok_or_else(|| not_found(from))?;
        st.live_entries.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.live_entries
            .remove(path)
            .ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
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
        for a in dir.ancestors() {
            if !a.as_os_str().is_empty() {
                st.dirs.insert(a.to_path_buf());
            }
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
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
        st.live_entries.contains_key(path) || st.dirs.contains(path)
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
