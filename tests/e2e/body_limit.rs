//! `max_body_bytes` per executor: a task type whose inputs are large takes
//! larger signed tasks than the node's `[limits] max_body_bytes`, and the
//! other types stay held to the node's limit.

use crate::util::Keys;

/// Thor with two echo types: `echo` under the node's default limit
/// (1 MiB), `image` under its own 4 MiB.
fn config(keys: &Keys, image_limit: &str) -> String {
    let path = keys.path().with_file_name("sage.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\nname = \"Thor\"\n\n[executors.echo]\nkind = \"builtin\"\nbuiltin = \"echo\"\n\n\
             [executors.image]\nkind = \"builtin\"\nbuiltin = \"echo\"\nmax_body_bytes = {image_limit}\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn an_executor_s_body_limit_admits_inputs_the_node_s_limit_refuses() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let config = config(&keys, "4194304");
    let node = keys.serve("Thor", &["--config", &config]);
    // 900 KB of input: base64 in the envelope makes it 1.2 MB, above 1 MiB.
    let input = keys.path().with_file_name("input.json");
    std::fs::write(&input, format!("{{\"data\":\"{}\"}}", "x".repeat(900_000))).unwrap();
    let input = format!("@{}", input.display());
    let delegate = |task_type: &str| {
        keys.run(&[
            "delegate",
            "--local",
            "Sprout",
            "--target",
            "Thor",
            "--port",
            &node.port(),
            "--task-type",
            task_type,
            "--input",
            &input,
            "--json",
        ])
    };
    let image = delegate("image");
    image.assert_code(0);
    assert_eq!(
        image.json()["proof"]["result"]["data"]
            .as_str()
            .map(str::len),
        Some(900_000)
    );
    let echo = delegate("echo");
    echo.assert_code(1);
    let json = echo.json();
    assert_eq!(json["error"]["code"], "too_large", "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1048576"),
        "{json}"
    );
}

#[test]
fn config_check_refuses_a_zero_body_limit() {
    let keys = Keys::with(&["Thor"]);
    let config = config(&keys, "0");
    let run = keys.run(&["config", "check", "--config", &config]);
    run.assert_code(1);
    run.assert_stderr(&["executors.image.max_body_bytes: must be at least 1"]);
}
