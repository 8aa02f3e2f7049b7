//! Install order, as the spec's reference implementation computes it: rounds, each taking
//! the features whose `dependsOn` (hard) and `installsAfter` (soft: only when present) are
//! installed; of those, only the ones `overrideFeatureInstallOrder` ranks highest; within a
//! round, by id.

use std::collections::BTreeSet;

use super::{ResolvedFeature, canonical_id};

/// Indices into `features` in install order, or why there is none (a cycle).
pub fn install_order(features: &[ResolvedFeature], override_order: &[String]) -> Result<Vec<usize>, String> {
    let ids: Vec<String> = features.iter().map(|f| canonical_id(&f.id)).collect();
    let present: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let overrides: Vec<String> = override_order.iter().map(|o| canonical_id(o)).collect();
    for o in &overrides {
        if !present.contains(o.as_str()) {
            return Err(format!("overrideFeatureInstallOrder names `{o}`, which is not among the features"));
        }
    }
    for (i, f) in features.iter().enumerate() {
        if let Some(d) = f.meta.depends_on.keys().find(|d| !present.contains(canonical_id(d).as_str())) {
            return Err(format!("feature `{}` depends on `{d}`, which is not among the features", ids[i]));
        }
    }
    let priority = |i: usize| overrides.iter().position(|o| *o == ids[i]).map_or(0, |p| overrides.len() - p);
    let needs = |i: usize| -> Vec<String> {
        let f = &features[i].meta;
        let hard = f.depends_on.keys().map(|d| canonical_id(d));
        let soft = f.installs_after.iter().map(|d| canonical_id(d)).filter(|d| present.contains(d.as_str()));
        hard.chain(soft).collect()
    };
    let mut installed: BTreeSet<String> = BTreeSet::new();
    let mut done = vec![false; features.len()];
    let mut order = Vec::new();
    while order.len() < features.len() {
        let ready: Vec<usize> =
            (0..features.len()).filter(|&i| !done[i] && needs(i).iter().all(|n| installed.contains(n))).collect();
        let Some(top) = ready.iter().map(|&i| priority(i)).max() else {
            let stuck: Vec<&str> = (0..features.len()).filter(|&i| !done[i]).map(|i| ids[i].as_str()).collect();
            return Err(format!(
                "features depend on each other in a circle (dependsOn/installsAfter): {}",
                stuck.join(", ")
            ));
        };
        let mut round: Vec<usize> = ready.into_iter().filter(|&i| priority(i) == top).collect();
        round.sort_by(|&a, &b| ids[a].cmp(&ids[b]).then(features[a].options.cmp(&features[b].options)));
        for i in round {
            done[i] = true;
            order.push(i);
        }
        // A feature counts as installed once every instance of its id is.
        for i in 0..features.len() {
            if (0..features.len()).filter(|&j| ids[j] == ids[i]).all(|j| done[j]) {
                installed.insert(ids[i].clone());
            }
        }
    }
    Ok(order)
}
