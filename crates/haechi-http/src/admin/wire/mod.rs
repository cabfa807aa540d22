//! The admin API's JSON shapes, made from the engines' domain types. The engines know nothing
//! of field casing or the OpenAPI document: each answer and request body here mirrors one
//! domain type (same component name in `docs/openapi.json`) and converts from or into it.

pub mod audit;
pub mod db;
pub mod exec;
pub mod identity;
pub mod workflow;

/// Declares a wire mirror of a fieldless domain enum: the same variants, serialized under the
/// names given, and `From` both ways (a match, so a new domain variant fails to compile here
/// until the wire names it).
macro_rules! mirror_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident mirrors $dom:ty {
            $($(#[$vmeta:meta])* $variant:ident),+ $(,)?
        }
    ) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        $(#[$meta])*
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl From<$dom> for $name {
            fn from(x: $dom) -> Self {
                type D = $dom;
                match x {
                    $(D::$variant => $name::$variant),+
                }
            }
        }

        impl From<$name> for $dom {
            fn from(x: $name) -> Self {
                type D = $dom;
                match x {
                    $($name::$variant => D::$variant),+
                }
            }
        }
    };
}
pub(crate) use mirror_enum;

/// Converts each item of a slice into its wire shape.
pub fn all<'a, D: 'a, W: From<&'a D>>(items: &'a [D]) -> Vec<W> {
    items.iter().map(W::from).collect()
}
