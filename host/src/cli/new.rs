//! `eventhost new NAME --lang rust|python|javascript`: a plugin project that builds and passes
//! its own tests as it stands, from templates embedded in the binary (`host/templates`).
//!
//! Every language gets the same plugin (stock on hand per SKU in state, a `stock.low` alert
//! with a deterministic id), the same JSONL fixtures with their expectations files, a
//! `build.sh` and a README; Rust also a harness test. The project is written into a hidden
//! folder beside the destination and renamed into place: an error leaves nothing behind.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use eventhost_domain::name::name_problem;

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name (lowercase letters, digits, `-` and `_`, starting with a letter):
    /// its name in `describe`, its folder's and its `.wasm` file's.
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    lang: Lang,
    /// The folder to create (it must not exist, or be empty) [default: ./NAME]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Rust only: the eventhost checkout whose `sdk/rust` and `sdk/harness` the crate
    /// depends on by path [default: the checkout this binary was built from]
    #[arg(long, value_name = "DIR")]
    repo: Option<PathBuf>,
    /// Shadows the global `--database-url`, which `new` has no use for: hidden from its
    /// help (the command line refuses it when given).
    #[arg(long, hide = true)]
    database_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    #[value(alias = "js")]
    Javascript,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Javascript => "JavaScript",
        })
    }
}

/// One file of a template: where it goes in the project, and its text with placeholders.
struct File {
    path: &'static str,
    text: &'static str,
}

macro_rules! file {
    ($path:literal, $source:literal) => {
        File {
            path: $path,
            text: include_str!(concat!("../../templates/", $source)),
        }
    };
}

/// What every language's project holds.
const COMMON: &[File] = &[
    file!("README.md", "common/README.md"),
    file!("events.jsonl", "common/events.jsonl"),
    file!("expect.json", "common/expect.json"),
    file!("bad.jsonl", "common/bad.jsonl"),
    file!("bad.expect.json", "common/bad.expect.json"),
];

const RUST: &[File] = &[
    file!("Cargo.toml", "rust/Cargo.toml"),
    file!("src/lib.rs", "rust/src/lib.rs"),
    file!("tests/plugin.rs", "rust/tests/plugin.rs"),
    file!("build.sh", "rust/build.sh"),
    file!(".gitignore", "rust/.gitignore"),
];

const PYTHON: &[File] = &[
    file!("src/app.py", "python/src/app.py"),
    file!("requirements.txt", "python/requirements.txt"),
    file!("build.sh", "python/build.sh"),
    file!(".gitignore", "python/.gitignore"),
];

const JAVASCRIPT: &[File] = &[
    file!("src/plugin.js", "javascript/src/plugin.js"),
    File {
        path: "src/uuid5.js",
        text: include_str!("../../../sdk/javascript/uuid5.js"),
    },
    file!("package.json", "javascript/package.json"),
    file!("build.mjs", "javascript/build.mjs"),
    file!("build.sh", "javascript/build.sh"),
    file!(".gitignore", "javascript/.gitignore"),
];

/// The contract, for the languages whose tools read it from the project (Rust's SDK brings
/// its own).
const WIT: File = File {
    path: "wit/plugin.wit",
    text: include_str!("../../../wit/plugin.wit"),
};

/// Names Cargo refuses for a package, or that the crate's code cannot use as its own name.
const RUST_RESERVED: &[&str] = &[
    "test",
    "core",
    "std",
    "alloc",
    "proc_macro",
    "proc-macro",
    "build",
    "deps",
    "examples",
    "incremental",
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
];

pub fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name, args.lang)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    let files = project(&args)?;
    write_project(&dir, &files)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "created {} ({} plugin `{}`): next,\n  cd {}\n  bash build.sh\n  \
         eventhost test {name}.wasm --events events.jsonl --expect expect.json{cargo}\n\
         then copy {name}.wasm into the daemon's plugins folder (README.md says how)",
        dir.display(),
        args.lang,
        args.name,
        shell_word(&dir),
        name = args.name,
        cargo = if args.lang == Lang::Rust {
            "\n  cargo test"
        } else {
            ""
        },
    )
    .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// The name as the plugin, its folder, its `.wasm` and (for Rust) its crate can all take it.
fn check_name(name: &str, lang: Lang) -> anyhow::Result<()> {
    if let Some(problem) = name_problem("the plugin name", name) {
        bail!("{problem}");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        bail!("the plugin name `{name}` must start with a lowercase letter");
    }
    if lang == Lang::Rust && RUST_RESERVED.contains(&name) {
        bail!(
            "`{name}` cannot name a Rust crate (a keyword or a name Cargo reserves): choose another"
        );
    }
    Ok(())
}

/// The project's files, placeholders filled in.
fn project(args: &NewArgs) -> anyhow::Result<Vec<(&'static str, String)>> {
    let (files, source, guide, needs, more_tests): (&[File], _, _, _, _) = match args.lang {
        Lang::Rust => (
            RUST,
            "src/lib.rs",
            "plugin-rust.md",
            "It needs a Rust toolchain (it adds the `wasm32-wasip2` target when rustup is there).",
            RUST_TESTS,
        ),
        Lang::Python => (
            PYTHON,
            "src/app.py",
            "plugin-python.md",
            "It needs Python 3 with `venv`: the first build installs componentize-py into `.venv`.",
            "",
        ),
        Lang::Javascript => (
            JAVASCRIPT,
            "src/plugin.js",
            "plugin-javascript.md",
            "It needs Node.js 20 or later with npm: the first build installs componentize-js \
             into `node_modules`.",
            "",
        ),
    };
    let mut replacements = vec![
        ("{{name}}", args.name.clone()),
        ("{{crate}}", args.name.replace('-', "_")),
        ("{{language}}", args.lang.to_string()),
        ("{{source}}", source.to_owned()),
        ("{{guide}}", guide.to_owned()),
        ("{{needs}}", needs.to_owned()),
        ("{{more_tests}}", more_tests.to_owned()),
    ];
    if args.lang == Lang::Rust {
        let repo = sdk_repo(args.repo.as_deref())?;
        replacements.push(("{{sdk}}", toml_path(&repo.join("sdk/rust"))?));
        replacements.push(("{{harness}}", toml_path(&repo.join("sdk/harness"))?));
    }
    let fill = |text: &str| {
        replacements
            .iter()
            .fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
    };
    let mut filled: Vec<(&'static str, String)> = COMMON
        .iter()
        .chain(files)
        .map(|file| (file.path, fill(file.text)))
        .collect();
    if args.lang != Lang::Rust {
        filled.push((WIT.path, WIT.text.to_owned()));
    }
    Ok(filled)
}

const RUST_TESTS: &str = "
The same checks run in `cargo test` (`tests/plugin.rs`, with the `eventhost-harness` crate);
build the component first. The harness builds the runtime (wasmtime) natively the first time:
about 8 minutes on 2 cores; later runs take seconds.
";

/// The eventhost checkout holding the Rust SDK: `repo` when given, else the one this binary
/// was built from, if it is still there.
fn sdk_repo(repo: Option<&Path>) -> anyhow::Result<PathBuf> {
    let (repo, given) = match repo {
        Some(repo) => (repo.to_path_buf(), true),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            false,
        ),
    };
    let has_sdk = ["sdk/rust/Cargo.toml", "sdk/harness/Cargo.toml"]
        .iter()
        .all(|file| repo.join(file).is_file());
    if !has_sdk {
        if given {
            bail!(
                "{} is not an eventhost checkout: it has no sdk/rust and sdk/harness",
                repo.display()
            );
        }
        bail!(
            "a Rust plugin depends on the SDK in an eventhost checkout, and the one this binary \
             was built from ({}) is gone: pass --repo DIR",
            repo.display()
        );
    }
    repo.canonicalize()
        .with_context(|| format!("cannot resolve {}", repo.display()))
}

/// `path` as a TOML basic string's contents.
fn toml_path(path: &Path) -> anyhow::Result<String> {
    let Some(text) = path.to_str() else {
        bail!(
            "{} is not valid UTF-8: Cargo.toml cannot name it",
            path.display()
        );
    };
    Ok(text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes `files` into a hidden folder beside `dir`, then renames it to `dir` (which must not
/// exist, or be an empty folder).
fn write_project(dir: &Path, files: &[(&str, String)]) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = dir.is_dir()
            && fs::read_dir(dir)
                .with_context(|| format!("cannot read {}", dir.display()))?
                .next()
                .is_none();
        if !empty {
            bail!(
                "{} already exists and is not an empty folder: choose another name or --dir",
                dir.display()
            );
        }
    }
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".eventhost-new-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a folder in {}", parent.display()))?;
    for (path, text) in files {
        let target = staging.path().join(path);
        if let Some(folder) = target.parent() {
            fs::create_dir_all(folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
        }
        fs::write(&target, text).with_context(|| format!("cannot write {}", target.display()))?;
        if path.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", target.display()))?;
        }
    }
    if dir.exists() {
        fs::remove_dir(dir).with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    let staged = staging.keep();
    if let Err(error) = fs::rename(&staged, dir) {
        let _ = fs::remove_dir_all(&staged);
        return Err(error).with_context(|| format!("cannot create {}", dir.display()));
    }
    Ok(())
}

/// `dir` as the user can paste it after `cd`.
fn shell_word(dir: &Path) -> String {
    let text = dir.display().to_string();
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(name: &str, lang: Lang) -> NewArgs {
        NewArgs {
            name: name.to_owned(),
            lang,
            dir: None,
            repo: None,
            database_url: None,
        }
    }

    #[test]
    fn names_that_cannot_name_a_plugin_or_crate_are_refused() {
        for (name, lang, says) in [
            ("Stock", Lang::Python, "contains 'S'"),
            ("", Lang::Python, "empty"),
            ("9lives", Lang::Javascript, "start with a lowercase letter"),
            ("-x", Lang::Rust, "start with a lowercase letter"),
            ("test", Lang::Rust, "cannot name a Rust crate"),
            ("stock level", Lang::Rust, "contains ' '"),
        ] {
            let error = check_name(name, lang).expect_err(name).to_string();
            assert!(error.contains(says), "{name}: {error}");
        }
        check_name("test", Lang::Python).expect("a Python plugin may be called test");
        check_name("stock-levels_2", Lang::Rust).expect("a plain name");
    }

    #[test]
    fn every_placeholder_is_filled_and_only_python_and_javascript_carry_the_wit() {
        for lang in [Lang::Rust, Lang::Python, Lang::Javascript] {
            let files = project(&args("stock-levels", lang)).expect("the project");
            for (path, text) in &files {
                assert!(!text.contains("{{"), "{lang}: {path} keeps a placeholder");
            }
            let has_wit = files.iter().any(|(path, _)| *path == WIT.path);
            assert_eq!(has_wit, lang != Lang::Rust, "{lang}");
            let readme = &files
                .iter()
                .find(|(path, _)| *path == "README.md")
                .expect("README")
                .1;
            assert!(readme.contains("stock-levels.wasm"), "{lang}: {readme}");
        }
        let rust = project(&args("stock-levels", Lang::Rust)).expect("the project");
        let build = &rust
            .iter()
            .find(|(path, _)| *path == "build.sh")
            .expect("build.sh")
            .1;
        assert!(build.contains("release/stock_levels.wasm"), "{build}");
    }

    #[test]
    fn an_existing_folder_with_files_is_left_alone_and_nothing_is_written() {
        let root = tempfile::tempdir().expect("a temporary folder");
        let taken = root.path().join("stock");
        fs::create_dir(&taken).expect("create");
        fs::write(taken.join("mine.txt"), "keep").expect("write");
        let error = write_project(&taken, &[("a.txt", "a".to_owned())])
            .expect_err("a folder with files")
            .to_string();
        assert!(error.contains("not an empty folder"), "{error}");
        let names: Vec<_> = fs::read_dir(root.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["stock"], "nothing staged is left behind");
        assert_eq!(
            fs::read_to_string(taken.join("mine.txt")).expect("read"),
            "keep"
        );

        let empty = root.path().join("empty");
        fs::create_dir(&empty).expect("create");
        write_project(&empty, &[("src/a.txt", "a".to_owned())]).expect("an empty folder is used");
        assert_eq!(
            fs::read_to_string(empty.join("src/a.txt")).expect("read"),
            "a"
        );
    }

    #[test]
    fn a_repo_without_the_sdk_is_refused_by_name() {
        let root = tempfile::tempdir().expect("a temporary folder");
        let error = sdk_repo(Some(root.path())).expect_err("no SDK").to_string();
        assert!(error.contains("not an eventhost checkout"), "{error}");
    }
}
