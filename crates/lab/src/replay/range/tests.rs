//! Unit tests of [`super`].

use super::*;

#[test]
fn offset_ranges_and_times_parse() {
    assert_eq!(
        "3:100-5000".parse::<OffsetRange>().unwrap(),
        OffsetRange {
            partition: 3,
            start: 100,
            end: Some(5000)
        }
    );
    assert_eq!("0:7-".parse::<OffsetRange>().unwrap().end, None);
    assert!("0:9-3".parse::<OffsetRange>().is_err());
    assert!("0-3".parse::<OffsetRange>().is_err());
    assert_eq!(
        "1764590400000".parse::<Time>().unwrap(),
        Time(1_764_590_400_000)
    );
    assert_eq!(
        "2025-12-01T12:00:00Z".parse::<Time>().unwrap(),
        Time(1_764_590_400_000)
    );
    assert!("yesterday".parse::<Time>().is_err());
}
