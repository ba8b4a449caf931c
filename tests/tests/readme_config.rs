//! The README's configuration table is the configuration: every setting a service reads (as
//! its `--help` lists it, from `shared::config::settings`) is a row of the table naming that
//! service, with the same default, and every row names a setting some service reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use shared::config::{ServiceSpec, Setting, settings};

/// One row of the README's table.
#[derive(Debug)]
struct Row {
    used_by: String,
    default: String,
}

fn readme_rows() -> BTreeMap<String, Row> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme.split("\n## Configuration\n").nth(1).expect("README has a `## Configuration` section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.len() >= 4, "a configuration row has variable, used by, default, meaning: {line}");
            let var = cells[0].trim_matches('`').to_owned();
            (var, Row { used_by: cells[1].to_owned(), default: cells[2].to_owned() })
        })
        .collect()
}

fn services() -> Vec<(ServiceSpec, Vec<Setting>)> {
    vec![
        (auth_service::SERVICE, settings::<auth_service::Config>(&auth_service::SERVICE)),
        (user_service::SERVICE, settings::<user_service::Config>(&user_service::SERVICE)),
        (notification_service::SERVICE, settings::<notification_service::Config>(&notification_service::SERVICE)),
    ]
}

/// Whether a row's "used by" cell names `service` (`all`, or the service's name).
fn names(used_by: &str, service: &str) -> bool {
    used_by == "all" || used_by.split(',').map(str::trim).any(|name| name.trim_matches('`') == service)
}

#[test]
fn every_setting_of_every_service_is_in_the_readme_with_its_default() {
    let rows = readme_rows();
    let mut problems = Vec::new();
    for (spec, settings) in services() {
        for setting in settings {
            let Some(row) = rows.get(&setting.var) else {
                problems.push(format!("{}: {} is not in the README's table", spec.name, setting.var));
                continue;
            };
            if !names(&row.used_by, spec.name) {
                problems.push(format!("{}: the row of {} does not name it ({})", spec.name, setting.var, row.used_by));
            }
            // A default shared by every service is shown as is; one that differs per service
            // is shown per service (`x` (auth-service), …) or explained in words.
            if let Some(default) = &setting.default
                && !row.default.contains(&format!("`{default}`"))
                && !row.default.contains(&default.to_string())
            {
                problems.push(format!(
                    "{}: {} defaults to `{default}`, the README says {}",
                    spec.name, setting.var, row.default
                ));
            }
        }
    }
    assert!(problems.is_empty(), "README configuration table out of date:\n{}", problems.join("\n"));
}

#[test]
fn every_row_of_the_readme_is_a_setting_of_the_services_it_names() {
    let services = services();
    let mut problems = Vec::new();
    for (var, row) in readme_rows() {
        let readers: BTreeSet<&str> = services
            .iter()
            .filter(|(_, settings)| settings.iter().any(|setting| setting.var == var))
            .map(|(spec, _)| spec.name)
            .collect();
        if readers.is_empty() {
            problems.push(format!("{var} is in the README but no service reads it"));
        }
        for (spec, _) in &services {
            if names(&row.used_by, spec.name) && !readers.contains(spec.name) {
                problems.push(format!("{var}: the README says {} reads it, it does not", spec.name));
            }
        }
    }
    assert!(problems.is_empty(), "README configuration table out of date:\n{}", problems.join("\n"));
}
