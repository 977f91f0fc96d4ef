use serde_json::Value;

use crate::util::{stderr, stdout, wm};

/// With 4 000 seeded estimates, REINFORCE (unbiased) is within 4 standard errors of the exact
/// gradient, straight-through is 0.537 away (its bias by enumeration, `wm_rssm::estimators`),
/// far beyond its standard error of about 0.03, and the leave-one-out baseline has a lower
/// variance than four plain samples.
#[test]
fn bench_estimators_reports_every_estimator_against_the_exact_gradient() {
    let output = wm(&[
        "bench",
        "estimators",
        "--estimates",
        "4000",
        "--calls",
        "2",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let rows: Vec<Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
        .collect();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["estimator"] == name)
            .unwrap_or_else(|| panic!("no row {name}: {rows:?}"))
    };
    assert_eq!(rows.len(), 11, "{rows:?}");
    let number = |r: &Value, key: &str| r[key].as_f64().expect(key);
    for name in [
        "reinforce",
        "reinforce_ma",
        "reinforce_k4",
        "reinforce_loo_k4",
    ] {
        let r = row(name);
        assert!(
            number(r, "bias_norm") < 4.0 * number(r, "standard_error_norm"),
            "{r}"
        );
    }
    let st = row("straight_through");
    assert!((0.45..0.62).contains(&number(st, "bias_norm")), "{st}");
    assert!(number(st, "standard_error_norm") < 0.05, "{st}");
    assert!(
        number(row("reinforce_loo_k4"), "trace_variance")
            < number(row("reinforce_k4"), "trace_variance"),
        "{rows:?}"
    );
    for r in &rows {
        assert!(number(r, "us_per_call") > 0.0, "{r}");
    }
}

#[test]
fn bench_estimators_rejects_too_few_estimates() {
    let output = wm(&["bench", "estimators", "--estimates", "1"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--estimates must be at least 2"),
        "{}",
        stderr(&output)
    );
}
