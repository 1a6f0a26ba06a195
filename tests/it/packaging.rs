//! The packaging files against the manifest: what no Docker engine here can build
//! is at least kept in step with `Cargo.toml` by reading.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// The names of the `[[kind]]` targets `Cargo.toml` declares.
fn targets(manifest: &str, kind: &str) -> Vec<String> {
    let header = format!("[[{kind}]]");
    let mut names = Vec::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
        } else if inside && let Some(value) = line.strip_prefix("name") {
            let name = value.trim_start().trim_start_matches('=').trim();
            names.push(name.trim_matches('"').to_owned());
        }
    }
    names
}

/// The Dockerfile's dependency layer builds with stubs for every target; a target
/// the manifest names and the stubs lack fails the first `cargo build` of the image.
#[test]
fn the_dockerfile_stubs_every_target_the_manifest_declares() {
    let manifest = read("Cargo.toml");
    let dockerfile = read("Dockerfile");
    let benches = targets(&manifest, "bench");
    assert!(benches.contains(&"e2e".to_owned()), "{benches:?}");
    for bench in benches {
        assert!(
            dockerfile.contains(&format!("> benches/{bench}.rs")),
            "the Dockerfile has no stub for bench {bench}"
        );
    }
    for test in targets(&manifest, "test") {
        assert!(
            dockerfile.contains(&format!("tests/{test}/main.rs")),
            "the Dockerfile has no stub for test {test}"
        );
    }
    assert!(dockerfile.contains("src/main.rs") && dockerfile.contains("src/lib.rs"));
}
