//! `sage config check` finds everything `serve` would fail on, all in one
//! run and each at its line, and `serve` refuses the same file the same way.

use std::os::unix::fs::PermissionsExt as _;

use crate::util::Keys;

/// A file with six problems: two unknown keys, a program that does not
/// exist, one that is not executable, a URL that does not parse, and no key
/// for the node's name.
fn broken_config(keys: &Keys) -> std::path::PathBuf {
    let dir = keys.path().parent().unwrap().to_owned();
    let plain = dir.join("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\necho {}\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = dir.join("sage.toml");
    let text = format!(
        "[node]\n\
         name = \"Odin\"\n\
         colour = \"red\"\n\
         \n\
         [executors.gone]\n\
         kind = \"command\"\n\
         command = [\"sage-no-such-program\"]\n\
         \n\
         [executors.plain]\n\
         kind = \"command\"\n\
         command = [\"{}\"]\n\
         speed = 3\n\
         \n\
         [executors.web]\n\
         kind = \"http\"\n\
         url = \"http://exa mple/\"\n",
        plain.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_check_reports_every_problem_with_its_line_and_serve_refuses_the_same() {
    let keys = Keys::with(&["Thor"]);
    let path = broken_config(&keys);
    let file = path.to_str().unwrap();
    let run = keys.run(&["config", "check", "--config", file]);
    run.assert_code(1);
    run.assert_stderr(&[
        "sage.toml:3: colour: unknown field `colour`",
        "sage.toml:12: speed: unknown field `speed`",
        "sage.toml:7: executors.gone.command: the program `sage-no-such-program` is not found on PATH",
        "sage.toml:11: executors.plain.command: the program",
        "plain.sh is not an executable file",
        "sage.toml:16: executors.web.url: bad URL",
        "sage.toml:2: node.name: the node's key: no key for platform Odin",
    ]);
    assert!(run.stdout.is_empty(), "{}", run.stdout);

    let serve = keys.serve_to_end("Odin", &["--config", file]);
    serve.assert_code(1);
    serve.assert_stderr(&[
        "sage.toml:3: colour: unknown field `colour`",
        "sage.toml:12: speed: unknown field `speed`",
    ]);

    // With the unknown keys gone, serve finds what the file names, as the
    // check does.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("colour = \"red\"\n", "\n")
        .replace("speed = 3\n", "\n");
    std::fs::write(&path, text).unwrap();
    let serve = keys.serve_to_end("Odin", &["--config", file]);
    serve.assert_code(1);
    serve.assert_stderr(&[
        "sage.toml:7: executors.gone.command: the program `sage-no-such-program` is not found on PATH",
        "plain.sh is not an executable file",
        "sage.toml:16: executors.web.url: bad URL",
        "no key for platform Odin",
    ]);
    assert!(!serve.stderr.contains("serving on"), "{}", serve.stderr);
}

#[test]
fn config_check_finds_the_missing_tls_files_and_passes_a_sound_file() {
    let keys = Keys::with(&["Thor"]);
    let dir = keys.path().parent().unwrap().to_owned();
    let path = dir.join("sage.toml");
    std::fs::write(
        &path,
        "[node]\nname = \"Thor\"\ntls_cert = \"no.crt\"\ntls_key = \"no.key\"\n\n[executors.cat]\nkind = \"command\"\ncommand = [\"cat\"]\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let run = keys.run(&["config", "check", "--config", file]);
    run.assert_code(1);
    run.assert_stderr(&["sage.toml:3: node.tls_cert:", "no.crt"]);

    std::fs::write(
        &path,
        "[node]\nname = \"Thor\"\n\n[executors.cat]\nkind = \"command\"\ncommand = [\"cat\"]\n",
    )
    .unwrap();
    keys.run(&["config", "check", "--config", file])
        .assert_code(0)
        .assert_stdout(&["[executors.cat]"]);
}
