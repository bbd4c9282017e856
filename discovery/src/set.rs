//! The endpoint set a stream of changes describes, and diffs between sets.

use std::collections::BTreeMap;

use watertight_core::{Change, Endpoint, EndpointId};

/// Endpoints by id.
pub(crate) type Set = BTreeMap<EndpointId, Endpoint>;

/// A set from a list; a later endpoint replaces an earlier one with the same id.
pub(crate) fn from_list(list: impl IntoIterator<Item = Endpoint>) -> Set {
    list.into_iter().map(|e| (e.id.clone(), e)).collect()
}

/// Applies one change to a set.
pub(crate) fn apply(set: &mut Set, change: Change) {
    match change {
        Change::Insert(e) => {
            set.insert(e.id.clone(), e);
        }
        Change::Remove(id) => {
            set.remove(&id);
        }
        Change::Reset(list) => *set = from_list(list),
    }
}

/// What turns `old` into `new`: endpoints to insert (new or changed), and ids
/// to remove.
pub(crate) fn diff(old: &Set, new: &Set) -> (Vec<Endpoint>, Vec<EndpointId>) {
    let upserts = new
        .values()
        .filter(|e| old.get(&e.id) != Some(*e))
        .cloned()
        .collect();
    let removals = old
        .keys()
        .filter(|id| !new.contains_key(*id))
        .cloned()
        .collect();
    (upserts, removals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: &str) -> Endpoint {
        Endpoint::new(addr.parse().unwrap())
    }

    #[test]
    fn diff_finds_new_changed_and_removed() {
        let old = from_list([ep("10.0.0.1:80"), ep("10.0.0.2:80"), ep("10.0.0.3:80")]);
        let new = from_list([
            ep("10.0.0.1:80"),
            ep("10.0.0.2:80").with_weight(5),
            ep("10.0.0.4:80"),
        ]);
        let (up, rm) = diff(&old, &new);
        let up: Vec<_> = up.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(up, ["10.0.0.2:80", "10.0.0.4:80"]);
        assert_eq!(rm, [EndpointId::from("10.0.0.3:80")]);
    }

    #[test]
    fn apply_follows_every_change_kind() {
        let mut s = Set::new();
        apply(&mut s, Change::Insert(ep("10.0.0.1:80")));
        apply(&mut s, Change::Insert(ep("10.0.0.2:80")));
        apply(&mut s, Change::Remove("10.0.0.1:80".into()));
        assert_eq!(s.len(), 1);
        apply(
            &mut s,
            Change::Reset(vec![ep("10.0.0.3:80"), ep("10.0.0.3:80")]),
        );
        assert_eq!(
            s.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["10.0.0.3:80"]
        );
    }
}
