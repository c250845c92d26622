#[derive(neo_db::Record)]
struct Order {
    id: uuid::Uuid,
    #[record(version)]
    version: i32,
}

fn main() {}
