//! The README's library section as a new user meets it: the dependency lines point at
//! this repository's crates, and every Rust example names only crates those lines give
//! (the examples themselves compile and run as doctests of `src/lib.rs`).

use std::path::Path;

const README: &str = include_str!("../README.md");

/// The `name = { path = "…" }` lines of the README's `[dependencies]` block.
fn readme_dependencies() -> Vec<(String, String)> {
    let start = README
        .find("```toml\n[dependencies]\n")
        .expect("the README has a [dependencies] block");
    let block = &README[start..];
    let block = &block[..block[8..].find("```").expect("closed") + 8];
    block
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(" = {")?;
            let path = rest.split_once("path = \"")?.1.split_once('"')?.0;
            Some((name.trim().to_owned(), path.to_owned()))
        })
        .collect()
}

/// The Rust code blocks of the README (any ```rust fence).
fn rust_blocks() -> Vec<&'static str> {
    let mut blocks = Vec::new();
    let mut rest = README;
    while let Some(at) = rest.find("```rust") {
        let body = &rest[at..];
        let body = &body[body.find('\n').expect("fence line") + 1..];
        let end = body.find("```").expect("closed block");
        blocks.push(&body[..end]);
        rest = &body[end + 3..];
    }
    blocks
}

#[test]
fn readme_dependencies_are_path_dependencies_on_this_repositorys_crates() {
    let deps = readme_dependencies();
    let names: Vec<&str> = deps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "vhdkit-format",
            "vhdkit-serve",
            "vhdkit-volume",
            "vhdkit-task"
        ]
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, path) in &deps {
        // The README's clone lies at ../vhdkit beside the user's project.
        let inside = path
            .strip_prefix("../vhdkit/")
            .unwrap_or_else(|| panic!("{name}: {path} is not in the clone"));
        let manifest = std::fs::read_to_string(root.join(inside).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{name}: {path}: {e}"));
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{path} is not the package {name}"
        );
    }
}

#[test]
fn readme_examples_name_only_crates_the_readme_says_to_depend_on() {
    let deps = readme_dependencies();
    let allowed: Vec<String> = deps.iter().map(|(n, _)| n.replace('-', "_")).collect();
    let blocks = rust_blocks();
    assert!(blocks.len() >= 3, "library, serve and volume examples");
    for block in blocks {
        // Lines starting with `#` are hidden test scaffolding (a temporary folder).
        for line in block.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for (at, _) in line.match_indices("vhdkit") {
                let word: String = line[at..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if line[at + word.len()..].starts_with("::") {
                    assert!(
                        allowed.contains(&word),
                        "the README example uses `{word}::`, which its [dependencies] do not give: {line}"
                    );
                }
            }
        }
    }
}
