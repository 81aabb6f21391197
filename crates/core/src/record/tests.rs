//! Unit tests of [`super`].

use super::{first_written, headers};

#[test]
fn a_copy_keeps_the_place_its_event_was_first_written() {
    let none = |_: &str| None;
    assert_eq!(first_written(("t", 1, 7), none), "t:1:7");
    let replayed = |h: &str| (h == headers::REPLAY).then(|| "RUN1:src:3:42".to_string());
    assert_eq!(first_written(("copy", 0, 9), replayed), "src:3:42");
    // A parked copy or a redrive of a replayed event: what it carries wins.
    let carried = |h: &str| match h {
        headers::FIRST_WRITTEN => Some("src:3:42".to_string()),
        headers::REPLAY => Some("RUN1:other:0:1".to_string()),
        _ => None,
    };
    assert_eq!(first_written(("park", 5, 100), carried), "src:3:42");
}

proptest::proptest! {
    /// Hostile `sluice.first_written` and `sluice.replay` headers (any text,
    /// colons or none) never panic, and a record's own place is used when they
    /// say nothing usable.
    #[test]
    fn any_sluice_header_gives_a_first_written_place(
        first in proptest::option::of("\\PC{0,30}"),
        replay in proptest::option::of("\\PC{0,30}"),
        partition in proptest::prelude::any::<i32>(),
        offset in proptest::prelude::any::<i64>(),
    ) {
        let header = |h: &str| match h {
            crate::record::headers::FIRST_WRITTEN => first.clone(),
            crate::record::headers::REPLAY => replay.clone(),
            _ => None,
        };
        let place = first_written(("t", partition, offset), header);
        match (&first, replay.as_deref().and_then(|r| r.split_once(':'))) {
            (Some(f), _) => proptest::prop_assert_eq!(&place, f),
            (None, Some((_, p))) => proptest::prop_assert_eq!(place, p),
            (None, None) => proptest::prop_assert_eq!(place, format!("t:{partition}:{offset}")),
        }
    }
}
