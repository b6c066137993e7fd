//! Hand-built DAGs resolved step by step.

use super::*;

fn state(pairs: &[(&str, &str, &str)]) -> StateMap {
    pairs
        .iter()
        .map(|(kind, state_key, id)| ((kind.to_string(), state_key.to_string()), id.to_string()))
        .collect()
}

#[test]
fn splits_unconflicted_and_conflicted_state() {
    let first = state(&[
        ("m.room.create", "", "$c"),
        ("m.room.name", "", "$n1"),
        ("m.room.topic", "", "$t"),
    ]);
    let second = state(&[("m.room.create", "", "$c"), ("m.room.name", "", "$n2")]);
    let (unconflicted, conflicted) = split_conflicted(&[first, second]);
    assert_eq!(unconflicted, state(&[("m.room.create", "", "$c")]));
    let expected: BTreeSet<String> = ["$n1", "$n2", "$t"].map(String::from).into();
    assert_eq!(conflicted, expected);
}
