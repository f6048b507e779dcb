//! [`wire_codes!`]: one declaration per list of wire codes (frame kinds, error codes), from which
//! the enum, the list of every code, the lookup from the wire value and the stable name are all
//! generated, so adding a code is one line and the four can never disagree (quinn-proto keeps
//! its transport error codes and frame types the same way).

/// Declares a `#[repr($repr)]` enum of codes with (exported: the server keeps its own code
/// lists, ring operations and close reasons, the same way):
/// - `COUNT` and `ALL`: how many codes, and every code in declaration order;
/// - `$from(value) -> Option<Self>`: the code with that wire value;
/// - `name(self) -> &'static str`: a short, stable snake_case name (logs, metric labels).
#[macro_export]
macro_rules! wire_codes {
    (
        $(#[$enum_meta:meta])*
        pub enum $name:ident: $repr:ty, $from:ident {
            $( $(#[$meta:meta])* $variant:ident = $value:literal => $label:literal, )+
        }
    ) => {
        $(#[$enum_meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name {
            $( $(#[$meta])* $variant = $value, )+
        }

        #[allow(dead_code)]
        impl $name {
            /// How many codes there are.
            pub const COUNT: usize = [$( stringify!($variant) ),+].len();

            /// Every code, in declaration order.
            pub const ALL: [$name; Self::COUNT] = [ $( $name::$variant, )+ ];

            /// The code with wire value `value`, if there is one.
            pub fn $from(value: $repr) -> Option<$name> {
                match value {
                    $( $value => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// A short, stable, snake_case name (used in logs and metric labels).
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }
        }
    };
}
