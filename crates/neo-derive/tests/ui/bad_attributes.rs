#[derive(neo_db::Record)]
#[record(table = "Orders", shema = "billing")]
struct Order {
    #[record(key, skip)]
    id: uuid::Uuid,
    #[record(rename = "total cents")]
    total_cents: i64,
    #[record(version)]
    version: i32,
    #[record(primary)]
    note: String,
}

fn main() {}
