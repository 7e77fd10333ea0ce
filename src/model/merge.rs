//! The layered merge: model defaults → server defaults → domain defaults → phone settings →
//! member/account (per line), each later layer winning per key. Per-MAC overrides are the
//! last layer and are applied to the rendered bytes by `render::overlay`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::settings::Settings;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// Built-in floor (the seed API's documented defaults).
    Builtin,
    /// The model file's defaults.
    Model,
    /// `autoprov.toml` `[defaults]`.
    Server,
    /// The phone's domain.
    Domain,
    /// The phone.
    Phone,
    /// The account on a line (port).
    Line(u32),
    /// A per-MAC override.
    Override,
}

/// The merged settings with each value's origin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    values: BTreeMap<String, (String, Layer)>,
}

impl Merged {
    /// Folds `layers` in order: a later layer wins per key, unset keys fall through.
    pub fn fold<'a>(layers: impl IntoIterator<Item = (Layer, &'a Settings)>) -> Self {
        let mut m = Merged::default();
        for (layer, s) in layers {
            m.apply(layer, s);
        }
        m
    }

    /// Applies one more layer on top.
    pub fn apply(&mut self, layer: Layer, s: &Settings) {
        for (k, v) in s {
            self.values.insert(k.clone(), (v.clone(), layer));
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    /// The value and origin of `key`.
    pub fn origin(&self, key: &str) -> Option<Layer> {
        self.values.get(key).map(|(_, l)| *l)
    }

    /// Plain key → value map.
    pub fn to_settings(&self) -> Settings {
        self.values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    /// Every key with value and origin.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, Layer)> {
        self.values
            .iter()
            .map(|(k, (v, l))| (k.as_str(), v.as_str(), *l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layer() -> impl Strategy<Value = Settings> {
        proptest::collection::btree_map("[a-d]", "[a-z]{0,3}", 0..4)
    }

    proptest! {
        #[test]
        fn later_layer_wins_and_unset_falls_through(a in layer(), b in layer(), c in layer()) {
            let m = Merged::fold([(Layer::Model, &a), (Layer::Domain, &b), (Layer::Phone, &c)]);
            for key in a.keys().chain(b.keys()).chain(c.keys()) {
                let (want, origin) = if let Some(v) = c.get(key) {
                    (v, Layer::Phone)
                } else if let Some(v) = b.get(key) {
                    (v, Layer::Domain)
                } else {
                    (&a[key], Layer::Model)
                };
                prop_assert_eq!(m.get(key), Some(want.as_str()));
                prop_assert_eq!(m.origin(key), Some(origin));
            }
            prop_assert_eq!(m.iter().count(), a.keys().chain(b.keys()).chain(c.keys()).collect::<std::collections::BTreeSet<_>>().len());
        }

        #[test]
        fn empty_layer_changes_nothing(a in layer(), b in layer()) {
            let empty = Settings::new();
            let with = Merged::fold([(Layer::Model, &a), (Layer::Domain, &empty), (Layer::Phone, &b)]).to_settings();
            let without = Merged::fold([(Layer::Model, &a), (Layer::Phone, &b)]).to_settings();
            prop_assert_eq!(with, without);
        }

        #[test]
        fn fold_is_apply_in_order(a in layer(), b in layer()) {
            let mut m = Merged::fold([(Layer::Model, &a)]);
            m.apply(Layer::Server, &b);
            prop_assert_eq!(m, Merged::fold([(Layer::Model, &a), (Layer::Server, &b)]));
        }
    }
}
