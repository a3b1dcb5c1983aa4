//! Newtypes for the values Conveyor passes around. `parse` is the only way in, so code past the
//! boundary never re-checks them.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Why a value was refused at the boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is invalid: {rule}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub value: String,
    pub rule: &'static str,
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal, $pattern:literal, $rule:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
                static PATTERN: LazyLock<Regex> = LazyLock::new(|| {
                    #[allow(clippy::unwrap_used)] // a literal pattern, covered by tests
                    Regex::new($pattern).unwrap()
                });
                let value = value.into();
                if PATTERN.is_match(&value) {
                    Ok(Self(value))
                } else {
                    Err(InvalidValue { what: $what, value, rule: $rule })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, InvalidValue> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

string_newtype!(
    /// An app's name: the last segment of its `{prefix}/apps/{app}` parameter.
    AppName,
    "app name",
    r"^[a-z0-9][a-z0-9-]{0,62}$",
    "must match ^[a-z0-9][a-z0-9-]{0,62}$"
);

string_newtype!(
    /// A content digest (`sha256:...`), the only way Conveyor ever refers to an image: the OCI
    /// grammar, bounded (an algorithm of at most 4 components of 1-32 characters, an encoded part
    /// of 32-128 characters: sha512's hex is 128), so a digest is at most 260 characters.
    ImageDigest,
    "image digest",
    r"^[a-z0-9]{1,32}(?:[.+_-][a-z0-9]{1,32}){0,3}:[a-zA-Z0-9=_-]{32,128}$",
    "must be an OCI digest such as sha256:<64 hex> (algorithm of at most 4 parts of 1-32 characters, 32-128 characters after ':')"
);

string_newtype!(
    /// An ECR image tag (ECR allows at most 300 of these characters).
    ImageTag,
    "image tag",
    r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,299}$",
    "must be 1-300 letters, digits, '_', '.', '-', not starting with '.' or '-'"
);

impl ImageDigest {
    /// The hex part, safe to use in an SSM parameter name.
    pub fn encoded(&self) -> &str {
        self.0.split_once(':').map_or(self.0.as_str(), |(_, hex)| hex)
    }

    /// A short form for humans (`sha256:0123456789ab`).
    pub fn short(&self) -> &str {
        let end = self.0.find(':').map_or(0, |i| i + 13).min(self.0.len());
        &self.0[..end]
    }
}

/// The name of one of an app's environments (`dev`, `stage`, `prod-eu`): `^[a-z][a-z0-9-]{0,30}$`
/// (contract, *Pipelines*). Held inline, so it is `Copy` like the enum it replaced, and it needs
/// no allocation to pass around.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Environment {
    len: u8,
    name: [u8; Environment::MAX_LEN],
}

impl Environment {
    /// The longest name.
    pub const MAX_LEN: usize = 31;
    /// The entry environment of a v2 config.
    pub const STAGE: Environment = Environment::known("stage");
    /// The environment a v2 config promotes to.
    pub const PROD: Environment = Environment::known("prod");

    const fn known(name: &str) -> Self {
        let bytes = name.as_bytes();
        let mut inline = [0u8; Environment::MAX_LEN];
        let mut i = 0;
        while i < bytes.len() {
            inline[i] = bytes[i];
            i += 1;
        }
        Environment { len: bytes.len() as u8, name: inline }
    }

    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        static PATTERN: LazyLock<Regex> = LazyLock::new(|| {
            #[allow(clippy::unwrap_used)] // a literal pattern, covered by tests
            Regex::new(r"^[a-z][a-z0-9-]{0,30}$").unwrap()
        });
        if PATTERN.is_match(value) {
            Ok(Environment::known(value))
        } else {
            Err(InvalidValue {
                what: "environment",
                value: value.chars().take(64).collect(),
                rule: "a-z, 0-9 and -, starting with a letter, at most 31 characters",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII goes in (`parse`, `known`).
        std::str::from_utf8(&self.name[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// By name (`dev` < `prod` < `qa`).
impl Ord for Environment {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Environment {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for Environment {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Environment::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// Who asked for a change (a promotion, a pause, a resume): the identity AWS verified for the
/// invocation, when there is one, and the name the request itself gave. The name is kept as
/// `on_behalf_of` and never taken for the verified identity: anyone allowed to invoke may write
/// any name there (contract, *Trust boundary*).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    pub verified: Option<String>,
    pub on_behalf_of: Option<String>,
}

impl Requester {
    /// The invocation's verified identity (if Lambda gives one), and the request's name.
    pub fn of(invocation: &crate::Invocation, on_behalf_of: Option<String>) -> Self {
        Requester { verified: invocation.identity.clone(), on_behalf_of }
    }
}

impl fmt::Display for Requester {
    /// `arn:...`, `arn:... on behalf of ana`, `ana (unverified)`, `an unidentified caller`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.verified, &self.on_behalf_of) {
            (Some(verified), Some(name)) => write!(f, "{verified} on behalf of {name}"),
            (Some(verified), None) => f.write_str(verified),
            (None, Some(name)) => write!(f, "{name} (unverified)"),
            (None, None) => f.write_str("an unidentified caller"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requester_says_what_was_verified_and_what_was_only_claimed() {
        let who = |verified: Option<&str>, name: Option<&str>| {
            Requester { verified: verified.map(str::to_owned), on_behalf_of: name.map(str::to_owned) }.to_string()
        };
        assert_eq!(who(Some("arn:aws:sts::1:assumed-role/dev/ana"), None), "arn:aws:sts::1:assumed-role/dev/ana");
        assert_eq!(who(Some("ana"), Some("bob")), "ana on behalf of bob");
        assert_eq!(who(None, Some("arn:aws:iam::1:user/admin")), "arn:aws:iam::1:user/admin (unverified)");
        assert_eq!(who(None, None), "an unidentified caller");
    }

    #[test]
    fn app_names_follow_the_contract() {
        assert!(AppName::parse("shop-api").is_ok());
        assert!(AppName::parse("a").is_ok());
        assert!(AppName::parse("a".repeat(63)).is_ok());
        for bad in ["", "-api", "Shop", "shop_api", "shop/api", &"a".repeat(64)] {
            assert!(AppName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn digests_are_oci_digests() {
        let digest = ImageDigest::parse(format!("sha256:{}", "ab".repeat(32))).unwrap();
        assert_eq!(digest.encoded(), "ab".repeat(32));
        assert_eq!(digest.short(), format!("sha256:{}", "ab".repeat(6)));
        for bad in ["", "sha256:", "latest", "sha256:xyz", "sha256:abc/def"] {
            assert!(ImageDigest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn digests_are_bounded() {
        for good in [
            format!("sha256:{}", "a".repeat(64)),
            format!("sha512:{}", "f".repeat(128)),
            format!("{}:{}", "a".repeat(32), "b".repeat(32)),
            format!("multihash+base58:{}", "Qm".repeat(23)),
        ] {
            assert!(ImageDigest::parse(&good).is_ok(), "{good:?} refused");
        }
        for bad in [
            format!("sha256:{}", "a".repeat(129)),
            format!("sha256:{}", "a".repeat(1 << 20)),
            format!("{}:{}", "a".repeat(33), "b".repeat(64)),
            format!("a.b.c.d.e:{}", "b".repeat(64)),
        ] {
            let error = ImageDigest::parse(&bad).unwrap_err();
            assert!(error.rule.contains("32-128"), "{error}");
        }
    }

    #[test]
    fn tags_follow_ecr_rules() {
        for good in ["v1.0.0", "latest", "0a1b2c3", "release_2024-01"] {
            assert!(ImageTag::parse(good).is_ok(), "{good:?} refused");
        }
        for bad in ["", ".hidden", "-x", "a b", "a/b"] {
            assert!(ImageTag::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn newtypes_deserialize_through_parse() {
        assert!(serde_json::from_str::<AppName>("\"Bad\"").is_err());
        assert_eq!(serde_json::from_str::<Environment>("\"prod\"").unwrap(), Environment::PROD);
        assert_eq!(serde_json::to_string(&Environment::parse("prod-eu").unwrap()).unwrap(), "\"prod-eu\"");
        for bad in ["", "Prod", "9x", "a_b", &"x".repeat(32)] {
            assert!(Environment::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Environment::parse(&"x".repeat(31)).unwrap().as_str().len(), 31);
    }
}
