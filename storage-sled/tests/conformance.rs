//! The sled backend passes the shared conformance suite; "reopen" closes the database and opens it again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tickraft::storage::testing::{run_conformance, TestTypes};
use tickraft_storage_sled::SledStorage;

fn fresh_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn sled_storage_passes_the_conformance_suite() {
    let root = fresh_dir("conformance");
    let mut made = 0u64;
    run_conformance(
        || {
            made += 1;
            let dir = root.join(made.to_string());
            SledStorage::<TestTypes>::open(&dir)
                .unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
        },
        |storage| {
            let path = storage.path().to_path_buf();
            drop(storage);
            SledStorage::<TestTypes>::open(&path)
                .unwrap_or_else(|e| panic!("reopen {}: {e}", path.display()))
        },
    );
    let _ = std::fs::remove_dir_all(&root);
}
