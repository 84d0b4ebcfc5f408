//! `sage completions` and `sage man`: made from the argument definitions,
//! they list every subcommand and flag, and the systemd unit's
//! `Documentation=` names pages that exist.

use crate::util::{sage, Run};

/// Every subcommand a user can type, as `man --out-dir` names its page.
const PAGES: &[&str] = &[
    "sage",
    "sage-serve",
    "sage-delegate",
    "sage-bench",
    "sage-capabilities",
    "sage-health",
    "sage-keygen",
    "sage-key-show",
    "sage-peer-add",
    "sage-peer-list",
    "sage-peer-remove",
    "sage-proofs-list",
    "sage-proofs-show",
    "sage-proofs-export",
    "sage-proofs-verify",
    "sage-config-check",
    "sage-tls-self-signed",
    "sage-tls-fingerprint",
    "sage-completions",
    "sage-man",
];

fn run(args: &[&str]) -> Run {
    Run::from(sage().args(args).output().unwrap())
}

#[test]
fn completion_scripts_name_every_subcommand_and_their_flags() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let run = run(&["completions", shell]);
        run.assert_code(0);
        for word in [
            "serve",
            "delegate",
            "proofs",
            "tls-fingerprint",
            "max-answer-bytes",
        ] {
            assert!(run.stdout.contains(word), "{shell} completions lack {word}");
        }
    }
    let run = run(&["completions", "tcsh"]);
    run.assert_code(2);
    run.assert_stderr(&["invalid value 'tcsh'", "bash"]);
    assert!(run.stdout.is_empty());
}

#[test]
fn the_man_page_is_printed_or_written_one_page_per_subcommand() {
    let run = run(&["man"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains(".TH sage 1"),
        "{}",
        &run.stdout[..200.min(run.stdout.len())]
    );
    for sub in ["serve", "delegate", "bench", "proofs", "completions"] {
        assert!(run.stdout.contains(sub), "sage(1) lacks {sub}");
    }

    let dir = tempfile::tempdir().unwrap();
    let run = self::run(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    run.assert_code(0);
    for page in PAGES {
        let text = std::fs::read_to_string(dir.path().join(format!("{page}.1")))
            .unwrap_or_else(|e| panic!("{page}.1: {e}"));
        assert!(
            text.contains(&format!(".TH {page} 1")),
            "{page}.1 has no title line"
        );
    }
    let delegate = std::fs::read_to_string(dir.path().join("sage-delegate.1")).unwrap();
    for flag in ["task\\-type", "max\\-answer\\-bytes", "timeout"] {
        assert!(delegate.contains(flag), "sage-delegate.1 lacks {flag}");
    }
}

#[test]
fn man_refuses_an_output_directory_that_does_not_exist_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("man1");
    let run = run(&["man", "--out-dir", missing.to_str().unwrap()]);
    run.assert_code(2);
    run.assert_stderr(&["--out-dir", "is not a directory"]);
    assert!(!missing.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn the_systemd_units_documentation_names_pages_sage_writes() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/systemd/sage.service"
    ))
    .unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("Documentation="))
        .expect("a Documentation= line");
    let pages: Vec<&str> = line
        .split_whitespace()
        .map(|uri| {
            uri.strip_prefix("man:")
                .and_then(|p| p.strip_suffix("(1)"))
                .unwrap_or_else(|| panic!("{uri} is not a man:PAGE(1) reference"))
        })
        .collect();
    assert!(pages.contains(&"sage"), "{line}");
    let dir = tempfile::tempdir().unwrap();
    run(&["man", "--out-dir", dir.path().to_str().unwrap()]).assert_code(0);
    for page in pages {
        assert!(
            dir.path().join(format!("{page}.1")).is_file(),
            "no page {page}.1"
        );
    }
}
