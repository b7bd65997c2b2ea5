//! Tests of [`Amount`] parsing, formatting and serde.

use super::super::{Amount, AmountError};
use crate::wire::codec;

#[test]
fn display_has_exactly_six_decimals() {
    assert_eq!(Amount(66_666_667).to_string(), "66.666667");
    assert_eq!(Amount::ZERO.to_string(), "0.000000");
    assert_eq!(Amount(100_000_000).to_string(), "100.000000");
    assert_eq!(Amount(1).to_string(), "0.000001");
    assert_eq!(Amount(u64::MAX).to_string(), "18446744073709.551615");
    assert_eq!(Amount(7).micros(), 7);
}

#[test]
fn parses_decimal_strings() {
    let ok = |s: &str| Amount::from_decimal_str(s).unwrap().micros();
    assert_eq!(ok("0"), 0);
    assert_eq!(ok("100"), 100_000_000);
    assert_eq!(ok("12.5"), 12_500_000);
    assert_eq!(ok("66.666667"), 66_666_667);
    assert_eq!(ok("0.000001"), 1);
    assert_eq!(ok("007.10"), 7_100_000);
    assert_eq!(ok("18446744073709.551615"), u64::MAX);
    assert_eq!("3.25".parse::<Amount>().unwrap(), Amount(3_250_000));
    for a in [0, 1, 999_999, 1_000_000, 66_666_667, u64::MAX] {
        assert_eq!(Amount(a).to_string().parse::<Amount>().unwrap(), Amount(a));
    }
}

#[test]
fn rejects_bad_strings_with_clear_errors() {
    let err = |s: &str| Amount::from_decimal_str(s).unwrap_err();
    assert_eq!(err(""), AmountError::Empty);
    for bad in [
        "abc", "1.", ".5", "1.2.3", "+1", "1e5", " 1", "1 ", "1,5", "-", "0x10", "١",
    ] {
        assert!(
            matches!(err(bad), AmountError::Invalid { .. }),
            "{bad:?}: {:?}",
            err(bad)
        );
    }
    assert!(matches!(err("-1"), AmountError::Negative { .. }));
    assert!(matches!(
        err("0.0000001"),
        AmountError::TooManyDecimals { .. }
    ));
    assert!(matches!(
        err("18446744073709.551616"),
        AmountError::Overflow { .. }
    ));
    assert!(matches!(
        err("18446744073710"),
        AmountError::Overflow { .. }
    ));
    assert!(matches!(err(&"9".repeat(40)), AmountError::Overflow { .. }));
    let msg = err("1.1234567").to_string();
    assert!(msg.contains("6 decimals"), "{msg}");
    let msg = err(&"x".repeat(1000)).to_string();
    assert!(msg.len() < 300, "{msg}");
}

#[test]
fn converts_floats() {
    let f = |x: f64| Amount::from_tokens_f64(x);
    assert_eq!(f(0.0).unwrap(), Amount::ZERO);
    assert_eq!(f(-0.0).unwrap(), Amount::ZERO);
    assert_eq!(f(0.1).unwrap(), Amount(100_000));
    assert_eq!(f(66.6666666).unwrap(), Amount(66_666_667));
    assert_eq!(f(0.0000004).unwrap(), Amount::ZERO);
    assert_eq!(f(100.0).unwrap(), Amount(100_000_000));
    assert!(matches!(f(-0.5), Err(AmountError::Negative { .. })));
    assert!(matches!(f(f64::NAN), Err(AmountError::NotFinite { .. })));
    assert!(matches!(
        f(f64::INFINITY),
        Err(AmountError::NotFinite { .. })
    ));
    assert!(matches!(f(1.9e13), Err(AmountError::Overflow { .. })));
    assert!(f(1.8e13).is_ok());
    assert!((Amount(12_500_000).to_tokens_f64() - 12.5).abs() < 1e-12);
    assert_eq!(Amount::from_whole_tokens(3).unwrap(), Amount(3_000_000));
    assert!(Amount::from_whole_tokens(u64::MAX).is_err());
}

#[test]
fn json_is_a_decimal_string() {
    let a = Amount(66_666_667);
    assert_eq!(serde_json::to_string(&a).unwrap(), "\"66.666667\"");
    assert_eq!(serde_json::from_str::<Amount>("\"66.666667\"").unwrap(), a);
    assert_eq!(
        serde_json::from_str::<Amount>("\"12\"").unwrap(),
        Amount(12_000_000)
    );
    assert_eq!(
        serde_json::from_str::<Amount>("100").unwrap(),
        Amount(100_000_000)
    );
    assert_eq!(
        serde_json::from_str::<Amount>("12.5").unwrap(),
        Amount(12_500_000)
    );
    for bad in [
        "\"1.1234567\"",
        "\"-1\"",
        "-1",
        "0.0000001",
        "1e30",
        "\"\"",
        "true",
        "null",
        "18446744073710",
    ] {
        let e = serde_json::from_str::<Amount>(bad);
        assert!(e.is_err(), "{bad} parsed as {e:?}");
    }
    let msg = serde_json::from_str::<Amount>("\"1.1234567\"")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("6 decimals"), "{msg}");
}

#[test]
fn toml_accepts_strings_and_numbers() {
    #[derive(serde::Deserialize, serde::Serialize, PartialEq, Debug)]
    struct Reward {
        pool: Amount,
    }
    for (text, micros) in [
        ("pool = \"1.5\"", 1_500_000),
        ("pool = 7", 7_000_000),
        ("pool = 2.25", 2_250_000),
    ] {
        let r: Reward = toml::from_str(text).unwrap();
        assert_eq!(r.pool, Amount(micros));
    }
    assert!(toml::from_str::<Reward>("pool = -3").is_err());
    let out = toml::to_string(&Reward {
        pool: Amount(1_500_000),
    })
    .unwrap();
    assert_eq!(out.trim(), "pool = \"1.500000\"");
}

#[test]
fn bincode_is_the_micro_units() {
    for a in [0, 1, 300, 66_666_667, u64::MAX] {
        let amount = Amount(a);
        let bytes = codec::encode(&amount).unwrap();
        assert_eq!(bytes, codec::encode(&a).unwrap());
        assert_eq!(codec::decode::<Amount>(&bytes).unwrap(), amount);
    }
    assert!(codec::decode::<Amount>(&[0xff]).is_err());
}

#[test]
fn schema_is_a_patterned_string() {
    let schema = schemars::schema_for!(Amount);
    let v = serde_json::to_value(&schema).unwrap();
    assert_eq!(v["type"], "string");
    assert_eq!(v["pattern"], "^[0-9]+(\\.[0-9]{1,6})?$");
}
