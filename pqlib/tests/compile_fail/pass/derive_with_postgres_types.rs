// The `derive` feature as `pqlib::types` documents it: the macros through `pqlib::types`, with
// `postgres-types` as a direct dependency because the generated code names `::postgres_types`.
use pqlib::types::{FromSql, ToSql};

#[derive(Debug, ToSql, FromSql)]
#[postgres(name = "mood")]
enum Mood {
    #[postgres(name = "happy")]
    Happy,
}

fn main() {
    let _ = Mood::Happy;
}
