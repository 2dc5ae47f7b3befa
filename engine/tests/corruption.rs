//! Damaged WAL on real files: torn or garbage tails recover, damage in the
//! middle of the log refuses to open and names the file and offset.

mod common;

use common::{fs_config, get, put};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use walship_engine::{Engine, EngineError};

/// Segment file holding `lsn` (segments are named by start LSN; header 64 bytes).
fn locate(dir: &Path, lsn: u64) -> (PathBuf, u64) {
    let mut segs: Vec<(u64, PathBuf)> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name()?.to_str()?.to_string();
            let start = u64::from_str_radix(name.strip_suffix(".wal")?, 16).ok()?;
            Some((start, p))
        })
        .collect();
    segs.sort();
    let (start, path) = segs
        .into_iter()
        .rev()
        .find(|(s, _)| *s <= lsn)
        .expect("a segment holds the LSN");
    (path, 64 + lsn - start)
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

fn read(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = OpenOptions::new().read(true).open(path).unwrap();
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// Writes `n` keys; returns the end LSN of each write.
fn fill(dir: &Path, n: usize) -> Vec<u64> {
    let e = Engine::open(fs_config(dir)).unwrap();
    let lsns = (0..n)
        .map(|i| put(&e, &format!("k{i}"), &format!("value-{i}")))
        .collect();
    e.shutdown().unwrap();
    lsns
}

#[test]
fn zeroed_tail_is_treated_as_end_of_log() {
    let dir = tempfile::tempdir().unwrap();
    let lsns = fill(dir.path(), 10);
    let (path, off) = locate(dir.path(), lsns[8]);
    patch(&path, off, &vec![0u8; (lsns[9] - lsns[8]) as usize]);
    let e = Engine::open(fs_config(dir.path())).unwrap();
    assert_eq!(get(&e, "k8").as_deref(), Some("value-8"));
    assert_eq!(get(&e, "k9"), None);
    assert_eq!(e.end_lsn(), lsns[8]);
}

#[test]
fn garbage_tail_is_zeroed_and_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let lsns = fill(dir.path(), 10);
    let (path, off) = locate(dir.path(), lsns[9]);
    let garbage: Vec<u8> = (0..700u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 1)
        .collect();
    patch(&path, off, &garbage);
    let e = Engine::open(fs_config(dir.path())).unwrap();
    assert_eq!(e.recovery_info().torn_bytes, 700);
    assert_eq!(get(&e, "k9").as_deref(), Some("value-9"));
    assert!(
        read(&path, off, 700).iter().all(|&b| b == 0),
        "garbage zeroed"
    );
    put(&e, "after", "restart");
    e.shutdown().unwrap();
    let e = Engine::open(fs_config(dir.path())).unwrap();
    assert_eq!(get(&e, "after").as_deref(), Some("restart"));
    assert_eq!(e.len(), 11);
}

#[test]
fn truncated_header_at_tail_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let lsns = fill(dir.path(), 5);
    let (path, off) = locate(dir.path(), lsns[4]);
    // The first 5 bytes of a header, as if the write stopped there.
    patch(&path, off, &[40, 0, 0, 0, 0x7f]);
    let e = Engine::open(fs_config(dir.path())).unwrap();
    assert_eq!(e.len(), 5);
    assert_eq!(e.end_lsn(), lsns[4]);
}

#[test]
fn bad_crc_in_last_record_recovers_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let lsns = fill(dir.path(), 6);
    let (path, off) = locate(dir.path(), lsns[5] - 1);
    let b = read(&path, off, 1)[0];
    patch(&path, off, &[b ^ 0x40]);
    let e = Engine::open(fs_config(dir.path())).unwrap();
    assert_eq!(get(&e, "k5"), None);
    assert_eq!(get(&e, "k4").as_deref(), Some("value-4"));
}

#[test]
fn mid_log_bad_crc_refuses_to_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let lsns = fill(dir.path(), 6);
    // Damage the payload of the second record (starts at lsns[0]).
    let (path, off) = locate(dir.path(), lsns[1] - 2);
    let b = read(&path, off, 1)[0];
    patch(&path, off, &[b ^ 0x01]);
    let err = Engine::open(fs_config(dir.path()))
        .err()
        .expect("must refuse to open");
    match &err {
        EngineError::MidLogCorruption {
            file,
            offset,
            lsn,
            next_valid_lsn,
            ..
        } => {
            assert_eq!(file, &path);
            assert_eq!(*lsn, lsns[0]);
            assert_eq!(*offset, 64 + lsns[0]);
            assert_eq!(*next_valid_lsn, lsns[1]);
        }
        other => panic!("expected MidLogCorruption, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("offset"),
        "{msg}"
    );
    // Nothing was changed by the refused open.
    assert_eq!(read(&path, off, 1)[0], b ^ 0x01);
}

#[test]
fn zeroed_block_in_the_middle_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let lsns = fill(dir.path(), 6);
    let (path, off) = locate(dir.path(), lsns[1]);
    patch(&path, off, &vec![0u8; (lsns[2] - lsns[1]) as usize]);
    let err = Engine::open(fs_config(dir.path()))
        .err()
        .expect("must refuse");
    assert!(
        matches!(err, EngineError::MidLogCorruption { lsn, .. } if lsn == lsns[1]),
        "{err}"
    );
}

#[test]
fn missing_middle_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    // ~16 KiB segments: 300 writes of ~30 bytes fill several.
    fill(dir.path(), 1500);
    let mut segs: Vec<PathBuf> = fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    assert!(
        segs.len() >= 3,
        "test needs at least 3 segments, has {}",
        segs.len()
    );
    fs::remove_file(&segs[1]).unwrap();
    let err = Engine::open(fs_config(dir.path()))
        .err()
        .expect("must refuse");
    match err {
        EngineError::MissingSegment { expected, .. } => assert_eq!(expected, segs[1]),
        other => panic!("expected MissingSegment, got {other}"),
    }
}

/// The WAL the checkpoint's redo needs begins in a segment that is gone: the
/// error says which LSNs are missing and names the oldest segment present
/// (the missing file's name cannot be known).
#[test]
fn missing_segment_under_the_checkpoint_redo_point_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(fs_config(dir.path())).unwrap();
    for i in 0..600 {
        put(&e, &format!("k{i}"), &format!("value-{i}"));
    }
    let redo = e.checkpoint().unwrap().redo_lsn;
    for i in 0..1500 {
        put(&e, &format!("later{i}"), &format!("value-{i}"));
    }
    e.shutdown().unwrap();
    let (holding_redo, _) = locate(dir.path(), redo);
    fs::remove_file(&holding_redo).unwrap();
    let mut segs: Vec<PathBuf> = fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let oldest_left = segs.first().cloned().expect("later segments remain");
    match Engine::open(fs_config(dir.path()))
        .err()
        .expect("must refuse")
    {
        EngineError::WalStartsTooLate {
            oldest, needed_lsn, ..
        } => {
            assert_eq!(oldest, oldest_left);
            assert_eq!(needed_lsn, redo);
        }
        other => panic!("expected WalStartsTooLate, got {other}"),
    }
}

/// An old segment left behind below the checkpoint (its removal failed, or
/// an operator copied it back), with a gap after it: not needed, so it is
/// removed and the server opens, rather than asking for segments nothing
/// needs.
#[test]
fn a_stale_segment_below_the_checkpoint_is_removed_not_a_reason_to_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(fs_config(dir.path())).unwrap();
    for i in 0..1500 {
        put(&e, &format!("k{i}"), &format!("value-{i}"));
    }
    e.shutdown().unwrap();
    let mut segs: Vec<PathBuf> = fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "test needs 3 segments, has {}", segs.len());
    let first = fs::read(&segs[0]).unwrap();
    let e = Engine::open(fs_config(dir.path())).unwrap();
    put(&e, "after", "checkpoint");
    let redo = e.checkpoint().unwrap().redo_lsn;
    e.shutdown().unwrap();
    assert!(
        !segs[0].exists() && !segs[1].exists(),
        "removed by the checkpoint"
    );
    fs::write(&segs[0], &first).unwrap();
    let e = Engine::open(fs_config(dir.path())).unwrap();
    assert!(!segs[0].exists(), "the stale segment is removed");
    assert_eq!(e.recovery_info().from_lsn, redo);
    assert_eq!(get(&e, "k1499").as_deref(), Some("value-1499"));
    assert_eq!(get(&e, "after").as_deref(), Some("checkpoint"));
}

#[test]
fn damaged_segment_header_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let lsns = fill(dir.path(), 3);
    let (path, _) = locate(dir.path(), lsns[0]);
    patch(&path, 20, &[0xAA]);
    let err = Engine::open(fs_config(dir.path()))
        .err()
        .expect("must refuse");
    assert!(
        matches!(&err, EngineError::BadSegment { file, .. } if file == &path),
        "{err}"
    );
}

/// A blank header on the newest segment is what an activation cut short
/// would leave if headers were not made durable first; records behind one
/// are damage, and acknowledged: refuse, never remove the file.
#[test]
fn blank_header_on_a_segment_holding_records_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let lsns = fill(dir.path(), 3);
    let (path, _) = locate(dir.path(), lsns[2]);
    patch(&path, 0, &[0u8; 64]);
    let err = Engine::open(fs_config(dir.path()))
        .err()
        .expect("must refuse");
    assert!(
        matches!(&err, EngineError::BadSegment { file, reason }
            if file == &path && reason.contains("holds data")),
        "{err}"
    );
    assert!(path.exists(), "the segment must be left in place");
    // With its records zeroed too it held nothing: removed, and the log
    // starts afresh.
    let len = fs::metadata(&path).unwrap().len();
    patch(&path, 0, &vec![0u8; len as usize]);
    let e = Engine::open(fs_config(dir.path())).unwrap();
    assert_eq!(get(&e, "k0"), None);
}

#[test]
fn segment_of_another_cluster_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    fill(a.path(), 2);
    fill(b.path(), 2);
    let (seg_b, _) = locate(b.path(), 0);
    let (seg_a, _) = locate(a.path(), 0);
    fs::copy(&seg_b, &seg_a).unwrap();
    let err = Engine::open(fs_config(a.path()))
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("cluster"), "{err}");
}

#[test]
fn missing_control_file_with_data_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 2);
    fs::remove_file(dir.path().join("control")).unwrap();
    let err = Engine::open(fs_config(dir.path()))
        .err()
        .expect("must refuse");
    assert!(matches!(err, EngineError::BadControl { .. }), "{err}");
}
