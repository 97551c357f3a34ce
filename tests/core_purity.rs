//! The core must stay free of I/O: no async runtime, clock, socket, file or thread API in its modules.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "std::time",
    "std::net",
    "std::fs",
    "std::thread",
    "Instant::",
    "SystemTime",
];

fn check(path: &Path, offenders: &mut Vec<String>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read core dir") {
            check(&entry.expect("dir entry").path(), offenders);
        }
        return;
    }
    if path.extension().and_then(|e| e.to_str()) != Some("rs") {
        return;
    }
    let text = std::fs::read_to_string(path).expect("read source");
    for (n, line) in text.lines().enumerate() {
        for word in FORBIDDEN {
            if line.contains(word) {
                offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
}

#[test]
fn core_modules_import_no_io_clock_or_runtime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    for part in [
        "core",
        "types.rs",
        "message.rs",
        "ready.rs",
        "config.rs",
        "storage.rs",
        "error.rs",
    ] {
        check(&root.join(part), &mut offenders);
    }
    assert!(
        offenders.is_empty(),
        "I/O in the core:\n{}",
        offenders.join("\n")
    );
}
