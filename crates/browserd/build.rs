//! Names the commit a binary was built from, for `browserd --version`: `git rev-parse` of
//! the checkout, or `BROWSERD_COMMIT` from the environment when building outside one (a
//! source tarball), else "unknown".

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=BROWSERD_COMMIT");
    let commit = std::env::var("BROWSERD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BROWSERD_COMMIT={commit}");
    // Built again when HEAD moves (a commit, a checkout), not on every file change. Only
    // files that exist: cargo takes a missing one as changed, and would run this (and
    // rebuild browserd) on every build.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) {
        let head = git(&["symbolic-ref", "-q", "HEAD"]).map(|r| dir.join(r));
        for file in [Some(dir.join("HEAD")), Some(dir.join("packed-refs")), head]
            .into_iter()
            .flatten()
            .filter(|f| f.exists())
        {
            println!("cargo:rerun-if-changed={}", file.display());
        }
    }
}
