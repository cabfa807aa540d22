//! The Control Room 11.3 JSON shapes: camelCase fields, numeric ids, `tenantId: 1`, ISO 8601
//! UTC timestamps with milliseconds. Requests accept ids as numbers or numeric strings; unknown
//! fields are ignored; a wrong type or a missing field is a 400 that names the field.

use std::fmt;

use haechi_types::time::IsoMs;
use haechi_types::Error;
use haechi_vault as v;
use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// Every object belongs to the one tenant.
const TENANT: i64 = 1;

/// An id or version: a JSON number, or a string of digits (`"12"`), as the product's own
/// examples send both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id(pub i64);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number (or a string of digits)")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Id, E> {
                Ok(Id(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Id, E> {
                i64::try_from(n)
                    .map(Id)
                    .map_err(|_| E::custom("the number is too large"))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Id, E> {
                Err(E::custom(format_args!("expected a whole number, got {n}")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Id, E> {
                s.trim().parse::<i64>().map(Id).map_err(|_| {
                    E::custom(format_args!(
                        "expected a whole number, got the string {s:?}"
                    ))
                })
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

fn id_opt(v: Option<Id>) -> Option<i64> {
    v.map(|i| i.0)
}

// ---- responses --------------------------------------------------------------------------------

/// `{"list":[...]}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct List<T> {
    pub list: Vec<T>,
}

impl<T> List<T> {
    pub fn of(list: Vec<T>) -> Self {
        List { list }
    }
}

/// A credential attribute.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeOut {
    id: i64,
    created_by: i64,
    #[schema(value_type = String)]
    created_on: IsoMs,
    updated_by: i64,
    #[schema(value_type = String)]
    updated_on: IsoMs,
    tenant_id: i64,
    version: i64,
    name: String,
    description: Option<String>,
    user_provided: bool,
    masked: bool,
}

// The answers take the credential (moving its text, formatting its instants only as the JSON is
// written): a list answer is made of many of them.
impl From<v::Attribute> for AttributeOut {
    fn from(a: v::Attribute) -> Self {
        AttributeOut {
            id: a.id,
            created_by: a.stamp.created_by,
            created_on: IsoMs(a.stamp.created_at),
            updated_by: a.stamp.updated_by,
            updated_on: IsoMs(a.stamp.updated_at),
            tenant_id: TENANT,
            version: a.stamp.version,
            name: a.name,
            description: a.description,
            user_provided: a.user_provided,
            masked: a.masked,
        }
    }
}

/// A credential (never with values). `completed` appears in lists only.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialOut {
    id: i64,
    created_by: i64,
    #[schema(value_type = String)]
    created_on: IsoMs,
    updated_by: i64,
    #[schema(value_type = String)]
    updated_on: IsoMs,
    tenant_id: i64,
    version: i64,
    name: String,
    description: Option<String>,
    locker_id: Option<i64>,
    owner_id: i64,
    attributes: Vec<AttributeOut>,
    /// Every attribute has a value the caller can use.
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<bool>,
}

impl From<v::Credential> for CredentialOut {
    fn from(c: v::Credential) -> Self {
        CredentialOut {
            id: c.id,
            created_by: c.stamp.created_by,
            created_on: IsoMs(c.stamp.created_at),
            updated_by: c.stamp.updated_by,
            updated_on: IsoMs(c.stamp.updated_at),
            tenant_id: TENANT,
            version: c.stamp.version,
            name: c.name,
            description: c.description,
            locker_id: c.locker_id,
            owner_id: c.owner_id,
            attributes: c.attributes.into_iter().map(AttributeOut::from).collect(),
            completed: c.completed,
        }
    }
}

/// An attribute value, decrypted for a caller allowed to consume it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueOut {
    id: i64,
    created_by: i64,
    #[schema(value_type = String)]
    created_on: IsoMs,
    updated_by: i64,
    #[schema(value_type = String)]
    updated_on: IsoMs,
    tenant_id: i64,
    version: i64,
    /// The user of a `userProvided` value; null for a standard attribute's value.
    user_id: Option<i64>,
    value: String,
    credential_attribute_id: i64,
}

impl From<&v::Value> for ValueOut {
    fn from(x: &v::Value) -> Self {
        ValueOut {
            id: x.id,
            created_by: x.stamp.created_by,
            created_on: IsoMs(x.stamp.created_at),
            updated_by: x.stamp.updated_by,
            updated_on: IsoMs(x.stamp.updated_at),
            tenant_id: TENANT,
            version: x.stamp.version,
            user_id: x.user_id,
            value: x.value.expose_secret().to_owned(),
            credential_attribute_id: x.attribute_id,
        }
    }
}

/// A locker member.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MemberOut {
    /// The user's numeric id.
    id: i64,
    /// Some of `participate`, `own`, `manage`.
    permissions: Vec<&'static str>,
}

impl From<&v::Member> for MemberOut {
    fn from(m: &v::Member) -> Self {
        MemberOut {
            id: m.user_id,
            permissions: m.perms.names(),
        }
    }
}

/// A locker; `members` and `countOfCredentials` in `lockers/advanced` only.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockerOut {
    id: i64,
    name: String,
    description: Option<String>,
    created_by: i64,
    #[schema(value_type = String)]
    created_on: IsoMs,
    updated_by: i64,
    #[schema(value_type = String)]
    updated_on: IsoMs,
    tenant_id: i64,
    version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<Vec<MemberOut>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count_of_credentials: Option<i64>,
}

impl From<&v::Locker> for LockerOut {
    fn from(l: &v::Locker) -> Self {
        LockerOut {
            id: l.id,
            name: l.name.clone(),
            description: l.description.clone(),
            created_by: l.stamp.created_by,
            created_on: IsoMs(l.stamp.created_at),
            updated_by: l.stamp.updated_by,
            updated_on: IsoMs(l.stamp.updated_at),
            tenant_id: TENANT,
            version: l.stamp.version,
            members: l
                .members
                .as_ref()
                .map(|m| m.iter().map(MemberOut::from).collect()),
            count_of_credentials: l.count_of_credentials,
        }
    }
}

/// `{"id":N}`: a consumer role.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IdOut {
    pub id: i64,
}

/// `{"name":"Express"|"Manual"}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModeOut {
    pub name: &'static str,
}

/// `{"applied":bool}`: whether this server holds the master key.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AppliedOut {
    pub applied: bool,
}

// ---- requests ---------------------------------------------------------------------------------

/// `POST /credentials` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialIn {
    /// 1–50 characters, unique.
    name: String,
    /// At most 255 characters.
    description: Option<String>,
    /// At most 50, names unique within the credential.
    #[serde(default)]
    attributes: Vec<AttributeIn>,
}

/// An attribute of a new credential.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeIn {
    name: String,
    description: Option<String>,
    /// Default `true` (the product's default): each consuming user gives their own value.
    user_provided: Option<bool>,
    /// Default `false`.
    masked: Option<bool>,
}

impl From<CredentialIn> for v::NewCredential {
    fn from(c: CredentialIn) -> Self {
        v::NewCredential {
            name: c.name,
            description: c.description,
            attributes: c
                .attributes
                .into_iter()
                .map(|a| v::NewAttribute {
                    name: a.name,
                    description: a.description,
                    user_provided: a.user_provided.unwrap_or(true),
                    masked: a.masked.unwrap_or(false),
                })
                .collect(),
        }
    }
}

/// `PUT /credentials/{id}` body: send only what changes, with the `version` you read.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialUpdateIn {
    /// If given, must be the id in the path.
    #[schema(value_type = Option<i64>)]
    id: Option<Id>,
    /// The credential's current version.
    #[schema(value_type = i64)]
    version: Id,
    name: Option<String>,
    description: Option<String>,
    /// If given, must be the credential's current locker (lockers have their own routes).
    #[schema(value_type = Option<i64>)]
    locker_id: Option<Id>,
    /// A new owner (as `PUT /credentials/{id}/owner/{ownerId}`).
    #[schema(value_type = Option<i64>)]
    owner_id: Option<Id>,
    /// With `id`: changes that attribute; without: adds one. Attributes not listed stay.
    #[serde(default)]
    attributes: Vec<AttributeUpdateIn>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeUpdateIn {
    #[schema(value_type = Option<i64>)]
    id: Option<Id>,
    #[schema(value_type = Option<i64>)]
    version: Option<Id>,
    name: Option<String>,
    description: Option<String>,
    user_provided: Option<bool>,
    masked: Option<bool>,
}

impl CredentialUpdateIn {
    pub fn into_patch(self, path_id: i64) -> Result<v::CredentialPatch, Error> {
        if let Some(Id(id)) = self.id {
            if id != path_id {
                return Err(Error::field(
                    "id",
                    format_args!("is {id} but the path names credential {path_id}"),
                ));
            }
        }
        Ok(v::CredentialPatch {
            version: self.version.0,
            name: self.name,
            description: self.description,
            owner_id: id_opt(self.owner_id),
            locker_id: id_opt(self.locker_id),
            attributes: self
                .attributes
                .into_iter()
                .map(|a| v::AttributePatch {
                    id: id_opt(a.id),
                    version: id_opt(a.version),
                    name: a.name,
                    description: a.description,
                    user_provided: a.user_provided,
                    masked: a.masked,
                })
                .collect(),
        })
    }
}

/// One value to create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueIn {
    #[schema(value_type = i64)]
    credential_attribute_id: Id,
    /// At most 16 KiB.
    #[schema(value_type = String, format = Password)]
    value: SecretString,
}

impl From<ValueIn> for v::NewValue {
    fn from(x: ValueIn) -> Self {
        v::NewValue {
            attribute_id: x.credential_attribute_id.0,
            value: x.value,
        }
    }
}

/// One value to update.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueUpdateIn {
    /// If given, must be the id in the path.
    #[schema(value_type = Option<i64>)]
    id: Option<Id>,
    /// The value's current version.
    #[schema(value_type = i64)]
    version: Id,
    #[schema(value_type = String, format = Password)]
    value: SecretString,
    /// If given, must be the value's attribute.
    #[schema(value_type = Option<i64>)]
    credential_attribute_id: Option<Id>,
}

impl ValueUpdateIn {
    pub fn into_patch(self, path_id: i64, field: &str) -> Result<v::ValuePatch, Error> {
        if let Some(Id(id)) = self.id {
            if id != path_id {
                return Err(Error::field(
                    format!("{field}.id"),
                    format_args!("is {id} but the path names value {path_id}"),
                ));
            }
        }
        Ok(v::ValuePatch {
            version: self.version.0,
            attribute_id: id_opt(self.credential_attribute_id),
            value: self.value,
        })
    }
}

/// Attribute-value bodies come as the document's bare array `[{...}]`, as the wrapped form
/// `{"list":[{...}]}` the product also sends, or as one bare object. Returns the items and the
/// path prefix of each (`[0]`, `list[0]`) for error messages.
pub fn value_items<T: DeserializeOwned>(
    body: serde_json::Value,
) -> Result<Vec<(String, T)>, Error> {
    let (items, prefix) = match body {
        serde_json::Value::Array(a) => (a, ""),
        serde_json::Value::Object(mut o) if o.contains_key("list") => match o.remove("list") {
            Some(serde_json::Value::Array(a)) => (a, "list"),
            _ => return Err(Error::field("list", "must be an array of values")),
        },
        obj @ serde_json::Value::Object(_) => (vec![obj], ""),
        _ => {
            return Err(Error::invalid(
                "the body must be an array of values [{\"credentialAttributeId\":N,\"value\":\"...\"}] or {\"list\":[...]}",
            ))
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{prefix}[{i}]");
            let parsed =
                serde_path_to_error::deserialize::<_, T>(item).map_err(|e| item_error(&at, e))?;
            Ok((at, parsed))
        })
        .collect()
}

fn item_error(at: &str, e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let path = e.path().to_string();
    let inner = e.inner().to_string();
    if let Some(name) = inner
        .strip_prefix("missing field `")
        .and_then(|s| s.strip_suffix('`'))
    {
        let field = if path == "." {
            format!("{at}.{name}")
        } else {
            format!("{at}.{path}.{name}")
        };
        return Error::field(field, "is required");
    }
    let field = if path == "." {
        at.to_owned()
    } else {
        format!("{at}.{path}")
    };
    Error::field(field, inner)
}

/// `POST /lockers` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct LockerIn {
    name: String,
    description: Option<String>,
}

impl LockerIn {
    pub fn into_parts(self) -> (String, Option<String>) {
        (self.name, self.description)
    }
}

/// `PUT /lockers/{id}` body (the document's example spells the key `"name "`; accepted too).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct LockerUpdateIn {
    #[schema(value_type = Option<i64>)]
    id: Option<Id>,
    #[serde(alias = "name ")]
    name: Option<String>,
    description: Option<String>,
    #[schema(value_type = i64)]
    version: Id,
}

impl LockerUpdateIn {
    pub fn into_patch(self, path_id: i64) -> Result<v::LockerPatch, Error> {
        if let Some(Id(id)) = self.id {
            if id != path_id {
                return Err(Error::field(
                    "id",
                    format_args!("is {id} but the path names locker {path_id}"),
                ));
            }
        }
        Ok(v::LockerPatch {
            version: self.version.0,
            name: self.name,
            description: self.description,
        })
    }
}

/// `PUT /lockers/{id}/consumers` body: the role id.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ConsumerIn {
    #[schema(value_type = i64)]
    pub id: Id,
}

/// `PUT /lockers/{id}/members/{userId}` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct MemberIn {
    /// Some of `own`, `manage`, `participate`.
    permissions: Vec<String>,
}

impl MemberIn {
    pub fn perms(&self) -> Result<v::Perms, Error> {
        v::Perms::parse(&self.permissions).map_err(|(i, bad)| {
            Error::field(
                format!("permissions[{i}]"),
                format_args!(
                    "{bad:?} is not a locker permission (use 'own', 'manage', 'participate')"
                ),
            )
        })
    }
}

/// `PUT /mode` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ModeIn {
    /// `Express` or `Manual`.
    pub name: String,
    /// The current master key (base64). `privateKey` is accepted too.
    #[serde(alias = "privateKey")]
    #[schema(value_type = String, format = Password)]
    pub privatekey: SecretString,
}

/// `PUT /keys/private` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct KeyIn {
    /// The master key (base64 of 32 bytes). `privatekey` is accepted too.
    #[serde(rename = "privateKey", alias = "privatekey")]
    #[schema(value_type = String, format = Password)]
    pub private_key: SecretString,
}

/// `?consumed=true|false` (quotes as in the document's placeholder are tolerated).
pub fn parse_bool(field: &str, raw: Option<&str>) -> Result<Option<bool>, Error> {
    let Some(raw) = raw else { return Ok(None) };
    let s = raw.trim().trim_matches('"');
    if s.is_empty() {
        Ok(None)
    } else if s.eq_ignore_ascii_case("true") {
        Ok(Some(true))
    } else if s.eq_ignore_ascii_case("false") {
        Ok(Some(false))
    } else {
        Err(Error::field(
            field,
            format_args!("must be true or false (got {raw:?})"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_accept_numbers_and_numeric_strings() {
        assert_eq!(serde_json::from_value::<Id>(json!(12)).unwrap(), Id(12));
        assert_eq!(serde_json::from_value::<Id>(json!("12")).unwrap(), Id(12));
        assert!(serde_json::from_value::<Id>(json!("twelve")).is_err());
        assert!(serde_json::from_value::<Id>(json!(1.5)).is_err());
        assert!(serde_json::from_value::<Id>(json!(true)).is_err());
        assert!(serde_json::from_value::<Id>(json!(u64::MAX)).is_err());
    }

    #[test]
    fn value_bodies_in_every_form_with_field_paths() {
        let bare: Vec<(String, ValueIn)> =
            value_items(json!([{"credentialAttributeId": "30", "value": "Jane.Smith"}])).unwrap();
        assert_eq!(bare[0].0, "[0]");
        assert_eq!(bare[0].1.credential_attribute_id, Id(30));
        let wrapped: Vec<(String, ValueIn)> =
            value_items(json!({"list": [{"credentialAttributeId": 30, "value": "x"}]})).unwrap();
        assert_eq!(wrapped[0].0, "list[0]");
        let single: Vec<(String, ValueIn)> =
            value_items(json!({"credentialAttributeId": 30, "value": "x"})).unwrap();
        assert_eq!(single.len(), 1);
        let e = value_items::<ValueIn>(json!([{"credentialAttributeId": 30}]))
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("[0].value"));
        let e =
            value_items::<ValueIn>(json!({"list": [{"value": "x", "credentialAttributeId": "x"}]}))
                .err()
                .unwrap();
        assert_eq!(e.field.as_deref(), Some("list[0].credentialAttributeId"));
        let e = value_items::<ValueIn>(json!([{"credentialAttributeId": 1, "value": 5}]))
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("[0].value"));
        assert!(value_items::<ValueIn>(json!("nope")).is_err());
        assert!(value_items::<ValueIn>(json!({"list": 3})).is_err());
    }

    #[test]
    fn consumed_flag() {
        assert_eq!(
            parse_bool("consumed", Some("\"true\"")).unwrap(),
            Some(true)
        );
        assert_eq!(parse_bool("consumed", Some("FALSE")).unwrap(), Some(false));
        assert_eq!(parse_bool("consumed", None).unwrap(), None);
        assert!(parse_bool("consumed", Some("yes")).is_err());
    }
}
