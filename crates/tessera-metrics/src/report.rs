//! Serialization helpers shared by the score types.

use serde::Serializer;

/// Serializes numbers that are whole as integers (`119`, not `119.0`), the rest as floats,
/// as Python prints sacreBLEU's counts.
pub fn ser_nums<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for &x in v {
        if x.fract() == 0.0 && x.abs() < 9.0e15 {
            seq.serialize_element(&(x as i64))?;
        } else {
            seq.serialize_element(&x)?;
        }
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize)]
    struct T {
        #[serde(serialize_with = "super::ser_nums")]
        v: Vec<f64>,
    }

    #[test]
    fn whole_numbers_as_ints() {
        let s = serde_json::to_string(&T { v: vec![3.0, 1.5] }).unwrap();
        assert_eq!(s, r#"{"v":[3,1.5]}"#);
    }
}
