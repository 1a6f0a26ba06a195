//! A fresh-eyes review of `export`, `explain` and `link` as an auditor and an
//! on-call operator use them, and of the state database's preview copy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::store::{Store, StoreError};

/// `Store::copy_to` (the copy `plan --workspace-moved` plans in, named after
/// `state.path`) gave SQLite's `VACUUM INTO` the path through
/// `to_string_lossy`: a name that is not UTF-8 became another name (its bytes
/// replaced by U+FFFD), so the copy, the whole state database, was written to
/// another file than the one created, locked and later removed, and left there.
/// It is refused by name, with nothing written.
#[cfg(unix)]
#[test]
fn a_copy_whose_path_is_not_utf8_is_refused_and_nothing_is_written() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let copy = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"state-\xff.db.moved-preview-7"));
    let error = store.copy_to(&copy).unwrap_err();
    assert!(matches!(error, StoreError::NotUtf8 { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("not a UTF-8 path"), "{message}");
    assert!(message.contains("nothing was written"), "{message}");
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_owned())
        .filter(|name| !name.starts_with(b"state.db"))
        .collect();
    names.sort();
    assert!(names.is_empty(), "{names:?}");
}
