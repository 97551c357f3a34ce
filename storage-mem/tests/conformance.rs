//! The in-memory backend passes the shared conformance suite; "reopen" is a crash back to the synced state.

use tickraft::storage::testing::{run_conformance, TestTypes};
use tickraft_storage_mem::MemStorage;

#[test]
fn mem_storage_passes_the_conformance_suite() {
    run_conformance(MemStorage::<TestTypes>::new, |mut storage| {
        storage.crash();
        storage
    });
}
