//! The module layering `lib.rs` describes holds: every `crate::module` a module's code
//! names is below it in [`ORDER`], so no module imports one that imports it back.

use std::collections::BTreeSet;
use std::path::Path;

/// Top to bottom; a module may use only modules after it. Modules on one line are peers
/// that do not use each other.
const ORDER: &[&[&str]] = &[
    &["main", "doctor"],
    &["cli"],
    &["server"],
    &["config", "admin", "backup"],
    &["api"],
    &["cluster"],
    &["http_server"],
    &["sessions"],
    &["browser"],
    &["inspect"],
    &["cdp"],
    &["files"],
    &["store"],
    &["model", "netns", "secrets", "metrics", "fault"],
];

fn rank(module: &str) -> usize {
    ORDER
        .iter()
        .position(|level| level.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is not in ORDER"))
}

/// The `crate::x` names in the code (not comments) of `path`, a file or a folder.
fn uses(path: &Path, found: &mut BTreeSet<String>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            uses(&entry.path(), found);
        }
        return;
    }
    let text = std::fs::read_to_string(path).unwrap();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
}

#[test]
fn modules_depend_only_on_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let path = entry.path();
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        if module == "lib" {
            continue;
        }
        let mut found = BTreeSet::new();
        uses(&path, &mut found);
        for used in found {
            if used != module && rank(&used) <= rank(&module) {
                wrong.push(format!("{module} uses {used}"));
            }
        }
    }
    assert!(wrong.is_empty(), "against the layering: {wrong:?}");
}
