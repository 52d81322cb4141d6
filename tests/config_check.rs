//! `tether check -c FILE` end to end, on the real binary: the annotated example and the demo
//! config pass; every `conf/bad/*.toml` fails with exit code 1 and the errors its
//! `# expect: <substring>` header lines promise (key path, value, line and message).
//!
//! Owns: the contract between `conf/` and the config validator as an operator sees it. Must not
//! touch: the network (`check` binds nothing).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn check(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("check")
        .arg("-c")
        .arg(path)
        .output()
        .expect("run tether check")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_valid(path: &Path) {
    let out = check(path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} should be valid; stderr:\n{}",
        path.display(),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("configuration ok"),
        "stdout: {}",
        text(&out.stdout)
    );
}

/// The `# expect: ...` lines at the top of a bad file.
fn expectations(path: &Path) -> Vec<String> {
    let body = std::fs::read_to_string(path).expect("read bad config");
    body.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# expect:"))
        .map(|e| e.trim().to_owned())
        .collect()
}

/// Whether `s` contains `line N` for some number N.
fn has_line_number(s: &str) -> bool {
    s.match_indices("line ").any(|(i, m)| {
        s[i + m.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

#[test]
fn annotated_example_is_valid() {
    assert_valid(&repo("conf/tether.toml"));
}

#[test]
fn demo_config_is_valid() {
    assert_valid(&repo("conf/demo.toml"));
}

#[test]
fn every_bad_config_fails_with_its_expected_errors() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("conf/bad"))
        .expect("conf/bad")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for required in [
        "unknown_key",
        "missing_pool",
        "duplicate_backend",
        "addr_without_port",
        "weight_zero",
        "duration_without_unit",
        "admin_off_loopback",
        "unreadable_secret",
        "many_errors",
        "rate_limit_unknown",
        "rate_limit_zero",
        "redis_store_without_redis",
        "on_store_error_local_store",
    ] {
        assert!(
            files
                .iter()
                .any(|f| f.file_stem().is_some_and(|s| s == required)),
            "conf/bad/{required}.toml is missing"
        );
    }

    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let expects = expectations(file);
        if expects.is_empty() {
            failures.push(format!("{name}: no `# expect:` line at the top"));
            continue;
        }
        let out = check(file);
        let stderr = text(&out.stderr);
        if out.status.code() != Some(1) {
            failures.push(format!(
                "{name}: exit code {:?}, want 1; stdout: {}",
                out.status.code(),
                text(&out.stdout)
            ));
        }
        for e in &expects {
            if !stderr.contains(e.as_str()) {
                failures.push(format!("{name}: stderr lacks {e:?}; stderr:\n{stderr}"));
            }
        }
        if !has_line_number(&stderr) {
            failures.push(format!("{name}: no `line N` in stderr:\n{stderr}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn many_errors_reports_all_three_in_file_order() {
    let file = repo("conf/bad/many_errors.toml");
    let expects = expectations(&file);
    assert_eq!(
        expects.len(),
        3,
        "many_errors.toml should promise three errors"
    );
    let stderr = text(&check(&file).stderr);
    let positions: Vec<usize> = expects
        .iter()
        .map(|e| {
            stderr
                .find(e.as_str())
                .unwrap_or_else(|| panic!("missing {e:?} in:\n{stderr}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "errors not in file order:\n{stderr}"
    );
}

#[test]
fn unreadable_config_file_fails() {
    let out = check(Path::new("/nonexistent/tether/tether.toml"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/tether/tether.toml"),
        "{stderr}"
    );
}

/// Relative paths in the file resolve against the file's directory, not the process's.
#[test]
fn relative_secret_file_resolves_against_the_config_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("affinity.key"), "0123456789abcdef0123\n").expect("write");
    let config = dir.path().join("tether.toml");
    std::fs::write(
        &config,
        r#"
[server]
listen = ["127.0.0.1:8080"]
[affinity]
secret_file = "affinity.key"
[[route]]
pool = "shop"
[pool.shop]
policy = "cookie"
[[pool.shop.backend]]
id = "shop-1"
addr = "10.0.0.21:8080"
"#,
    )
    .expect("write");
    assert_valid(&config);

    std::fs::remove_file(dir.path().join("affinity.key")).expect("remove");
    let out = check(&config);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let expected = dir.path().join("affinity.key");
    assert!(
        stderr.contains(&format!("cannot read {}", expected.display())),
        "{stderr}"
    );
}

/// `server.engine` and `TETHER_ENGINE` (DESIGN.md §20): accepted, with a deprecation warning
/// that names the key, and nothing else changes; a typo in the value is still an error.
#[test]
fn the_engine_setting_is_accepted_with_a_deprecation_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.toml");
    let base = "[[route]]\npool = \"p\"\n[pool.p]\npolicy = \"round_robin\"\n[[pool.p.backend]]\nid = \"b\"\naddr = \"127.0.0.1:9\"\n";
    std::fs::write(
        &path,
        format!("[server]\nlisten = [\"127.0.0.1:0\"]\nengine = \"pingora\"\n{base}"),
    )
    .unwrap();
    let out = check(&path);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("server.engine") && err.contains("deprecated"),
        "stderr: {err}"
    );
    std::fs::write(
        &path,
        format!("[server]\nlisten = [\"127.0.0.1:0\"]\nengine = \"pingroa\"\n{base}"),
    )
    .unwrap();
    assert_eq!(check(&path).status.code(), Some(1));
    std::fs::write(
        &path,
        format!("[server]\nlisten = [\"127.0.0.1:0\"]\n{base}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("check")
        .arg("-c")
        .arg(&path)
        .env("TETHER_ENGINE", "pingora")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("TETHER_ENGINE") && err.contains("deprecated"),
        "stderr: {err}"
    );
}
