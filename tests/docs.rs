//! The README's input and output tables are generated from `action.yml`, so the two can
//! never disagree. Run with `UPDATE_README=1` to rewrite the tables after editing
//! `action.yml`.

use std::fmt::Write as _;

use ecr_build_push::inputs::ActionSpec;

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn inputs_table(spec: &ActionSpec) -> String {
    let mut table =
        String::from("| Input | Required | Default | Description |\n|---|---|---|---|\n");
    for input in &spec.inputs {
        let default = if input.default.is_empty() {
            String::new()
        } else {
            format!("`{}`", input.default)
        };
        let required = if input.required { "yes" } else { "no" };
        let _ = writeln!(
            table,
            "| `{}` | {required} | {default} | {} |",
            input.name,
            cell(&input.description)
        );
    }
    table
}

fn outputs_table(spec: &ActionSpec) -> String {
    let mut table = String::from("| Output | Description |\n|---|---|\n");
    for output in &spec.outputs {
        let _ = writeln!(
            table,
            "| `{}` | {} |",
            output.name,
            cell(&output.description)
        );
    }
    table
}

/// Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`.
fn splice(readme: &str, name: &str, body: &str) -> String {
    let start = format!("<!-- {name}:start -->\n");
    let end = format!("<!-- {name}:end -->");
    let from = readme
        .find(&start)
        .unwrap_or_else(|| panic!("README lacks {start}"))
        + start.len();
    let to = readme
        .find(&end)
        .unwrap_or_else(|| panic!("README lacks {end}"));
    format!("{}{body}{}", &readme[..from], &readme[to..])
}

/// The README's inputs and outputs tables equal what action.yml declares: every name,
/// default and description.
#[test]
fn readme_tables_match_action_yml() {
    let spec = ActionSpec::embedded();
    let readme = std::fs::read_to_string(README).unwrap();
    let expected = splice(
        &splice(&readme, "inputs", &inputs_table(&spec)),
        "outputs",
        &outputs_table(&spec),
    );
    if std::env::var_os("UPDATE_README").is_some() {
        std::fs::write(README, &expected).unwrap();
        return;
    }
    assert!(
        readme == expected,
        "README tables differ from action.yml; run `UPDATE_README=1 cargo test --test docs`"
    );
}
